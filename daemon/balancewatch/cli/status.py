"""The `status` command: what each daemon instance runs, and how its last reload went.

Reads the ``instance_status`` rows the daemons write (at start, after every
reload attempt, and every few seconds as a heartbeat), so it works from any
machine that reaches the database, and the outbox's pending and parked mail.
An instance that shut down shows as stopped at once; one whose heartbeat
stopped shows as stale; one silent for a week is forgotten by the others.

Exit status: 0 when at least one instance is running (not stopped, heartbeat
fresh) and its last reload went well (or none was attempted since it
started); 1 otherwise, with the reason on stderr.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from balancewatch.cli.common import CommandError, Ctx
from balancewatch.store import status as instance_status

STALE_POLLS = 3  # heartbeats missed before an instance counts as gone
MIN_STALE = timedelta(seconds=15)  # a short poll interval must not make a busy instance look dead


def register(commands: Any) -> None:
    """Add this module's commands to the parser."""
    status = commands.add_parser(
        "status",
        help="what each running daemon has loaded, and how its last reload went",
        description="One block per daemon instance that ever reported to this database: "
        "when it started, its last heartbeat (stale after "
        f"{STALE_POLLS} poll intervals), the rule set it runs and its last reload attempt. "
        "Exit 0 when at least one instance is fresh and its last reload went well, 1 otherwise.",
    )
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.set_defaults(handler=cmd_status)


@dataclass(frozen=True)
class Verdict:
    """Whether some instance is serving with its last reload applied, and if not, why."""

    ok: bool
    reason: str


def stale_after(poll_interval: timedelta) -> timedelta:
    """How old a heartbeat may be before its instance counts as stale."""
    return max(STALE_POLLS * poll_interval, MIN_STALE)


def is_stale(row: Any, now: datetime, limit: timedelta) -> bool:
    return bool(now - row.heartbeat_at > limit)


def state(row: Any, now: datetime, limit: timedelta) -> str:
    """``running``, ``stopped`` (it shut down) or ``stale`` (it went silent: killed, or unreachable)."""
    if row.stopped_at is not None:
        return "stopped"
    return "stale" if is_stale(row, now, limit) else "running"


def verdict(rows: Sequence[Any], now: datetime, limit: timedelta) -> Verdict:
    """Judge the rows (most recent heartbeat first) as of ``now``."""
    if not rows:
        return Verdict(False, "no instance has reported to this database (is `balancewatch run` running?)")
    fresh = [r for r in rows if state(r, now, limit) == "running"]
    if not fresh:
        newest = rows[0]
        if newest.stopped_at is not None:
            return Verdict(
                False,
                f"no instance is running: the latest, {newest.instance}, stopped "
                f"{ago(now - newest.stopped_at)} ago",
            )
        return Verdict(
            False,
            f"no instance has a fresh heartbeat: the latest, {newest.instance}, "
            f"reported {ago(now - newest.heartbeat_at)} ago (stale after {ago(limit)})",
        )
    healthy = [r for r in fresh if r.reload_ok is not False]
    if not healthy:
        failed = fresh[0]
        first = (failed.reload_error or "").splitlines()[:1]
        return Verdict(
            False,
            f"the last reload of every running instance was refused; {failed.instance}: "
            + (first[0] if first else "no error recorded"),
        )
    names = ", ".join(r.instance for r in healthy)
    return Verdict(True, f"{len(healthy)} instance{'s' if len(healthy) != 1 else ''} serving: {names}")


