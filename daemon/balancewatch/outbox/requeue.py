"""Parked recipients put back in line by an operator (``outbox retry``).

Only parked rows are touched, so a row a daemon is sending never changes under it. A row parked
before its message was rendered (``render/stage.py`` gave up on it) goes back to the render
stage, queued, with every recipient given a new give-up window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, or_, select, update

from balancewatch.outbox.query import Filters
from balancewatch.outbox.rows import PARKED, PENDING, QUEUED, SENDING, SENT
from balancewatch.store.tables import OUTBOX_TABLE

outbox = OUTBOX_TABLE.c


@dataclass(frozen=True, slots=True)
class Requeued:
    """A parked row put back in line: the recipients to send to again, and those who have it."""

    id: int
    idem_key: str
    recipients: tuple[str, ...]
    delivered: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotRequeued:
    """A row asked for that was left as it was, and why (``is sent; nothing to retry``)."""

    ref: str
    reason: str


_LEFT_AS_IS = {
    SENT: "is sent; nothing to retry",
    PENDING: "is pending: its delivery is still under way; nothing to retry",
    QUEUED: "is queued: its message is still to be rendered; nothing to retry",
    SENDING: "is being sent now; nothing to retry",
}


def requeue_refs(
    conn: Connection, refs: Sequence[str], now: datetime
) -> tuple[list[Requeued], list[NotRequeued]]:
    """Re-queue the parked rows named by ``refs`` (ids or idempotency keys), in the caller's
    transaction. The rows left as they were (not parked, not found) come back with the reason;
    a row named twice is re-queued once."""
    ids = [int(ref) for ref in refs if _is_id(ref)]
    named = select(*_REQUEUE_COLUMNS).where(or_(outbox.id.in_(ids), outbox.idem_key.in_(list(refs))))
    rows = conn.execute(_lock(conn, named)).all()
    done: list[Requeued] = []
    left: list[NotRequeued] = []
    seen: set[int] = set()
    for ref in refs:
        row = _named(rows, ref)
        if row is None:
            shown = f"#{ref}" if _is_id(ref) else repr(ref)
            left.append(NotRequeued(shown, "is not in the outbox; `balancewatch outbox list` shows the ids"))
        elif row.id in seen:
            continue
        elif row.status != PARKED:
            left.append(NotRequeued(f"#{row.id}", _LEFT_AS_IS.get(row.status, f"is {row.status}")))
        else:
            _requeue_one(conn, row, now, done, left)
        if row is not None:
            seen.add(row.id)
    return done, left


def requeue_parked(
    conn: Connection, filters: Filters, now: datetime
) -> tuple[list[Requeued], list[NotRequeued]]:
    """Re-queue every parked row matching ``filters`` (whatever statuses it names), oldest first,
    in the caller's transaction; the rows left as they were come back with the reason."""
    parked = replace(filters, statuses=(PARKED,))
    done: list[Requeued] = []
    left: list[NotRequeued] = []
    for row in conn.execute(_lock(conn, select(*_REQUEUE_COLUMNS).where(*parked.where()))).all():
        _requeue_one(conn, row, now, done, left)
    return done, left


_REQUEUE_COLUMNS = (
    outbox.id,
    outbox.idem_key,
    outbox.status,
    outbox.recipients,
    outbox.deliveries,
    outbox.context.is_not(None).label("unrendered"),
)


def _is_id(ref: str) -> bool:
    return ref.isdigit() and len(ref) < 19  # a row id fits in 64 bits; a longer number is a key


def _named(rows: Sequence[Row[Any]], ref: str) -> Row[Any] | None:
    """The row ``ref`` names: by id first, as ``outbox show`` reads it, else by key."""
    if _is_id(ref):
        row = next((row for row in rows if row.id == int(ref)), None)
        if row is not None:
            return row
    return next((row for row in rows if row.idem_key == ref), None)


def _lock(conn: Connection, query: Select[Any]) -> Select[Any]:
    """``query`` in id order, its rows locked on PostgreSQL: a concurrent retry of the same rows
    waits, then finds them no longer parked. Parked rows are never claimed, so no daemon waits."""
    query = query.order_by(outbox.id)
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


def _requeue_one(
    conn: Connection, row: Row[Any], now: datetime, done: list[Requeued], left: list[NotRequeued]
) -> None:
    deliveries: dict[str, dict[str, Any]] = {a: dict(e) for a, e in (row.deliveries or {}).items()}
    if row.unrendered:
        parked = list(row.recipients)  # none was tried: the message was never rendered
    else:
        parked = [a for a in row.recipients if deliveries.get(a, {}).get("status") == PARKED]
    if not parked:
        left.append(NotRequeued(f"#{row.id}", "is parked with no recipient refused; nothing to retry"))
        return
    for address in parked:
        # A fresh start: no tries counted and a new give-up window (see give_up_from); the last
        # attempt's time and error stay, as history.
        deliveries.setdefault(address, {}).update(status=PENDING, attempts=0, requeued_at=now.isoformat())
    # Compare-and-set on ``parked``: a daemon never holds a parked row, and a concurrent retry of
    # the same row finds it pending and leaves it. ``attempts`` restarts so backoff does too.
    changed = conn.execute(
        update(OUTBOX_TABLE)
        .where(outbox.id == row.id, outbox.status == PARKED)
        .values(
            status=QUEUED if row.unrendered else PENDING,
            deliveries=deliveries,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
        )
    ).rowcount
    if changed != 1:
        left.append(NotRequeued(f"#{row.id}", "changed while being re-queued; nothing to retry"))
        return
    delivered = tuple(a for a in row.recipients if deliveries.get(a, {}).get("status") == SENT)
    done.append(Requeued(row.id, row.idem_key, tuple(parked), delivered))
