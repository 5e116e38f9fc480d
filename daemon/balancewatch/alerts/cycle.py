"""One evaluation cycle: candidates -> decisions -> rendered messages -> outbox.

Each chunk of balances is decided in one transaction: the new step states
and the outbox rows commit together or not at all. If another instance
decided the same thing first, the unique idempotency key refuses the insert;
the chunk is rolled back and decided again from the state now committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from balancewatch.alerts.chunk import CycleStats, Deciding, decide_in
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, PollKind, Recorder
from balancewatch.evaluate import candidates, usage_delta
from balancewatch.liveset import LiveSet
from balancewatch.rules.compiled import CompiledRule, StepSet
from balancewatch.store.db import get_meta, set_meta

log = logging.getLogger(__name__)

CHUNK = 500
ATTEMPTS = 3
WATERMARK = "poll_watermark"
USAGE_REFRESHED = "usage_refreshed"


def poll(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    now: datetime,
    *,
    full: bool = False,
    stopping: threading.Event | None = None,
    metrics: Recorder = NOOP,
    progressed: Callable[[], None] | None = None,
) -> CycleStats:
    """Evaluate balances changed since the last poll (minus the overlap), or all of them.

    The first poll ever is a full sweep. The watermark moves to ``now`` only
    after every chunk has committed; a cycle interrupted by ``stopping`` leaves
    it where it was, so the next cycle looks at the same changes again.
    ``metrics`` gets what was looked at and decided as each chunk commits, and the
    cycle's duration (``poll_finished``: not ok when it raised or was interrupted).
    ``progressed`` is called as each query and chunk ends: a long sweep that moves on is
    not stuck (the systemd watchdog).
    """
    started = time.monotonic()
    kind: PollKind = "sweep" if full else "poll"
    ok = False
    try:
        since = _start(engine, live, settings, now, full)
        kind = "poll" if since is not None else "sweep"
        stats = evaluate(engine, Deciding(live, settings, now, metrics), since, stopping, progressed)
        if stats.interrupted:
            return stats
        with engine.begin() as conn:
            # An upsert: instances starting together on a fresh database may both find no watermark.
            set_meta(conn, WATERMARK, now.isoformat(), now)
        ok = True
        return stats
    finally:
        metrics.poll_finished(kind, time.monotonic() - started, ok)


def _start(engine: Engine, live: LiveSet, settings: Settings, now: datetime, full: bool) -> datetime | None:
    """Where a cycle starts: the watermark minus the overlap, or None for a full sweep (asked for,
    the first poll ever, or the usage summary refreshed now)."""
    with Session(engine) as session:
        stored = get_meta(session, WATERMARK)
        refreshed = get_meta(session, USAGE_REFRESHED)
    windows = usage_windows(live, settings)
    if _usage_due(refreshed, windows, now, settings):
        # Thresholds that follow usage may have moved for balances that did not:
        # a fresh summary is always followed by a full sweep.
        refreshed_usage = usage_delta.catch_up(
            engine, now, windows, settings.usage.min_history, settings.usage.full_refresh
        )
        log.debug("usage: %s", refreshed_usage)
        with engine.begin() as conn:
            set_meta(
                conn, USAGE_REFRESHED, json.dumps({"at": now.isoformat(), "windows": sorted(windows)}), now
            )
        full = True
    return None if full or stored is None else datetime.fromisoformat(stored) - settings.poll_overlap


def usage_windows(live: LiveSet, settings: Settings) -> set[int]:
    """The ADU windows the rules and emails need, in days."""
    return {settings.usage.window_days} | {
        u.window_days for rule in live.rules for step_set in rule.step_sets for u in step_set.usage
    }


def _usage_due(stored: str | None, windows: set[int], now: datetime, settings: Settings) -> bool:
    if stored is None:
        return True
    last = json.loads(stored)
    return (
        set(last.get("windows", [])) != windows
        or now - datetime.fromisoformat(last["at"]) >= settings.usage.refresh
        or now < datetime.fromisoformat(last["at"])
    )


def evaluate(
    engine: Engine,
    deciding: Deciding,
    since: datetime | None,
    stopping: threading.Event | None = None,
    progressed: Callable[[], None] | None = None,
) -> CycleStats:
    """Run every enabled rule of ``deciding.live`` over the balances changed after ``since``.

    Stops between chunks (each one committed) once ``stopping`` is set; calls ``progressed``
    after each query for candidates and each chunk decided.
    """
    moved_on = progressed or (lambda: None)
    stats = CycleStats(full=since is None)
    for rule in deciding.live.rules:
        if not rule.enabled:
            continue
        for step_set in rule.step_sets:
            with engine.connect().execution_options(readonly=True) as conn:
                keys = candidates.find(conn, rule, step_set, deciding.now, since)
            stats.candidates += len(keys)
            deciding.metrics.balances_evaluated(len(keys))
            moved_on()
            for chunk in candidates.chunks(keys, CHUNK):
                if stopping is not None and stopping.is_set():
                    stats.interrupted = True
                    return stats
                _decide_chunk(engine, deciding, rule, step_set, chunk, stats)
                moved_on()
    return stats


def _decide_chunk(
    engine: Engine,
    deciding: Deciding,
    rule: CompiledRule,
    step_set: StepSet,
    keys: list[candidates.Key],
    stats: CycleStats,
) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        local = CycleStats()
        try:
            with engine.begin() as conn:
                decide_in(conn, deciding, rule, step_set, keys, local)
        except IntegrityError as exc:
            if attempt == ATTEMPTS:
                _isolate(engine, deciding, rule, step_set, keys, stats, exc)
                return
            log.info(
                "rule %s: chunk decided elsewhere (%s); deciding again",
                rule.id,
                type(exc).__name__,
                extra={"rule": rule.id},
            )
            continue
        except OperationalError as exc:
            if attempt == ATTEMPTS:
                raise
            log.info(
                "rule %s: database busy (%s); deciding the chunk again",
                rule.id,
                type(exc).__name__,
                extra={"rule": rule.id},
            )
            continue
        stats.decided.update(local.decided)
        stats.kinds.update(local.kinds)
        stats.inhibited.update(local.inhibited)
        stats.topups.update(local.topups)
        stats.render_errors.extend(local.render_errors)
        _count(deciding.metrics, local)
        return


def _count(metrics: Recorder, committed: CycleStats) -> None:
    """Count what a chunk committed (a chunk rolled back and decided again is counted once)."""
    for (rule_id, kind), n in committed.kinds.items():
        metrics.notification_decided(rule_id, kind, n)
    created = sum(committed.topups.values())
    if created:
        metrics.topup_request("created", created)


def _isolate(
    engine: Engine,
    deciding: Deciding,
    rule: CompiledRule,
    step_set: StepSet,
    keys: list[candidates.Key],
    stats: CycleStats,
    exc: IntegrityError,
) -> None:
    # Only hand-edited state gets here (a notification decided before, its state
    # since deleted): decide balance by balance and skip just the ones that clash,
    # rather than stall the rest of the chunk and every rule after it.
    if len(keys) > 1:
        for key in keys:
            _decide_chunk(engine, deciding, rule, step_set, [key], stats)
        return
    log.error(
        "rule %s, account %s %s: skipped; a notification it would send was decided before but its "
        "alert state is missing (was alert_state edited by hand?): %s",
        rule.id,
        keys[0][0],
        keys[0][1],
        exc.orig,
        extra={"rule": rule.id, "account": keys[0][0]},
    )
    stats.skipped += 1
