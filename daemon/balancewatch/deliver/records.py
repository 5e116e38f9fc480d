"""What a courier writes to the outbox (outcomes, leases renewed, rows handed back), and what it
keeps in memory while the database does not answer.

An outcome goes in with the lease of the row to send next, in one transaction: a worker that lost
that row (judged dead by mistake: a stall, a skewed clock) learns it before sending it, so only
the message it had in flight can arrive twice. A single outcome that must be durable before the
next message is accepted (an email's: see ``deliver/pending.py``) is one statement
(``outbox.record_and_renew``) on a connection the batch keeps, in autocommit on PostgreSQL: one
round trip and one commit per message, without a pool checkout and its ping each time. Should that
connection have broken while the message went out (a database restart), the write is tried once
more on a new one, as the pool's ping would have done.

Such a write runs on a thread of its own (``start``; ``deliver/writer.py``) while the courier
builds the next message and begins to send it; the transport calls ``finish`` before the server
can accept that next message (``Transport.send``'s ``ready``: an SMTP server's final dot). So at
any moment at most one accepted message is not recorded yet, as when each write finished before
the next message began: a crash repeats at most the message in flight. The commit's wait (on
PostgreSQL, for the disk) overlaps the next message's exchange instead of adding to it.

When a write fails, its outcomes are kept (``Unrecorded``) and the rows not sent yet are noted to
hand back; ``flush`` writes them first thing once the database answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from balancewatch import outbox
from balancewatch.deliver.writer import Writer
from balancewatch.store.db import is_postgres

Settled = tuple[outbox.Claimed, outbox.RowUpdate]
OUTCOME_OF = {outbox.SENT: "sent", outbox.PENDING: "retry", outbox.PARKED: "parked"}


@dataclass
class Unrecorded:
    """Delivery outcomes the database has not taken yet, and claimed rows to hand back."""

    outcomes: dict[int, tuple[str, outbox.RowUpdate]] = field(default_factory=dict)
    releases: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.releases)


@dataclass(frozen=True)
class _InFlight:
    """An outcome being written, and the row whose lease the write renews (None: none)."""

    settled: Settled
    renews: int | None
    written: Future[tuple[list[bool], bool]]


class Records:
    """The outbox writes of one courier (``worker``); ``relaxed``: its groups of outcomes need not
    wait for PostgreSQL's disk flush (a lane of deduplicated channels). ``close`` ends a batch."""

    def __init__(self, engine: Engine, worker: str, relaxed: bool) -> None:
        self.engine, self.worker, self.relaxed = engine, worker, relaxed
        self.unrecorded = Unrecorded()
        self._conn: Connection | None = None  # the batch's, for single outcomes
        self._writer = Writer(f"outcomes {worker}")
        self._inflight: _InFlight | None = None
        self._handoff = threading.Lock()  # ``finish`` from a stop's thread too

    def start(self, settled: Settled, stats: Counter[str], confirm: tuple[int, datetime] | None) -> None:
        """Write one outcome, with the lease of ``confirm`` (as ``record``), on the writer's
        thread; ``finish`` collects it. The one before is collected first: one at a time.
        Raises SQLAlchemyError (that one's write failed) with both outcomes kept."""
        try:
            self.finish(stats)
        except SQLAlchemyError:
            self._keep([settled], stats)
            raise
        written = self._writer.submit(partial(self._record_one, settled, confirm))
        self._inflight = _InFlight(settled, confirm[0] if confirm else None, written)

    def finish(self, stats: Counter[str], timeout: float | None = None) -> int | None:
        """Wait for the outcome in flight, if any, and count it in ``stats``; returns the row
        whose lease its write found another worker holding (then not to be sent), else None.
        Raises SQLAlchemyError with the outcome kept (``unrecorded``), and TimeoutError after
        ``timeout`` seconds (the write goes on, uncollected)."""
        with self._handoff:
            inflight, self._inflight = self._inflight, None
        if inflight is None:
            return None
        try:
            (kept,), holds = inflight.written.result(timeout)
        except SQLAlchemyError:
            self._keep([inflight.settled], stats)
            raise
        stats[OUTCOME_OF[inflight.settled[1].status] if kept else "lost"] += 1
        return None if holds else inflight.renews

    def _keep(self, settled: list[Settled], stats: Counter[str]) -> None:
        for row, update in settled:
            self.unrecorded.outcomes[row.id] = (row.idem_key, update)
        stats["unrecorded"] += len(settled)

    def record(
        self, settled: list[Settled], stats: Counter[str], confirm: tuple[int, datetime] | None = None
    ) -> bool:
        """Record ``settled``; with ``confirm`` (the row to send next, and a new end for its lease),
        extend that row's lease in the same transaction. Returns whether this worker still holds
        it. Counts each outcome in ``stats`` (sent, retry, parked; lost when the row went to
        another worker). Raises SQLAlchemyError with the outcomes kept (``unrecorded``)."""
        try:
            self.finish(stats)
        except SQLAlchemyError:
            self._keep(settled, stats)
            raise
        try:
            if len(settled) == 1 and not self.relaxed:
                kept, holds = self._record_one(settled[0], confirm)
            else:
                kept, holds = self._record_group(settled, confirm)
        except SQLAlchemyError:
            self._keep(settled, stats)
            raise
        for (_row, update), ok in zip(settled, kept, strict=True):
            stats[OUTCOME_OF[update.status] if ok else "lost"] += 1
        return holds

    def _record_one(self, settled: Settled, confirm: tuple[int, datetime] | None) -> tuple[list[bool], bool]:
        row, update = settled
        for retry in (True, False):
            conn = self._connection()
            try:
                with conn.begin():
                    kept, holds = outbox.record_and_renew(conn, self.worker, row.id, update, confirm)
                return [kept], holds
            except DBAPIError as exc:
                self.close()
                if not (retry and exc.connection_invalidated):
                    raise
            except SQLAlchemyError:
                self.close()
                raise
        raise AssertionError("unreachable: the second try returns or raises")

    def _record_group(
        self, settled: list[Settled], confirm: tuple[int, datetime] | None
    ) -> tuple[list[bool], bool]:
        with self.engine.begin() as conn:
            if self.relaxed:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            kept = outbox.record_many(conn, self.worker, [(row.id, update) for row, update in settled])
            holds = confirm is None or bool(outbox.renew(conn, [confirm[0]], self.worker, confirm[1]))
        return kept, holds

    def _connection(self) -> Connection:
        """The batch's connection (checked out, and pinged, once): on PostgreSQL in autocommit,
        where a single statement is its own transaction without a BEGIN sent first."""
        if self._conn is None:
            conn = self.engine.connect()
            if is_postgres(self.engine):
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Give the batch's connection back to the pool (the end of a batch, or a failed write)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()

    def release(self, rows: Sequence[outbox.Claimed], stats: Counter[str]) -> None:
        """Hand ``rows`` back unsent; on failure they are noted to hand back later."""
        ids = [row.id for row in rows]
        try:
            self.finish(stats)
            with self.engine.begin() as conn:
                released = outbox.release(conn, self.worker, ids, attempted=False)
        except SQLAlchemyError:
            self.unrecorded.releases.update(ids)
            raise
        stats["released"] += released

    def renew(self, rows: Sequence[outbox.Claimed], until: datetime, stats: Counter[str]) -> set[int]:
        """Extend the lease on ``rows`` to ``until`` (the outcome in flight collected first);
        the ids still held. On failure they are noted to hand back."""
        try:
            self.finish(stats)
            with self.engine.begin() as conn:
                return outbox.renew(conn, [r.id for r in rows], self.worker, until)
        except SQLAlchemyError:
            self.unrecorded.releases.update(r.id for r in rows)
            raise

    def flush(self, stats: Counter[str]) -> tuple[int, int]:
        """Write the outcomes kept while the database was unreachable and hand back the rows
        not sent; returns (outcomes written, rows handed back). Raises SQLAlchemyError (keeping
        them all) if it still fails."""
        pending = self.unrecorded
        with self.engine.begin() as conn:
            kept = {
                row_id: outbox.record(conn, row_id, self.worker, update)
                for row_id, (_key, update) in pending.outcomes.items()
            }
            released = outbox.release(conn, self.worker, sorted(pending.releases), attempted=False)
        for row_id, ok in kept.items():
            stats[OUTCOME_OF[pending.outcomes[row_id][1].status] if ok else "lost"] += 1
        stats["released"] += released
        self.unrecorded = Unrecorded()
        return len(kept), released

    def record_kept(self, conn: Connection, wait: float = 2.0) -> int:
        """Record the outcomes still kept in memory, on ``conn`` (the one in flight first
        collected, waiting ``wait`` seconds at most, or kept if its write failed); returns how
        many were."""
        with contextlib.suppress(SQLAlchemyError, TimeoutError):
            self.finish(Counter(), wait)
        recorded = sum(
            outbox.record(conn, row_id, self.worker, update)
            for row_id, (_key, update) in self.unrecorded.outcomes.items()
        )
        self.unrecorded = Unrecorded()
        return recorded
