"""Sending one batch of reports: claim, build, render, record; what every run shares.

The claims are committed before anything is built (``claims``); the contents are built with
grouped SQL over the whole batch (``contents.build``) and rendered (``compose``); the outbox
rows and the claims' outcomes are written in one transaction, under outbox keys derived from
the claims, so another instance, or this one after a restart, never builds a report twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import TemplateSet, TemplateSuspendedError
from balancewatch.reports import claims, compose, contents
from balancewatch.reports.base import AccountInfo, Period
from balancewatch.rules.reports import CompiledReport

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
    # Seconds spent claiming, building, rendering and recording ("claim", "build", "render",
    # "record"), summed over this process and its worker processes: where a run's time went.
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def messages(self) -> int:
        return sum(self.sent.values())


@dataclass(frozen=True)
class SendJob:
    """One run of sending reports, whatever it sends: the database, the live set, settings, the
    clock, this instance's worker name, the stop request, where to count claims won and messages
    written."""

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


def send_batch(
    job: SendJob,
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
    claimed = claim_batch(job, report, period, fire, batch, stats, retry_failed=retry_failed)
    if not claimed:
        return
    try:
        prepared = build(job, report, period, claimed, seconds=stats.seconds)
    except TemplateSuspendedError:
        expire(job, report, period, [a.id for a in claimed])
        raise
    record(job, report, period, prepared, stats, done)


def claim_batch(
    job: SendJob,
    report: CompiledReport,
    period: Period,
    fire: datetime,
    batch: Sequence[AccountInfo],
    stats: ReportStats,
    *,
    retry_failed: bool = False,
) -> list[AccountInfo]:
    """Claim the reports of ``batch`` and commit; the accounts whose claims are now ours."""
    started = time.perf_counter()
    with job.engine.begin() as conn:
        ours = claims.claim(
            conn,
            report.id,
            [a.id for a in batch],
            period,
            fire,
            job.worker,
            job.now,
            job.settings.reports.lease,
            retry_failed=retry_failed,
        )
    stats.seconds["claim"] += time.perf_counter() - started
    if ours:
        job.metrics.report_claimed(report.id, len(ours))
    return [a for a in batch if a.id in ours]


def expire(job: SendJob, report: CompiledReport, period: Period, account_ids: Sequence[str]) -> None:
    """End this run's leases on ``account_ids``: the next run, here or elsewhere, takes them over."""
    with job.engine.begin() as conn:
        claims.expire(conn, report.id, period.key, sorted(account_ids), job.worker, job.now)


def send_operators(
    job: SendJob,
    report: CompiledReport,
    period: Period,
    fire: datetime,
    stats: ReportStats,
    *,
    retry_failed: bool = False,
    done: list[compose.Prepared] | None = None,
) -> None:
    """An operators' report: one claim, one message, built over every account the report selects."""
    with job.engine.begin() as conn:
        ours = claims.claim(
            conn,
            report.id,
            [claims.OPERATORS],
            period,
            fire,
            job.worker,
            job.now,
            job.settings.reports.lease,
            retry_failed=retry_failed,
        )
    if ours:
        job.metrics.report_claimed(report.id, len(ours))
        # The operators' report covers every balance the selector matches; contents reads them itself.
        prepared = build(job, report, period, [], operators=True)
        record(job, report, period, prepared, stats, done)


def build(
    job: SendJob,
    report: CompiledReport,
    period: Period,
    accounts: Sequence[AccountInfo],
    *,
    operators: bool = False,
    seconds: defaultdict[str, float] | None = None,
) -> list[compose.Prepared]:
    """Build and render the claimed reports of ``accounts``; a contents failure fails them all.
    ``seconds`` (when given) gets the time spent building (``build``) and rendering (``render``)."""
    maker = Maker(job.engine, job.live.templates, job.settings, job.now, tuple(r.id for r in job.live.rules))
    return maker.prepare(report, period, accounts, operators=operators, seconds=seconds)


