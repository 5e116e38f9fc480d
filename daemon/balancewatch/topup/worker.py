"""Top-up requests through their life: arrived in the ledger, handed to the hook, failed.

Each run first marks ``succeeded`` every open request whose top-up is in the
ledger (one statement), then claims due pending requests one at a time,
calls the hook and records its answer, each in its own transaction: a crash
loses at most the record of the call in flight, which is then made again
with the same Idempotency-Key (at-least-once; the platform deduplicates).

A failure — the platform refused, ``topup.retry.give_up_after`` passed, an
accepted request's top-up did not arrive within ``topup.await_credit``, or an
operator reported it — closes the request and records the owner's email
in the outbox in one transaction, under the key ``topup-failed/<id>``: told
once, whatever restarts or instances do.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.core.durations import format_duration
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.core.money import Money
from balancewatch.liveset import LiveSet
from balancewatch.store import topup_requests as topups
from balancewatch.topup import notify
from balancewatch.topup.answer import Answer, Hook, HookRequest, HookVerdict

log = logging.getLogger(__name__)

MAX_CALLS = 100  # per run, so one run stays bounded; the next run goes on


@dataclass
class TopupStats:
    """What a run did: top-ups found in the ledger, outcomes of calls, failure emails recorded.
    Each is told to ``metrics`` as it is counted."""

    arrived: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # requested | succeeded | retry | failed | lost
    emails: int = 0
    waiting_for_hook: bool = False  # open requests, and no hook configured to call
    metrics: Recorder = field(default=NOOP, repr=False, compare=False)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.metrics.topup_request(outcome)


@dataclass(frozen=True, slots=True)
class Failed:
    """A request closed as failed, and the email recorded for it (None: nobody to tell)."""

    request: topups.Request
    email: outbox.NewMessage | None


def run_topups(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    hook: Hook | None,
    now: datetime,
    *,
    clock: Callable[[], datetime] | None = None,
    stopping: threading.Event | None = None,
    metrics: Recorder = NOOP,
) -> TopupStats:
    """Mark arrived top-ups, then hand due pending requests to ``hook`` until none is due,
    ``stopping`` is set (the call in flight is finished and recorded) or MAX_CALLS were made.

    ``now`` marks arrivals and claims the first request; ``clock`` (default: ``now``)
    stamps each later claim and each outcome. Without a hook, requests wait (pending).
    ``metrics`` counts each outcome (``topup_request``), arrivals as ``arrived``.
    """
    clock = clock or (lambda: now)
    stats = TopupStats(metrics=metrics)
    with engine.connect().execution_options(readonly=True) as conn:
        if not topups.any_open(conn):
            return stats
    with engine.begin() as conn:
        arrived = topups.mark_arrived(conn, now)
    stats.arrived = len(arrived)
    if arrived:
        metrics.topup_request("arrived", len(arrived))
    for request in arrived:
        log.info(
            "top-up request %d: %s arrived in the ledger",
            request.id,
            _describe(request),
            extra=_about(request),
        )
    _fail_overdue(engine, live, settings, now, stats)
    if hook is None:
        with engine.connect().execution_options(readonly=True) as conn:
            stats.waiting_for_hook = topups.any_open(conn)
        return stats
    stamp = now
    for _ in range(MAX_CALLS):
        if stopping is not None and stopping.is_set():
            break
        with engine.begin() as conn:
            claimed = topups.claim(conn, stamp, settings.topup.lease)
        if claimed is None:
            break
        answer = hook.call(_hook_request(claimed))
        _record(engine, live, settings, claimed, answer, clock(), stats)
        stamp = clock()
    return stats


def _fail_overdue(
    engine: Engine, live: LiveSet, settings: Settings, now: datetime, stats: TopupStats
) -> None:
    """Fail the accepted requests whose top-up has not arrived within ``topup.await_credit``."""
    wait = settings.topup.await_credit
    with engine.connect().execution_options(readonly=True) as conn:
        late = topups.overdue(conn, now - wait)
    for request_id in late:
        reason = (
            f"the payment platform accepted the request but no top-up arrived within {format_duration(wait)}"
        )
        failed = fail(engine, live, settings, request_id, reason, "no-credit", now)
        _count_failure(stats, failed)
        if failed is not None:
            log.warning(
                "top-up request %d (%s): %s",
                request_id,
                _describe(failed.request),
                reason,
                extra=_about(failed.request),
            )


def _hook_request(request: topups.Request) -> HookRequest:
    return HookRequest(
        request.id,
        request.idem_key,
        request.rule_id,
        request.account_id,
        request.currency,
        request.amount,
        request.created_at,
        request.attempts,
    )


def _about(request: topups.Request) -> dict[str, str]:
    """The log record's fields for one request."""
    return {"rule": request.rule_id, "account": request.account_id}


