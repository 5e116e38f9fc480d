"""What people and systemd see of a running daemon: the ``STATUS=`` line, the readiness
answer of ``/-/ready``, the instance's row in ``instance_status``, and which settings a
SIGHUP found changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from balancewatch import __version__
from balancewatch.alerts.cycle import CycleStats
from balancewatch.config import Settings
from balancewatch.core import procinfo
from balancewatch.core.metrics import Readiness
from balancewatch.core.problems import ProblemsError
from balancewatch.liveset import LiveSet
from balancewatch.runtime.reload import ReloadStatus
from balancewatch.store import status as instance_status

# The daemon's logger: its lines keep the name they had when this lived in service.py.
log = logging.getLogger("balancewatch.runtime.service")

REASON_MAX = 400  # instance_status.reload_reason
STALLED_POLLS = 3  # poll intervals without a poll ending before /-/ready says no

LastPoll = tuple[datetime, CycleStats | None]


def readiness(
    now: datetime,
    started_at: datetime,
    beating_since: datetime | None,
    last_poll: LastPoll | None,
    poll_interval: timedelta,
) -> Readiness:
    """Ready while the database answers and polls end in time (a rule set is always loaded:
    the daemon does not start without one, and a refused reload keeps the previous one)."""
    if beating_since is None:
        return Readiness(False, "the database is unreachable (the last heartbeat failed)")
    if last_poll is None:
        waited = int((now - started_at).total_seconds())
        return Readiness(False, f"the first poll has not ended yet (started {waited}s ago)")
    at, stats = last_poll
    if now - at > poll_interval * STALLED_POLLS:
        return Readiness(False, f"no poll has ended for {int((now - at).total_seconds())}s")
    if stats is None:
        return Readiness(False, "the last poll failed (see the log)")
    return Readiness(True)


def reload_values(status: ReloadStatus) -> dict[str, Any]:
    """The status columns describing the last reload attempt."""
    return {
        "reload_attempted_at": status.attempted_at,
        "reload_ok": status.ok,
        "reload_reason": status.reason[:REASON_MAX],
        "reload_error": status.error or None,
        "reloads": status.reloads,
    }


def whole_row(
    started_at: datetime,
    now: datetime,
    reload: ReloadStatus,
    live: LiveSet,
    last_poll: LastPoll | None,
) -> dict[str, Any]:
    """Every column of this instance's status row, as it stands at ``now``."""
    return {
        "started_at": started_at,
        "heartbeat_at": now,
        **live_values(live),
        # A previous run's row (a fixed instance name) is overwritten whole: its reloads are not ours.
        **reload_values(reload),
        "stopped_at": None,
        "process": procinfo.identity() or None,
        "version": __version__,
        "last_poll_at": last_poll[0] if last_poll is not None else None,
    }


def status_text(
    last_poll: LastPoll | None,
    mail: instance_status.MailCounts | None,
    reload: ReloadStatus,
    rules: int,
) -> str:
    """One line for ``STATUS=``: e.g. ``last poll 12:00:05 UTC: 40 balances, 2 decided; 3 mail
    pending, 1 parked; 14 rules, last reload ok``. Parts not known yet are left out."""
    parts = []
    if last_poll is not None:
        at, stats = last_poll
        found = (
            f"{stats.candidates} balances, {stats.notifications} decided" if stats is not None else "FAILED"
        )
        parts.append(
            f"last {'sweep' if stats is not None and stats.full else 'poll'} "
            f"{at.strftime('%H:%M:%S')} UTC: {found}"
        )
    else:
        parts.append("first poll running")
    if mail is not None:
        parts.append(f"{mail.pending} mail pending, {mail.parked} parked")
    outcome = {None: "no reload yet", True: "last reload ok", False: "LAST RELOAD REFUSED"}[reload.ok]
    parts.append(f"{rules} rules, {outcome}")
    return "; ".join(parts)


def live_values(live: LiveSet) -> dict[str, Any]:
    """The status columns describing ``live``: what ``status`` shows and ``plan`` compares with."""
    return {
        "live_digest": live.digest,
        "live_rules": len(live.rules),
        "live_loaded_at": live.loaded_at,
        "rule_files": {f.path.name: f.text for f in live.rule_sources},
    }


def changed_settings(running: Settings, new: Settings) -> list[str]:
    """The dotted keys (as written in config.yaml) whose values differ, sorted.

    Secrets are compared, never shown: only the key is returned.
    """
    before, after = _flatten(running.model_dump(by_alias=True)), _flatten(new.model_dump(by_alias=True))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def report_config_changes(running: Settings, load_config: Callable[[], Settings]) -> list[str]:
    """Read the configuration again with ``load_config``; log each key that changed as needing
    a restart (a config with problems is logged and changes nothing). Returns the keys."""
    try:
        new = load_config()
    except ProblemsError as exc:
        for problem in exc.problems:
            log.error("config: %s", problem)
        log.error("the config has problems: the running settings stay (a restart would fail)")
        return []
    changed = changed_settings(running, new)
    for key in changed:
        log.warning("%s changed: needs a restart to take effect", key)
    return changed


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