@dataclass(frozen=True)
class Maker:
    """What building and rendering reports needs, and nothing of the run: this process's, or a
    worker process's own (``parallel``)."""

    engine: Engine
    templates: TemplateSet
    settings: Settings
    now: datetime
    rule_ids: tuple[str, ...]

    def prepare(
        self,
        report: CompiledReport,
        period: Period,
        accounts: Sequence[AccountInfo],
        *,
        operators: bool = False,
        seconds: defaultdict[str, float] | None = None,
    ) -> list[compose.Prepared]:
        """The reports of ``accounts`` built and rendered (see ``build``); raises
        TemplateSuspendedError, nothing else."""
        expected = [claims.OPERATORS] if operators else [a.id for a in accounts]
        started = time.perf_counter()
        try:
            with self.engine.connect().execution_options(readonly=True) as conn:
                # Rows stream while the iterator is consumed: read it all before the connection closes.
                built = list(
                    contents.build(
                        conn, report, accounts, period, self.now, self.settings, rule_ids=list(self.rule_ids)
                    )
                )
        except Exception as exc:  # another stage's code: fail these reports, keep the daemon going
            log.exception("report %s (%s): building %d reports failed", report.id, period.key, len(expected))
            note = f"building the report failed: {exc!r}"
            return [compose.Prepared(claims.ClaimOutcome(a, claims.FAILED, note=note)) for a in expected]
        rendering = time.perf_counter()
        attach = compose.csv_attachment(report, period) if report.attach_csv else None
        prepared = [
            compose.prepare(report, period, b, self.now, self.settings, self.templates, attach) for b in built
        ]
        if seconds is not None:
            seconds["build"] += rendering - started
            seconds["render"] += time.perf_counter() - rendering
        return _completed(report, period, expected, prepared)


def _completed(
    report: CompiledReport, period: Period, expected: Sequence[str], prepared: list[compose.Prepared]
) -> list[compose.Prepared]:
    """``prepared`` with a skipped outcome for each expected account the contents gave nothing
    for; each failure logged."""
    seen = {p.outcome.account_id for p in prepared}
    prepared += [
        compose.Prepared(claims.ClaimOutcome(a, claims.SKIPPED, note=NOT_BUILT))
        for a in expected
        if a not in seen
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


def record(
    job: SendJob,
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
    domain = outbox.message_domain(job.settings)
    started = time.perf_counter()
    try:
        with job.engine.begin() as conn:
            kept = _record_in(conn, job, report, period, prepared, domain)
    except IntegrityError:
        kept = []
        for one in prepared:
            try:
                with job.engine.begin() as conn:
                    kept += _record_in(conn, job, report, period, [one], domain)
            except IntegrityError:
                log.warning(
                    "report %s: %s is in the outbox already; not sent again", report.id, one.outcome.idem_key
                )
                decided = claims.ClaimOutcome(
                    one.outcome.account_id, claims.SENT, one.outcome.idem_key, DECIDED
                )
                with job.engine.begin() as conn:
                    kept += _record_in(conn, job, report, period, [compose.Prepared(decided)], domain)
    stats.seconds["record"] += time.perf_counter() - started
    for p in kept:
        if p.outcome.status == claims.SENT and p.messages:
            stats.sent[report.id] += 1
            job.metrics.report_sent(report.id)
        elif p.outcome.status == claims.SKIPPED:
            stats.skipped[report.id] += 1
        elif p.outcome.status == claims.FAILED:
            stats.failed[report.id] += 1
    if done is not None:
        done.extend(kept)


def _record_in(
    conn: Connection,
    job: SendJob,
    report: CompiledReport,
    period: Period,
    prepared: Sequence[compose.Prepared],
    domain: str,
) -> list[compose.Prepared]:
    held = claims.finish(conn, report.id, period.key, job.worker, [p.outcome for p in prepared], job.now)
    kept = [p for p in prepared if p.outcome.account_id in held]
    outbox.add(conn, [m for p in kept for m in p.messages], job.now, domain)
    return kept