def _describe(request: topups.Request) -> str:
    return f"{request.account_id} {Money(request.amount, request.currency).format('en_US')}"


def _record(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    request: topups.Request,
    answer: Answer,
    now: datetime,
    stats: TopupStats,
) -> None:
    what = f"top-up request {request.id} ({_describe(request)}, attempt {request.attempts})"
    if answer.outcome in (HookVerdict.accepted, HookVerdict.succeeded):
        status = topups.REQUESTED if answer.outcome is HookVerdict.accepted else topups.SUCCEEDED
        with engine.begin() as conn:
            kept = topups.mark_answered(conn, request, status, now, answer.response)
        stats.count(status if kept else "lost")
        log.info(
            "%s: %s",
            what,
            "accepted; waiting for the top-up in the ledger" if kept else "taken over",
            extra=_about(request),
        )
        return
    if answer.outcome is HookVerdict.declined:
        failed = fail(
            engine,
            live,
            settings,
            request.id,
            answer.reason,
            "declined",
            now,
            attempts=request.attempts,
            response=answer.response,
        )
        _count_failure(stats, failed)
        log.warning("%s: refused by the platform: %s", what, answer.reason, extra=_about(request))
        return
    retry = settings.topup.retry
    if now - request.created_at >= retry.give_up_after:
        reason = (
            f"the payment platform did not accept the request after {request.attempts} attempts "
            f"over {format_duration(retry.give_up_after)} (last: {answer.reason})"
        )
        failed = fail(
            engine,
            live,
            settings,
            request.id,
            reason,
            "gave-up",
            now,
            attempts=request.attempts,
            response=answer.response,
        )
        _count_failure(stats, failed)
        log.error("%s: gave up: %s", what, answer.reason, extra=_about(request))
        return
    _retry_later(engine, settings, request, answer, now, stats, what)


def _retry_later(
    engine: Engine,
    settings: Settings,
    request: topups.Request,
    answer: Answer,
    now: datetime,
    stats: TopupStats,
    what: str,
) -> None:
    """Schedule the next call with the outbox's backoff, never sooner than the hook's Retry-After."""
    retry = settings.topup.retry
    delay = outbox.backoff(request.attempts, retry.initial, retry.max, request.id)
    if answer.retry_after is not None:
        delay = max(delay, min(answer.retry_after, retry.max))
    with engine.begin() as conn:
        kept = topups.mark_retry(conn, request, now, now + delay, answer.reason)
    stats.count("retry" if kept else "lost")
    level = logging.ERROR if answer.misconfigured else logging.WARNING
    log.log(
        level, "%s: will retry in %ds: %s", what, delay.total_seconds(), answer.reason, extra=_about(request)
    )


def _count_failure(stats: TopupStats, failed: Failed | None) -> None:
    stats.count("failed" if failed else "lost")
    if failed is not None and failed.email is not None:
        stats.emails += 1


def fail(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    request_id: int,
    reason: str,
    cause: str,
    now: datetime,
    *,
    attempts: int | None = None,
    response: str | None = None,
) -> Failed | None:
    """Close an open request as failed with ``reason`` and record the owner's email, together.

    ``cause`` is ``declined``, ``gave-up``, ``no-credit`` or ``reported`` (the template sees it).
    With ``attempts``, only while that claimed attempt still holds the request.
    Returns None, changing nothing, when the request is not open (or no longer held).
    """
    with engine.begin() as conn:
        closed = topups.close(
            conn, request_id, topups.FAILED, now, reason, attempts=attempts, response=response
        )
        if closed is None:
            return None
        email = notify.record_failure(
            conn,
            live.templates,
            live.rule(closed.rule_id),
            settings,
            closed,
            reason,
            cause,
            now,
            outbox.message_domain(settings),
        )
    return Failed(closed, email)


def succeed(engine: Engine, request_id: int, note: str, now: datetime) -> topups.Request | None:
    """Close an open request as succeeded by hand (the credit came some other way); None if not open."""
    with engine.begin() as conn:
        return topups.close(conn, request_id, topups.SUCCEEDED, now, note)
