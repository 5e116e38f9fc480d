"""Claim due outbox rows, send each through its channel's transport, record each outcome per recipient.

Each row goes to the transport registered for its ``channel`` (``registry``);
an instance claims only rows of the channels it delivers, and notes on the
others, left pending for an instance that delivers them, why it did not.

An email's outcome commits on its own, written while the next message is
built and its exchange begins, and committed before the server can accept
that next one (``deliver/records.py``): a crash loses at most the record of
the message in flight, which is then sent again (at-least-once; the
Message-ID makes the duplicate detectable). Outcomes of channels whose
receivers deduplicate are written in groups (``deliver/pending.py``). The
next message is built while the server takes the one before it
(``registry.Ahead``).

When the database fails while a batch is out, what the server already
accepted is not sent again by this process: the outcome is kept in memory
(``Unrecorded``) and written first thing once the database answers, with
the rows of the batch not yet sent handed back; nothing new is claimed
until then. A stop (``stopping``) ends a batch between messages and hands
back the rows not yet sent, so another instance can take them at once.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.deliver.errors import LeaseLost, TransportError
from balancewatch.deliver.message import EmailEnvelope
from balancewatch.deliver.outcome import Attempt, failure_class, settle, shown
from balancewatch.deliver.pending import Pending
from balancewatch.deliver.records import Records, Unrecorded
from balancewatch.deliver.registry import EMAIL, Ahead, Registry, Route, Sessions, email_registry
from balancewatch.deliver.transport import Ready, Transport
from balancewatch.store import status as instance_status
from balancewatch.store.db import is_postgres

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# How often rows of channels no transport here delivers are looked for, to note why they wait:
# the look reads every due row, so not at each batch of a backlog.
NOTE_EVERY = timedelta(seconds=30)

__all__ = ["Courier", "DeliveryStats", "Transport", "Unrecorded", "deliver_batch"]


@dataclass
class DeliveryStats:
    claimed: int = 0
    # Rows by what became of them: sent | retry | parked | released (handed back unsent) |
    # lost (the claim went to another worker) | unrecorded (kept until the database answers).
    outcomes: Counter[str] = field(default_factory=Counter)


class Courier:
    """Delivers the outbox as ``worker``: batch after batch, keeping what the database has not
    taken yet across batches (so one Courier per process, shared by its delivery runs).

    ``transports`` maps each channel to its transport; a bare email transport stands for the
    registry of the email channel alone. ``lane`` is the channels this courier claims (default:
    all of them): the daemon runs one courier per lane, so a slow or failing channel never holds
    back another. The courier whose lane holds ``email`` (or that has no lane) also notes on rows
    of channels no transport here delivers why they wait. ``metrics`` counts each message
    attempt and each that failed, by transport and class (``failure_class``).
    """

    def __init__(
        self,
        engine: Engine,
        transports: Registry | Transport[EmailEnvelope],
        settings: Settings,
        worker: str,
        stopping: threading.Event | None = None,
        metrics: Recorder = NOOP,
        lane: Collection[str] | None = None,
    ) -> None:
        if not isinstance(transports, Registry):
            transports = email_registry(transports, settings)
        self.engine, self.transports, self.settings, self.worker = engine, transports, settings, worker
        self.lane = tuple(transports.channels if lane is None else lane)
        self._notes = lane is None or EMAIL in self.lane
        self._pending = Pending()  # outcomes settled, not written yet (deliver/pending.py)
        # A lane of channels whose receivers deduplicate (no email) need not wait for PostgreSQL
        # to flush each group of outcomes to disk: a server crash then repeats a few events.
        self._relaxed = EMAIL not in self.lane and is_postgres(engine)
        self._records = Records(engine, worker, self._relaxed)
        self.stopping = stopping or threading.Event()
        self.metrics = metrics
        self._taken_over: set[str] = set()
        self._noted_at: datetime | None = None  # when rows no transport here delivers were noted

    @property
    def unrecorded(self) -> Unrecorded:
        """What the database has not taken yet: outcomes, and rows to hand back."""
        return self._records.unrecorded

    def deliver_batch(
        self,
        now: datetime,
        clock: Clock | None = None,
        key: str | None = None,
        stale_after: timedelta | None = None,
    ) -> DeliveryStats:
        """Record what is still unrecorded, then claim one batch of due rows (or only the row of
        ``key``) and deliver it.

        ``now`` decides what is due and starts the lease; ``clock`` (default: ``now``) stamps
        outcomes. Rows held by an instance that stopped or died are due at once; with
        ``stale_after``, so are those of an instance whose heartbeat is older than that. Only
        rows of the channels in ``transports`` are claimed; due rows of other channels without
        an error yet get one saying so (at the first batch, then every ``NOTE_EVERY``), and
        stay pending. Once half the lease has passed, the
        lease on the rows not yet sent is renewed, so a slow server cannot let another instance
        claim them meanwhile; a row whose lease was lost is skipped. Raises SQLAlchemyError
        when the database fails (nothing is lost: see the module).
        """
        clock = clock or (lambda: now)
        stats = DeliveryStats()
        if self.unrecorded:
            self._flush(stats)
        d = self.settings.delivery
        with self.engine.begin() as conn:
            if self._relaxed:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            others = outbox.claimers(conn, self.worker)
            dead = instance_status.dead(conn, others, now, stale_after) if others else set()
            self._log_takeover(dead)
            if self._notes and (self._noted_at is None or now - self._noted_at >= NOTE_EVERY):
                outbox.note_undeliverable(conn, self.transports.channels, now, self._no_transport)
                self._noted_at = now
            batch = outbox.claim(conn, self.worker, now, d.batch_size, d.lease, key, dead, self.lane)
        stats.claimed = len(batch)
        if batch:
            try:
                self._send_batch(batch, now, clock, stats)
            finally:
                try:
                    self._write_pending(stats)
                finally:
                    self._records.close()
        return stats

    def _no_transport(self, channel: str) -> str:
        """The ``last_error`` of a row of ``channel``, which this instance cannot deliver."""
        delivered = ", ".join(self.transports.channels) or "no channel"
        return (
            f"no transport for channel {channel!r} on {self.worker} (it delivers {delivered}); "
            "waiting for an instance that has one"
        )

    def abort(self) -> None:
        """Break off a send in progress (a shutdown that cannot wait for a slow server)."""
        self.transports.abort()

    def _send_batch(
        self, batch: list[outbox.Claimed], now: datetime, clock: Clock, stats: DeliveryStats
    ) -> None:
        """Send ``batch`` in order, each row through its channel's transport, opened at the first
        row that needs it. A transport that cannot connect fails the rows of its channel still
        to go; the other channels go on."""
        lease = self.settings.delivery.lease
        held = {row.id for row in batch}
        lease_end = now + lease
        done: set[int] = set()  # rows failed with their channel's connection
        ahead = Ahead(clock)  # the next row's message, built while the server takes this one
        with Sessions() as sessions:
            for i, row in enumerate(batch):
                if row.id in done:
                    continue
                rest = [r for r in batch[i:] if r.id not in done]
                if self.stopping.is_set():
                    self._release(rest, stats)
                    return
                route = self._route(row)
                ready = self._ready(row, stats) if self._ahead(route) else None
                try:
                    sessions.open(route)
                    if not route.pace(self.stopping):
                        continue  # stopping: the next round hands the rest back
                    stamp = clock()
                    if stamp >= lease_end - lease / 2:
                        lease_end = stamp + lease
                        held = self._renew(rest, lease_end, stats)
                    if row.id not in held:
                        self._lost(row, stats)
                        continue
                    ahead.next = rest[1] if len(rest) > 1 else None
                    attempts = route.attempt(row, stamp, ready, ahead)
                except TransportError as exc:  # only connection failures get here
                    down = [r for r in rest if r.channel == row.channel]
                    done.update(r.id for r in down)
                    self._connection_failed(down, exc, clock(), stats, route)
                    if self.stopping.is_set():
                        return
                    continue
                except LeaseLost:  # told by ``ready``, before the server could accept it
                    self._lost(row, stats)
                    continue
                except SQLAlchemyError:
                    # The outcome before this row's is kept, unwritten; this row was not
                    # accepted: it and the rest go back once the database answers.
                    self.unrecorded.releases.update(r.id for r in rest)
                    raise
                if not self._settle(row, route, attempts, stamp, rest[1:], stats):
                    held.discard(rest[1].id)

    def _ahead(self, route: Route[Any]) -> bool:
        """Whether ``route``'s outcomes are written one by one behind the next message
        (``Records.start``): each must be durable before the next is accepted (email)."""
        return route.record_every == 1 and not self._relaxed

    def _ready(self, row: outbox.Claimed, stats: DeliveryStats) -> Ready:
        """What the transport calls before the server can accept ``row``: the outcome written
        meanwhile collected (raising its SQLAlchemyError), and ``row`` still this worker's
        (else LeaseLost: another took it over, and this one sends it not)."""

        def ready() -> None:
            if self._records.finish(stats.outcomes) == row.id:
                raise LeaseLost(f"{row.idem_key} went to another worker")

        return ready

    def _route(self, row: outbox.Claimed) -> Route[Any]:
        route = self.transports.route(row.channel)
        if route is None:  # claims are of self.transports.channels only
            raise LookupError(f"claimed {row.idem_key} of channel {row.channel!r}, which has no transport")
        return route

    def _lost(self, row: outbox.Claimed, stats: DeliveryStats) -> None:
        stats.outcomes["lost"] += 1
        log.warning(
            "lease on %s lost to another worker; not sending it",
            row.idem_key,
            extra={"message_id": row.message_id},
        )

    def _settle(
        self,
        row: outbox.Claimed,
        route: Route[Any],
        attempts: dict[str, Attempt],
        stamp: datetime,
        unsent: list[outbox.Claimed],
        stats: DeliveryStats,
    ) -> bool:
        """Log, count and record ``attempts`` once the route's outcomes are due to be written
        (``route.record_every``), extending the lease of the row to send next (the first of
        ``unsent``) in the same transaction; returns whether this worker still holds it."""
        self._count(route, attempts)
        self._log_attempt(row, route, attempts)
        update = settle(row, attempts, stamp, self.settings.delivery.retry)
        confirm = (unsent[0].id, stamp + self.settings.delivery.lease) if unsent else None
        try:
            if self._ahead(route):  # the next row's ``ready`` tells whether it is still held
                self._records.start((row, update), stats.outcomes, confirm)
                return True
            self._pending.add(row, update)
            if not self._pending.due(route.record_every):
                return True
            return self._record(self._pending.take(), stats, confirm)
        except SQLAlchemyError:
            # Its outcome is kept; the rows not sent yet go back once the database answers.
            self.unrecorded.releases.update(r.id for r in unsent)
            raise

    def _write_pending(self, stats: DeliveryStats) -> None:
        """Write the outcomes still waiting (the end of a batch, however it ended); raises
        SQLAlchemyError with them kept in memory (``unrecorded``)."""
        self._records.finish(stats.outcomes)
        if self._pending:
            self._record(self._pending.take(), stats)

    def _connection_failed(
        self,
        rows: list[outbox.Claimed],
        exc: TransportError,
        now: datetime,
        stats: DeliveryStats,
        route: Route[Any],
    ) -> None:
        if self.stopping.is_set():
            # Broken off by a shutdown: the rows go back as they were, for the next instance.
            self._release(rows, stats)
            return
        # The transport is down, not the messages: each one waits for the next try.
        for _row in rows:
            self.metrics.delivery_attempted(route.transport.name)
            self.metrics.delivery_failed(route.transport.name, "connection")
        retry = self.settings.delivery.retry
        settled = [
            (row, settle(row, {a: Attempt(False, str(exc)) for a in row.due_recipients}, now, retry))
            for row in rows
        ]
        self._record(settled, stats)
        log.warning("cannot deliver %d messages now: %s", len(rows), exc)

    def _record(
        self,
        settled: list[tuple[outbox.Claimed, outbox.RowUpdate]],
        stats: DeliveryStats,
        confirm: tuple[int, datetime] | None = None,
    ) -> bool:
        """Record ``settled``; with ``confirm`` (the row to send next, and a new end for its lease),
        extend that row's lease in the same transaction. Returns whether this worker still holds
        it: an instance judged dead by mistake (a stall, a skewed clock) then stops before sending
        a row another has taken over, and only the message it had in flight can arrive twice."""
        return self._records.record(settled, stats.outcomes, confirm)

    def _release(self, rows: list[outbox.Claimed], stats: DeliveryStats) -> None:
        self._records.release(rows, stats.outcomes)

    def _renew(self, rows: list[outbox.Claimed], until: datetime, stats: DeliveryStats) -> set[int]:
        return self._records.renew(rows, until, stats.outcomes)

    def _flush(self, stats: DeliveryStats) -> None:
        """Write the outcomes kept while the database was unreachable and hand back the rows
        not sent; raises SQLAlchemyError (keeping them all) if it still fails."""
        recorded, released = self._records.flush(stats.outcomes)
        log.warning(
            "recorded %d delivery outcomes kept while the database was unreachable; %d unsent "
            "messages handed back",
            recorded,
            released,
        )

    def record_kept(self, conn: Connection) -> int:
        """Record the outcomes still kept in memory; returns how many were."""
        return self._records.record_kept(conn)

    def hand_back(self, conn: Connection) -> tuple[int, int]:
        """At a stop: record the outcomes still kept in memory, then hand back every row this
        worker holds (of every lane: record the other couriers' kept outcomes first). Returns
        (outcomes recorded, rows handed back)."""
        recorded = self.record_kept(conn)
        return recorded, outbox.release(conn, self.worker, attempted=False)

    def _log_takeover(self, dead: Collection[str]) -> None:
        for name in sorted(set(dead) - self._taken_over):
            log.warning("instance %s has stopped or died: taking over the messages it held", name)
        self._taken_over |= set(dead)

    def _count(self, route: Route[Any], attempts: Mapping[str, Attempt]) -> None:
        self.metrics.delivery_attempted(route.transport.name)
        failure = failure_class(attempts)
        if failure is not None:
            self.metrics.delivery_failed(route.transport.name, failure)

    def _log_attempt(self, row: outbox.Claimed, route: Route[Any], attempts: Mapping[str, Attempt]) -> None:
        about = {"message_id": row.message_id}
        sent = [a for a, at in attempts.items() if at.delivered]
        if sent:
            log.info(
                "sent %s to %s via %s",
                row.idem_key,
                ", ".join(map(shown, sent)),
                route.transport.name,
                extra=about,
            )
        for address, attempt in attempts.items():
            if not attempt.delivered:
                log.log(
                    logging.ERROR if attempt.permanent else logging.WARNING,
                    "%s %s for %s: %s",
                    "parked" if attempt.permanent else "will retry",
                    row.idem_key,
                    shown(address),
                    attempt.error,
                    extra=about,
                )


def deliver_batch(
    engine: Engine,
    transport: Registry | Transport[EmailEnvelope],
    settings: Settings,
    now: datetime,
    worker: str,
    clock: Clock | None = None,
    key: str | None = None,
    metrics: Recorder = NOOP,
) -> DeliveryStats:
    """One batch (or only the row of ``key``) by a Courier of its own: for commands that
    deliver once and exit (``send-test``, ``report run``)."""
    return Courier(engine, transport, settings, worker, metrics=metrics).deliver_batch(now, clock, key)
