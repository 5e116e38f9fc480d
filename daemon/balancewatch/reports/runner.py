"""Sending reports: on schedule (``run_due``) and on demand (``run_now``), once per (report,
account, period).

For each report and zone with a fire time due (``schedule``), the zone's
accounts are read in batches of ``reports.batch_size``. Each batch is
claimed first (``claims``: a unique row per report, account and period,
committed before anything is built), then built with grouped SQL over the
whole batch (``contents.build``), rendered (``compose``), and written: the
outbox rows and the claims' outcomes in one transaction, under outbox keys
derived from the claims. Another instance, or this one after a restart,
finds the claims and does not build those reports again.

A fire time is finished once every claim of its period in its zone is
final; until then it stays begun, and the next run goes over the zone again
(taking over the claims of an instance that died, once their lease has
passed). A stop request ends a run between batches.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.core.durations import format_duration
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.evaluate.candidates import A
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import TemplateSuspendedError
from balancewatch.reports import accounts as accts
from balancewatch.reports import claims, compose, contents, schedule
from balancewatch.reports.base import AccountInfo, Period
from balancewatch.reports.periods import LAST, PeriodError, parse_period, report_period
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.platform_data import account_timezone

log = logging.getLogger(__name__)

NOT_BUILT = "the contents gave no report for this account"
DECIDED = "in the outbox already"


@dataclass
class ReportStats:
    """What one run did, per report id."""

    sent: Counter[str] = field(default_factory=Counter)  # messages written to the outbox
    skipped: Counter[str] = field(default_factory=Counter)  # empty periods, no recipient
    failed: Counter[str] = field(default_factory=Counter)  # template, CSV or contents errors
    missed: Counter[str] = field(default_factory=Counter)  # fire times beyond the grace, not sent
    coalesced: Counter[str] = field(default_factory=Counter)  # fire times folded into a later one
    fired: list[tuple[str, str, datetime]] = field(default_factory=list)  # (report, zone, fire time) begun
    interrupted: bool = False

    @property
    def messages(self) -> int:
        return sum(self.sent.values())


@dataclass(frozen=True)
class Env:
    """What sending needs besides the report: the database, the live set, settings, the clock,
    where to count claims won and messages written."""

    engine: Engine
    live: LiveSet
    settings: Settings
    now: datetime
    worker: str
    stopping: threading.Event | None = None
    metrics: Recorder = NOOP

    @property
    def stop_requested(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()


# --- on schedule --------------------------------------------------------------------------------


def run_due(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    now: datetime,
    worker: str,
    *,
    stopping: threading.Event | None = None,
    zones: accts.ZoneCache | None = None,
    metrics: Recorder = NOOP,
) -> ReportStats:
    """Send every report of ``live`` whose fire time is due at ``now``, in every zone it is sent in.

    A (report, zone) that fails is logged and left for the next run; the
    others go on. Returns early, with ``interrupted``, once ``stopping`` is set.
    ``metrics`` counts the claims won and the messages written, per report.
    """
    env = Env(engine, live, settings, now, worker, stopping, metrics)
    zones = zones if zones is not None else accts.ZoneCache()
    stats = ReportStats()
    for report in live.reports:
        if env.stop_requested:
            stats.interrupted = True
            break
        try:
            if not report.enabled:
                with engine.begin() as conn:
                    schedule.idle(conn, report.id, now)
                continue
            with engine.connect().execution_options(readonly=True) as conn:
                found = zones.get(conn, report, settings, now)
                known = {c.zone: c for c in schedule.cursors(conn, report.id)}
            for zone in found.zones:
                _follow(env, report, zone, found, known.get(zone), stats)
                if stats.interrupted:
                    return stats
        except TemplateSuspendedError as exc:
            log.warning("report %s waits for its template: %s; trying again at the next run", report.id, exc)
        except Exception:
            # The cursor has not moved past what failed: the next run tries it again.
            log.exception("report %s failed; trying again at the next run", report.id)
    return stats


def _follow(
    env: Env,
    report: CompiledReport,
    zone: str,
    zones: accts.Zones,
    cursor: schedule.Cursor | None,
    stats: ReportStats,
) -> None:
    """Finish the fire time begun in ``zone``, if any, then send the one due now, if any.

    ``cursor`` is the zone's cursor as last read (None: read it, or start it).
    Every minute most zones have nothing due: they are only read.
    """
    grace = env.settings.reports.misfire_grace
    for _ in range(4):  # each turn either returns or sees a cursor another instance moved
        if cursor is None:
            cursor = _cursor(env, report.id, zone)
        if cursor.pending_fire is not None:
            if not _send_fire(env, report, zone, zones, cursor.pending_fire, stats):
                return
            with env.engine.begin() as conn:
                schedule.finish(conn, report.id, zone, cursor.pending_fire, env.now)
            cursor = None
            continue
        plan = schedule.due(report.cron, zone, cursor.processed_until, env.now, grace)
        if plan.fire is None and not plan.missed and env.now - cursor.processed_until < grace:
            return  # moved on at most once per grace: a changed schedule looks back no further
        with env.engine.begin() as conn:
            if not schedule.begin(conn, cursor, env.now, plan.fire):
                cursor = None
                continue
        _log_plan(report, zone, plan, grace, stats)
        if plan.fire is not None:
            stats.fired.append((report.id, zone, plan.fire))
            if _send_fire(env, report, zone, zones, plan.fire, stats):
                with env.engine.begin() as conn:
                    schedule.finish(conn, report.id, zone, plan.fire, env.now)
        return


def _cursor(env: Env, report_id: str, zone: str) -> schedule.Cursor:
    with env.engine.connect().execution_options(readonly=True) as conn:
        found = schedule.read_cursor(conn, report_id, zone)
    if found is not None:
        return found
    with env.engine.begin() as conn:
        return schedule.start_cursor(conn, report_id, zone, env.now, env.settings.reports.misfire_grace)


def _log_plan(
    report: CompiledReport, zone: str, plan: schedule.Due, grace: timedelta, stats: ReportStats
) -> None:
    if plan.missed:
        first, last = _local(plan.missed[0], zone), _local(plan.missed[-1], zone)
        if len(plan.missed) == 1:
            which = f"send time {first} missed"
        else:
            more = " or more" if plan.more_missed else ""
            which = f"{len(plan.missed)}{more} send times missed, {first} to {last}"
        log.warning(
            "report %s (%s): %s: more than reports.misfire_grace (%s) ago, not sent; "
            "`balancewatch report run %s --period ...` sends a period by hand",
            report.id,
            zone,
            which,
            format_duration(grace),
            report.id,
        )
        stats.missed[report.id] += len(plan.missed)
    if plan.coalesced:
        log.info(
            "report %s (%s): %d earlier send time%s since %s coalesced into %s",
            report.id,
            zone,
            len(plan.coalesced),
            "" if len(plan.coalesced) == 1 else "s",
            _local(plan.coalesced[0], zone),
            _local(plan.fire, zone) if plan.fire else "-",
        )
        stats.coalesced[report.id] += len(plan.coalesced)


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _send_fire(
    env: Env, report: CompiledReport, zone: str, zones: accts.Zones, fire: datetime, stats: ReportStats
) -> bool:
    """Send ``report`` for the period ``fire`` reports on, in ``zone``; True once every claim of that
    period in the zone is final (False: stopped, or claims still held by others)."""
    period = report_period(report.period, fire, zone)
    if report.contents == "low-balance":
        _send_operators(env, report, period, fire, stats)
    else:
        conditions = accts.in_zone(report, zone, zones, env.settings)
        size = env.settings.reports.batch_size
        for batch in accts.batches(env.engine, report, conditions, env.settings, size):
            if env.stop_requested:
                stats.interrupted = True
                return False
            _send_batch(env, report, period, fire, batch, stats)
    with env.engine.connect().execution_options(readonly=True) as conn:
        left = claims.unfinished(conn, report.id, period.key, zone)
    if left:
        log.info("report %s (%s, %s): %d still being built elsewhere", report.id, zone, period.key, left)
    return left == 0


def _send_batch(
    env: Env,
    report: CompiledReport,
    period: Period,
    fire: datetime,
    batch: Sequence[AccountInfo],
    stats: ReportStats,
    *,
    retry_failed: bool = False,
    done: list[compose.Prepared] | None = None,
) -> None:
    """Claim, build, render and record the reports of ``batch``; what was recorded goes to ``done``."""
    lease = env.settings.reports.lease
    with env.engine.begin() as conn:
        ours = claims.claim(
            conn,
            report.id,
            [a.id for a in batch],
            period,
            fire,
            env.worker,
            env.now,
            lease,
            retry_failed=retry_failed,
        )
    if not ours:
        return
    env.metrics.report_claimed(report.id, len(ours))
    claimed = [a for a in batch if a.id in ours]
    try:
        prepared = _build(env, report, period, claimed)
    except TemplateSuspendedError:
        with env.engine.begin() as conn:
            claims.expire(conn, report.id, period.key, sorted(ours), env.worker, env.now)
        raise
    _record(env, report, period, prepared, stats, done)


def _send_operators(
    env: Env,
    report: CompiledReport,
    period: Period,
    fire: datetime,
    stats: ReportStats,
    *,
    retry_failed: bool = False,
    done: list[compose.Prepared] | None = None,
) -> None:
    """An operators' report: one claim, one message, built over every account the report selects."""
    with env.engine.begin() as conn:
        ours = claims.claim(
            conn,
            report.id,
            [claims.OPERATORS],
            period,
            fire,
            env.worker,
            env.now,
            env.settings.reports.lease,
            retry_failed=retry_failed,
        )
    if ours:
        env.metrics.report_claimed(report.id, len(ours))
        # The operators' report covers every balance the selector matches; contents reads them itself.
        prepared = _build(env, report, period, [], operators=True)
        _record(env, report, period, prepared, stats, done)


