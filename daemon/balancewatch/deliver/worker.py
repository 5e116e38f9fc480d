"""Claim due outbox rows, send them through a transport, record each outcome.

Each outcome commits on its own, right after its message is handed over: a
crash loses at most the record of the message in flight, which is then sent
again (at-least-once; the Message-ID makes the duplicate detectable).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.files import FileTransport
from balancewatch.deliver.message import build
from balancewatch.deliver.smtp import SmtpTransport

log = logging.getLogger(__name__)


class Transport(Protocol):
    name: str

    def __enter__(self) -> Transport: ...
    def __exit__(self, *exc: object) -> None: ...
    def send(self, envelope: object) -> dict[str, str]: ...


@dataclass
class DeliveryStats:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # sent | retry | parked | lost


def make_transport(settings: Settings) -> Transport:
    """The configured transport: SMTP when a host is set (or asked for), else files."""
    if settings.transport == "smtp":
        return SmtpTransport(settings.smtp, settings.smtp_password())  # type: ignore[return-value]
    return FileTransport(settings.mail_dir)  # type: ignore[return-value]


def deliver_batch(
    engine: Engine,
    transport: Transport,
    settings: Settings,
    now: datetime,
    worker: str,
    clock: Callable[[], datetime] | None = None,
    key: str | None = None,
) -> DeliveryStats:
    """Claim one batch of due rows (or only the row of ``key``) and deliver it.

    ``now`` decides what is due and starts the lease; ``clock`` (default:
    ``now``) stamps outcomes. Once half the lease has passed, the lease on
    the rows not yet sent is renewed, so a slow server cannot let another
    instance claim them meanwhile; a row whose lease was lost is skipped.
    """
    clock = clock or (lambda: now)
    d = settings.delivery
    with engine.begin() as conn:
        batch = outbox.claim(conn, worker, now, d.batch_size, d.lease, key)
    stats = DeliveryStats(claimed=len(batch))
    if not batch:
        return stats
    held = {row.id for row in batch}
    lease_end = now + d.lease
    try:
        with transport:
            for i, row in enumerate(batch):
                stamp = clock()
                if stamp >= lease_end - d.lease / 2:
                    lease_end = stamp + d.lease
                    with engine.begin() as conn:
                        held = outbox.renew(conn, [r.id for r in batch[i:]], worker, lease_end)
                if row.id not in held:
                    stats.outcomes["lost"] += 1
                    log.warning("lease on %s lost to another worker; not sending it", row.idem_key)
                    continue
                try:
                    _deliver_one(engine, transport, settings, row, worker, stamp, stats)
                except TransportError as exc:  # only connection failures get here
                    _fail_all(engine, settings, batch[i:], worker, clock(), exc, stats)
                    return stats
    except TransportError as exc:  # could not connect at all
        _fail_all(engine, settings, batch, worker, clock(), exc, stats)
    return stats


def _deliver_one(
    engine: Engine,
    transport: Transport,
    settings: Settings,
    row: outbox.Claimed,
    worker: str,
    now: datetime,
    stats: DeliveryStats,
) -> None:
    try:
        envelope = build(row, now, settings.delivery.reply_to)
        refused = transport.send(envelope)
    except TransportError as exc:
        if exc.connection:
            raise
        _fail(engine, settings, row, worker, now, exc, stats)
        return
    notes = [*envelope.rejected, *(f"{a}: {r}" for a, r in refused.items())]
    with engine.begin() as conn:
        kept = outbox.mark_sent(conn, row.id, worker, now, "; ".join(notes) or None)
    stats.outcomes["sent" if kept else "lost"] += 1
    log.info(
        "sent %s to %s via %s%s",
        row.idem_key,
        ", ".join(envelope.recipients),
        transport.name,
        f" (refused: {'; '.join(notes)})" if notes else "",
    )


def _fail(
    engine: Engine,
    settings: Settings,
    row: outbox.Claimed,
    worker: str,
    now: datetime,
    exc: TransportError,
    stats: DeliveryStats,
) -> None:
    retry = settings.delivery.retry
    gave_up = now - row.created_at >= retry.give_up_after
    with engine.begin() as conn:
        if exc.permanent or gave_up:
            reason = str(exc) if exc.permanent else f"gave up after {row.attempts} attempts: {exc}"
            kept = outbox.mark_parked(conn, row.id, worker, reason)
            outcome = "parked"
            log.error("parked %s: %s", row.idem_key, reason)
        else:
            delay = outbox.backoff(row.attempts, retry.initial, retry.max, row.id)
            kept = outbox.mark_retry(conn, row.id, worker, str(exc), now + delay)
            outcome = "retry"
            log.warning("will retry %s in %ds: %s", row.idem_key, delay.total_seconds(), exc)
    stats.outcomes[outcome if kept else "lost"] += 1


def _fail_all(
    engine: Engine,
    settings: Settings,
    rows: list[outbox.Claimed],
    worker: str,
    now: datetime,
    exc: TransportError,
    stats: DeliveryStats,
) -> None:
    # The transport is down, not the messages: each one waits for the next try.
    for row in rows:
        _fail(engine, settings, row, worker, now, TransportError(str(exc)), stats)
