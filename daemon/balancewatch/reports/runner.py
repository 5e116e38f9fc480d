"""Sending reports: on schedule (``run_due``) and on demand (``run_now``), once per (report,
account, period).

For each report and zone with a fire time due (``schedule``), the zone's
accounts are read in batches of ``reports.batch_size``, and ``sending``
claims, builds, renders and records each batch (``claims``: a unique row per
report, account and period, committed before anything is built). Another
instance, or this one after a restart, finds the claims and does not build
those reports again.

A fire time is finished once every claim of its period in its zone is
final; until then it stays begun, and the next run goes over the zone again
(taking over the claims of an instance that died, once their lease has
passed). A stop request ends a run between batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from balancewatch.config import Settings
from balancewatch.core.durations import format_duration
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.core.procinfo import default_processes
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import TemplateSuspendedError
from balancewatch.reports import accounts as accts
from balancewatch.reports import claims, compose, parallel, schedule, sending
from balancewatch.reports.base import Period
from balancewatch.reports.periods import LAST, PeriodError, parse_period, report_period
from balancewatch.reports.sending import ReportStats, SendJob
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.platform_data import account_timezone
from balancewatch.store.tables import ACCOUNT_TABLE

log = logging.getLogger(__name__)

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
    processes: int | None = None,
) -> ReportStats:
    """Send every report of ``live`` whose fire time is due at ``now``, in every zone it is sent in.

    A (report, zone) that fails is logged and left for the next run; the
    others go on. Returns early, with ``interrupted``, once ``stopping`` is set.
    ``metrics`` counts the claims won and the messages written, per report.
    Batches of at least ``parallel.PARALLEL_MIN`` accounts are built and rendered in
    ``processes`` worker processes (default: one per core; 0: in this process), started when
    first needed and ended before this returns.
    """
    job = SendJob(engine, live, settings, now, worker, stopping, metrics)
    zones = zones if zones is not None else accts.ZoneCache()
    processes = default_processes() if processes is None else processes
    workers = parallel.ReportWorkers(live, settings, processes) if processes > 0 else None
    try:
        return _run_due(job, zones, workers)
    finally:
        if workers is not None:
            workers.close()


def _run_due(job: SendJob, zones: accts.ZoneCache, workers: parallel.ReportWorkers | None) -> ReportStats:
    engine, live, settings, now = job.engine, job.live, job.settings, job.now
    stats = ReportStats()
    for report in live.reports:
        if job.stop_requested:
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
                _follow(job, report, zone, found, known.get(zone), stats, workers)
                if stats.interrupted:
                    return stats
        except TemplateSuspendedError as exc:
            log.warning("report %s waits for its template: %s; trying again at the next run", report.id, exc)
        except Exception:
            # The cursor has not moved past what failed: the next run tries it again.
            log.exception("report %s failed; trying again at the next run", report.id)
    return stats


def _follow(
    job: SendJob,
    report: CompiledReport,
    zone: str,
    zones: accts.Zones,
    cursor: schedule.Cursor | None,
    stats: ReportStats,
    workers: parallel.ReportWorkers | None,
) -> None:
    """Finish the fire time begun in ``zone``, if any, then send the one due now, if any.

    ``cursor`` is the zone's cursor as last read (None: read it, or start it).
    Every minute most zones have nothing due: they are only read.
    """
    grace = job.settings.reports.misfire_grace
    for _ in range(4):  # each turn either returns or sees a cursor another instance moved
        if cursor is None:
            cursor = _cursor(job, report.id, zone)
        if cursor.pending_fire is not None:
            if not _send_fire(job, report, zone, zones, cursor.pending_fire, stats, workers):
                return
            with job.engine.begin() as conn:
                schedule.finish(conn, report.id, zone, cursor.pending_fire, job.now)
            cursor = None
            continue
        plan = schedule.due(report.cron, zone, cursor.processed_until, job.now, grace)
        if plan.fire is None and not plan.missed and job.now - cursor.processed_until < grace:
            return  # moved on at most once per grace: a changed schedule looks back no further
        with job.engine.begin() as conn:
            if not schedule.begin(conn, cursor, job.now, plan.fire):
                cursor = None
                continue
        _log_plan(report, zone, plan, grace, stats)
        if plan.fire is not None:
            stats.fired.append((report.id, zone, plan.fire))
            if _send_fire(job, report, zone, zones, plan.fire, stats, workers):
                with job.engine.begin() as conn:
                    schedule.finish(conn, report.id, zone, plan.fire, job.now)
        return


def _cursor(job: SendJob, report_id: str, zone: str) -> schedule.Cursor:
    with job.engine.connect().execution_options(readonly=True) as conn:
        found = schedule.read_cursor(conn, report_id, zone)
    if found is not None:
        return found
    with job.engine.begin() as conn:
        return schedule.start_cursor(conn, report_id, zone, job.now, job.settings.reports.misfire_grace)


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
    job: SendJob,
    report: CompiledReport,
    zone: str,
    zones: accts.Zones,
    fire: datetime,
    stats: ReportStats,
    workers: parallel.ReportWorkers | None,
) -> bool:
    """Send ``report`` for the period ``fire`` reports on, in ``zone``; True once every claim of that
    period in the zone is final (False: stopped, or claims still held by others)."""
    period = report_period(report.period, fire, zone)
    if report.contents == "low-balance":
        sending.send_operators(job, report, period, fire, stats)
    else:
        conditions = accts.in_zone(report, zone, zones, job.settings)
        size = job.settings.reports.batch_size
        batches = accts.batches(job.engine, report, conditions, job.settings, size)
        if workers is not None:
            parallel.send_batches(job, report, period, fire, batches, stats, workers)
        else:
            for batch in batches:
                if job.stop_requested:
                    stats.interrupted = True
                    break
                sending.send_batch(job, report, period, fire, batch, stats)
        if stats.interrupted:
            return False
    with job.engine.connect().execution_options(readonly=True) as conn:
        left = claims.unfinished(conn, report.id, period.key, zone)
    if left:
        log.info("report %s (%s, %s): %d still being built elsewhere", report.id, zone, period.key, left)
    return left == 0


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
    job = SendJob(engine, live, settings, now, worker, metrics=metrics)
    if not report.enabled and not dry_run:
        raise RunError(
            f"report {report.id} is disabled (enabled: false); enable it to send it (or use --dry-run)"
        )
    targets = _targets(job, report, account_id)
    try:  # every zone's period first: nothing is sent unless all of them can be
        periods = [parse_period(period, report.period, zone, now) for zone, _ in targets]
    except PeriodError as exc:
        raise RunError(str(exc)) from None
    runs = []
    for (zone, conditions), chosen in zip(targets, periods, strict=True):
        run = ZoneRun(zone, chosen)
        runs.append(run)
        if report.contents == "low-balance":
            _now_operators(job, report, run, dry_run)
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
                    run.done += sending.build(job, report, chosen, todo)
            else:
                sending.send_batch(
                    job, report, chosen, now, batch, ReportStats(), retry_failed=True, done=run.done
                )
            if on_batch is not None:
                on_batch(len(batch))
    return runs


def _targets(job: SendJob, report: CompiledReport, account_id: str | None) -> list[tuple[str, list[Any]]]:
    """The zones to run ``report`` in, each with its condition on ``account``."""
    account = ACCOUNT_TABLE.c
    settings = job.settings
    if account_id is not None:
        if report.contents == "low-balance":
            raise RunError(
                f"report {report.id} is an operators' report over all its accounts; leave --account out"
            )
        with job.engine.connect().execution_options(readonly=True) as conn:
            row = conn.execute(
                select(account.timezone).where(account.id == account_id, *accts.chosen(report))
            ).first()
        if row is None:
            raise RunError(
                f"account {account_id!r} does not get report {report.id}: no such account, or not an enabled "
                "paying account its 'accounts' selector matches"
            )
        own = account_timezone(row.timezone, settings.defaults.timezone, account_id)
        zone = own if report.timezone == "account" else report.timezone
        return [(zone, [account.id == account_id])]
    with job.engine.connect().execution_options(readonly=True) as conn:
        zones = accts.report_zones(conn, report, settings)
    return [(zone, accts.in_zone(report, zone, zones, settings)) for zone in zones.zones]


def _now_operators(job: SendJob, report: CompiledReport, run: ZoneRun, dry_run: bool) -> None:
    with job.engine.connect().execution_options(readonly=True) as conn:
        final = claims.finished(conn, report.id, run.period.key, [claims.OPERATORS])
    run.before.update({k: v for k, v in final.items() if v.status != claims.FAILED})
    if run.before:
        return
    if dry_run:
        run.done += sending.build(job, report, run.period, [], operators=True)
        return
    sending.send_operators(job, report, run.period, job.now, ReportStats(), retry_failed=True, done=run.done)


def would_send(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    report: CompiledReport,
    now: datetime,
    account_id: str,
    *,
    period: str = LAST,
) -> list[compose.Prepared]:
    """The report ``account_id`` would get for the period ``period`` names (default: the last
    complete one), built and rendered with ``live``'s templates, read only: nothing is claimed
    or recorded, and a report already sent for that period is built again. An operators' report
    (low-balance) is the one over all its accounts. Raises RunError when the account does not
    get ``report``."""
    job = SendJob(engine, live, settings, now, "preview")
    if report.contents == "low-balance":
        zone = report.timezone if report.timezone != "account" else settings.defaults.timezone
        targets: list[tuple[str, list[Any]]] = [(zone, [])]
    else:
        targets = _targets(job, report, account_id)
    out: list[compose.Prepared] = []
    for zone, conditions in targets:
        try:
            chosen = parse_period(period, report.period, zone, now)
        except PeriodError as exc:
            raise RunError(str(exc)) from None
        if report.contents == "low-balance":
            out += sending.build(job, report, chosen, [], operators=True)
            continue
        for batch in accts.batches(engine, report, conditions, settings, 1):
            out += sending.build(job, report, chosen, batch)
    return out