def _build(
    env: Env,
    report: CompiledReport,
    period: Period,
    accounts: Sequence[AccountInfo],
    *,
    operators: bool = False,
) -> list[compose.Prepared]:
    """Build and render the claimed reports of ``accounts``; a contents failure fails them all."""
    expected = [claims.OPERATORS] if operators else [a.id for a in accounts]
    rule_ids = [r.id for r in env.live.rules]
    try:
        with env.engine.connect().execution_options(readonly=True) as conn:
            # Rows stream while the iterator is consumed: read it all before the connection closes.
            built = list(
                contents.build(conn, report, accounts, period, env.now, env.settings, rule_ids=rule_ids)
            )
    except Exception as exc:  # another stage's code: fail these reports, keep the daemon going
        log.exception("report %s (%s): building %d reports failed", report.id, period.key, len(expected))
        note = f"building the report failed: {exc!r}"
        return [compose.Prepared(claims.Outcome(a, claims.FAILED, note=note)) for a in expected]
    attach = compose.csv_attachment(report, period) if report.attach_csv else None
    prepared = [
        compose.prepare(report, period, b, env.now, env.settings, env.live.templates, attach) for b in built
    ]
    seen = {p.outcome.account_id for p in prepared}
    prepared += [
        compose.Prepared(claims.Outcome(a, claims.SKIPPED, note=NOT_BUILT)) for a in expected if a not in seen
    ]
    for p in prepared:
        if p.outcome.status == claims.FAILED:
            log.error(
                "report %s, account %s, %s: %s",
                report.id,
                p.outcome.account_id,
                period.key,
                p.outcome.note,
                extra={"account": p.outcome.account_id},
            )
    return prepared


