"""Sending one batch of reports: claim, build, render, record; what every run shares.

The claims are committed before anything is built (``claims``); the contents are built with
grouped SQL over the whole batch (``contents.build``) and rendered (``compose``); the outbox
rows and the claims' outcomes are written in one transaction, under outbox keys derived from
the claims, so another instance, or this one after a restart, never builds a report twice.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import TemplateSuspendedError
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
    lease = job.settings.reports.lease
    with job.engine.begin() as conn:
        ours = claims.claim(
            conn,
            report.id,
            [a.id for a in batch],
            period,
            fire,
            job.worker,
            job.now,
            lease,
            retry_failed=retry_failed,
        )
    if not ours:
        return
    job.metrics.report_claimed(report.id, len(ours))
    claimed = [a for a in batch if a.id in ours]
    try:
        prepared = build(job, report, period, claimed)
    except TemplateSuspendedError:
        with job.engine.begin() as conn:
            claims.expire(conn, report.id, period.key, sorted(ours), job.worker, job.now)
        raise
    record(job, report, period, prepared, stats, done)


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
) -> list[compose.Prepared]:
    """Build and render the claimed reports of ``accounts``; a contents failure fails them all."""
    expected = [claims.OPERATORS] if operators else [a.id for a in accounts]
    rule_ids = [r.id for r in job.live.rules]
    try:
        with job.engine.connect().execution_options(readonly=True) as conn:
            # Rows stream while the iterator is consumed: read it all before the connection closes.
            built = list(
                contents.build(conn, report, accounts, period, job.now, job.settings, rule_ids=rule_ids)
            )
    except Exception as exc:  # another stage's code: fail these reports, keep the daemon going
        log.exception("report %s (%s): building %d reports failed", report.id, period.key, len(expected))
        note = f"building the report failed: {exc!r}"
        return [compose.Prepared(claims.ClaimOutcome(a, claims.FAILED, note=note)) for a in expected]
    attach = compose.csv_attachment(report, period) if report.attach_csv else None
    prepared = [
        compose.prepare(report, period, b, job.now, job.settings, job.live.templates, attach) for b in built
    ]
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