def cmd_status(ctx: Ctx) -> int:
    now = ctx.now()
    limit = stale_after(ctx.settings.poll_interval)
    with ctx.read_engine.connect() as conn:
        rows = instance_status.read_all(conn)
        mail = instance_status.mail_counts(conn)
    result = verdict(rows, now, limit)
    if ctx.args.json:
        ctx.emit_json(
            {
                "ok": result.ok,
                "reason": result.reason,
                "stale_after_seconds": limit.total_seconds(),
                "mail": {
                    "pending": mail.pending,
                    "parked": mail.parked,
                    "oldest_pending_at": iso(mail.oldest_pending),
                },
                "instances": [as_json(r, now, limit) for r in rows],
            }
        )
    else:
        ctx.say("\n\n".join(describe(r, now, limit) for r in rows) or "no instances")
        ctx.say(f"\n{describe_mail(mail, now)}")
        if result.ok:
            ctx.say(f"\nok: {result.reason}")
    if not result.ok:
        raise CommandError(result.reason)
    return 0


def describe_mail(mail: instance_status.MailCounts, now: datetime) -> str:
    """The outbox in one line: what waits, since when, and what needs a person."""
    oldest = f" (oldest decided {ago(now - mail.oldest_pending)} ago)" if mail.oldest_pending else ""
    parked = "; see `balancewatch outbox list --status parked`" if mail.parked else ""
    return f"mail: {mail.pending} pending{oldest}, {mail.parked} parked{parked}"


def describe(row: Any, now: datetime, limit: timedelta) -> str:
    """One instance as an indented block of labelled lines."""
    current = state(row, now, limit)
    if current == "stopped":
        up = f"ran {ago(row.stopped_at - row.started_at)}, stopped {ago(now - row.stopped_at)} ago"
    elif current == "stale":
        up = f"started {ago(now - row.started_at)} ago"
    else:
        up = f"up {ago(now - row.started_at)}"
    lines = [
        f"{row.instance}  {current.upper()}",
        f"  version         {row.version or 'unknown'}",
        f"  up since        {when(row.started_at)} ({up})",
        f"  last heartbeat  {when(row.heartbeat_at)} ({ago(now - row.heartbeat_at)} ago)"
        + ("  STALE" if current == "stale" else ""),
        f"  last poll       {_since(row.last_poll_at, now)}",
        f"  live set        {row.live_digest[:12] or '-'}, {row.live_rules} rules"
        + (f", loaded {when(row.live_loaded_at)}" if row.live_loaded_at else ""),
    ]
    if row.reload_attempted_at is None:
        lines.append("  last reload     none since start")
    else:
        outcome = "ok" if row.reload_ok else "REFUSED, the live set above stays"
        lines.append(f"  last reload     {when(row.reload_attempted_at)}: {outcome} ({row.reload_reason})")
        lines.extend(f"                  {line}" for line in (row.reload_error or "").splitlines())
    lines.append(f"  reloads         {row.reloads} since start")
    return "\n".join(lines)


def _since(at: datetime | None, now: datetime) -> str:
    return f"{when(at)} ({ago(now - at)} ago)" if at is not None else "none yet"


def as_json(row: Any, now: datetime, limit: timedelta) -> dict[str, Any]:
    return {
        "instance": row.instance,
        "state": state(row, now, limit),
        "version": row.version,
        "started_at": iso(row.started_at),
        "uptime_seconds": None if row.stopped_at is not None else int((now - row.started_at).total_seconds()),
        "heartbeat_at": iso(row.heartbeat_at),
        "stale": is_stale(row, now, limit),
        "stopped_at": iso(row.stopped_at),
        "last_poll_at": iso(row.last_poll_at),
        "live_digest": row.live_digest,
        "live_rules": row.live_rules,
        "live_loaded_at": iso(row.live_loaded_at),
        "rule_files": sorted(row.rule_files or {}),
        "reload_attempted_at": iso(row.reload_attempted_at),
        "reload_ok": row.reload_ok,
        "reload_reason": row.reload_reason,
        "reload_error": row.reload_error,
        "reloads": row.reloads,
    }


def when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def ago(delta: timedelta) -> str:
    """A rough, readable length of time: ``4s``, ``5m 10s``, ``2h 5m``, ``3d 2h``."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // sub_size
            return f"{seconds // size}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{seconds}s"