def _record(
    env: Env,
    report: CompiledReport,
    period: Period,
    prepared: Sequence[compose.Prepared],
    stats: ReportStats,
    done: list[compose.Prepared] | None,
) -> None:
    """Write the outcomes of the claims still ours and their outbox rows, in one transaction.

    An outbox key already taken (claim rows deleted by hand, say) means that
    report was decided before: then each is recorded on its own, and such a
    claim is marked sent without a second outbox row.
    """
    domain = outbox.message_domain(env.settings)
    try:
        with env.engine.begin() as conn:
            kept = _record_in(conn, env, report, period, prepared, domain)
    except IntegrityError:
        kept = []
        for one in prepared:
            try:
                with env.engine.begin() as conn:
                    kept += _record_in(conn, env, report, period, [one], domain)
            except IntegrityError:
                log.warning(
                    "report %s: %s is in the outbox already; not sent again", report.id, one.outcome.idem_key
                )
                decided = claims.Outcome(one.outcome.account_id, claims.SENT, one.outcome.idem_key, DECIDED)
                with env.engine.begin() as conn:
                    kept += _record_in(conn, env, report, period, [compose.Prepared(decided)], domain)
    for p in kept:
        if p.outcome.status == claims.SENT and p.message is not None:
            stats.sent[report.id] += 1
            env.metrics.report_sent(report.id)
        elif p.outcome.status == claims.SKIPPED:
            stats.skipped[report.id] += 1
        elif p.outcome.status == claims.FAILED:
            stats.failed[report.id] += 1
    if done is not None:
        done.extend(kept)


def _record_in(
    conn: Connection,
    env: Env,
    report: CompiledReport,
    period: Period,
    prepared: Sequence[compose.Prepared],
    domain: str,
) -> list[compose.Prepared]:
    held = claims.finish(conn, report.id, period.key, env.worker, [p.outcome for p in prepared], env.now)
    kept = [p for p in prepared if p.outcome.account_id in held]
    outbox.add(conn, [p.message for p in kept if p.message is not None], env.now, domain)
    return kept


# --- on demand ----------------------------------------------------------------------------------


class RunError(Exception):
    """An on-demand run that cannot start as asked; the message says why."""


@dataclass
class ZoneRun:
    """An on-demand run in one zone: the period, and what became of each account's report."""

    zone: str
    period: Period
    done: list[compose.Prepared] = field(default_factory=list)  # recorded (or, dry, would be)
    before: dict[str, Any] = field(default_factory=dict)  # account id -> the claim already final


def run_now(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    report: CompiledReport,
    now: datetime,
    worker: str,
    *,
    account_id: str | None = None,
    period: str = LAST,
    dry_run: bool = False,
    on_batch: Callable[[int], None] | None = None,
    metrics: Recorder = NOOP,
) -> list[ZoneRun]:
    """Send ``report`` now for the period ``period`` names (default: the last complete one), to
    ``account_id`` or every account it goes to, through the claims and the outbox like the schedule.

    A report already sent or skipped for that period is not sent again; a
    failed one is tried again. ``dry_run`` claims and writes nothing: the
    runs' ``done`` hold what would be recorded. ``on_batch`` is called with the
    number of accounts each batch went over once it is done (1 for an
    operators' report), for a progress display. ``metrics`` counts as ``run_due`` does.
    Raises RunError.
    """
    env = Env(engine, live, settings, now, worker, metrics=metrics)
    if not report.enabled and not dry_run:
        raise RunError(
            f"report {report.id} is disabled (enabled: false); enable it to send it (or use --dry-run)"
        )
    targets = _targets(env, report, account_id)
    try:  # every zone's period first: nothing is sent unless all of them can be
        periods = [parse_period(period, report.period, zone, now) for zone, _ in targets]
    except PeriodError as exc:
        raise RunError(str(exc)) from None
    runs = []
    for (zone, conditions), chosen in zip(targets, periods, strict=True):
        run = ZoneRun(zone, chosen)
        runs.append(run)
        if report.contents == "low-balance":
            _now_operators(env, report, run, dry_run)
            if on_batch is not None:
                on_batch(1)
            continue
        for batch in accts.batches(engine, report, conditions, settings, settings.reports.batch_size):
            with engine.connect().execution_options(readonly=True) as conn:
                final = claims.finished(conn, report.id, chosen.key, [a.id for a in batch])
            run.before.update({k: v for k, v in final.items() if v.status != claims.FAILED})
            if dry_run:
                todo = [a for a in batch if a.id not in run.before]
                if todo:
                    run.done += _build(env, report, chosen, todo)
            else:
                _send_batch(env, report, chosen, now, batch, ReportStats(), retry_failed=True, done=run.done)
            if on_batch is not None:
                on_batch(len(batch))
    return runs


def _targets(env: Env, report: CompiledReport, account_id: str | None) -> list[tuple[str, list[Any]]]:
    """The zones to run ``report`` in, each with its condition on ``account``."""
    settings = env.settings
    if account_id is not None:
        if report.contents == "low-balance":
            raise RunError(
                f"report {report.id} is an operators' report over all its accounts; leave --account out"
            )
        with env.engine.connect().execution_options(readonly=True) as conn:
            row = conn.execute(select(A.timezone).where(A.id == account_id, *accts.chosen(report))).first()
        if row is None:
            raise RunError(
                f"account {account_id!r} does not get report {report.id}: no such account, or not an enabled "
                "paying account its 'accounts' selector matches"
            )
        own = account_timezone(row.timezone, settings.defaults.timezone, account_id)
        zone = own if report.timezone == "account" else report.timezone
        return [(zone, [A.id == account_id])]
    with env.engine.connect().execution_options(readonly=True) as conn:
        zones = accts.report_zones(conn, report, settings)
    return [(zone, accts.in_zone(report, zone, zones, settings)) for zone in zones.zones]


def _now_operators(env: Env, report: CompiledReport, run: ZoneRun, dry_run: bool) -> None:
    with env.engine.connect().execution_options(readonly=True) as conn:
        final = claims.finished(conn, report.id, run.period.key, [claims.OPERATORS])
    run.before.update({k: v for k, v in final.items() if v.status != claims.FAILED})
    if run.before:
        return
    if dry_run:
        run.done += _build(env, report, run.period, [], operators=True)
        return
    _send_operators(env, report, run.period, env.now, ReportStats(), retry_failed=True, done=run.done)
