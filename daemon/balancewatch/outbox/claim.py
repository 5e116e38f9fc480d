"""The lease on a row: claim it, renew it, record what an attempt left, hand it back.

Every write is a compare-and-set on ``status`` and ``claimed_by``, so a worker
that lost its claim (its lease ran out, or it was judged dead) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from balancewatch.outbox.rows import PENDING, SENDING, Attachment, Claimed, RowUpdate
from balancewatch.store.tables import OUTBOX_TABLE

outbox = OUTBOX_TABLE.c

_CLAIMED_COLUMNS = (
    outbox.id,
    outbox.idem_key,
    outbox.message_id,
    outbox.sender,
    outbox.recipients,
    outbox.subject,
    outbox.text,
    outbox.html,
    outbox.attempts,
    outbox.created_at,
    outbox.attachments,
    outbox.deliveries,
    outbox.channel,
)


def _due(now: datetime, dead: Collection[str] = ()) -> ColumnElement[bool]:
    taken_over = outbox.lease_until < now
    if dead:
        taken_over = or_(taken_over, outbox.claimed_by.in_(list(dead)))
    return or_(
        and_(outbox.status == PENDING, outbox.next_attempt_at <= now),
        and_(outbox.status == SENDING, taken_over),
    )


def _due_ids(now: datetime, dead: Collection[str], limit: int) -> tuple[Select[Any], Select[Any]]:
    """The two queries picking due rows, in the order they are asked: rows whose claim is to
    be taken over (few: an index on status finds them), then pending rows whose next attempt
    has come, earliest first, so the index on (status, next_attempt_at) is read in order and
    stops at ``limit``: a claim costs the same with ten thousand rows waiting as with ten."""
    taken_over = outbox.lease_until < now
    if dead:
        taken_over = or_(taken_over, outbox.claimed_by.in_(list(dead)))
    held = select(outbox.id).where(outbox.status == SENDING, taken_over).order_by(outbox.id)
    waiting = select(outbox.id).where(outbox.status == PENDING, outbox.next_attempt_at <= now)
    return held, waiting.order_by(outbox.next_attempt_at)


def claim(
    conn: Connection,
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
    key: str | None = None,
    dead: Collection[str] = (),
    channels: Collection[str] | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows (or just the row of ``key``) for ``worker`` until ``now + lease``,
    only of ``channels`` when given (those ``worker`` can deliver).

    Due: pending rows whose next attempt has come (earliest first), and rows still claimed by
    another worker whose lease has run out or which is in ``dead`` (known to
    have died or stopped; taken first). The ids are picked first (locking them with ``SKIP
    LOCKED`` on PostgreSQL, so concurrent workers take different rows without
    waiting), then updated only where still due: a row claimed meanwhile is
    not handed out twice. Picking in a statement of its own keeps ``limit``
    exact; as a subquery of the UPDATE, PostgreSQL may scan it again and claim
    far more rows.
    """
    picked: list[int] = []
    for ids in _due_ids(now, dead, limit):
        if key is not None:
            ids = ids.where(outbox.idem_key == key)
        if channels is not None:
            ids = ids.where(outbox.channel.in_(list(channels)))
        if conn.dialect.name == "postgresql":
            ids = ids.with_for_update(skip_locked=True)
        picked += conn.execute(ids.limit(limit - len(picked))).scalars()
        if len(picked) >= limit:
            break
    if not picked:
        return []
    stmt = (
        update(OUTBOX_TABLE)
        .where(outbox.id.in_(picked), _due(now, dead))
        .values(status=SENDING, claimed_by=worker, lease_until=now + lease, attempts=outbox.attempts + 1)
        .returning(*_CLAIMED_COLUMNS)
    )
    return sorted((_claimed(r) for r in conn.execute(stmt)), key=lambda c: c.id)


def _claimed(r: Row[Any]) -> Claimed:
    return Claimed(
        r.id,
        r.idem_key,
        r.message_id,
        r.sender,
        tuple(r.recipients),
        r.subject,
        r.text,
        r.html,
        r.attempts,
        r.created_at,
        tuple(Attachment(**a) for a in r.attachments or ()),
        dict(r.deliveries or {}),
        r.channel,
    )


def note_undeliverable(
    conn: Connection, channels: Collection[str], now: datetime, reason: Callable[[str], str]
) -> int:
    """Put ``reason(channel)`` in ``last_error`` of the due pending rows of each channel not in
    ``channels`` (those this instance cannot deliver) that have no error yet; returns how many.

    They stay pending and due, unclaimed, for an instance that delivers their channel; an
    error a real attempt left is kept, and a row is noted once, not at every batch.
    """
    waiting = and_(
        outbox.status == PENDING,
        outbox.next_attempt_at <= now,
        outbox.channel.not_in(list(channels)),
        outbox.last_error.is_(None),
    )
    noted = 0
    for channel in conn.execute(select(outbox.channel).distinct().where(waiting)).scalars().all():
        stmt = update(OUTBOX_TABLE).where(waiting, outbox.channel == channel)
        noted += conn.execute(stmt.values(last_error=reason(channel))).rowcount
    return noted


def claimers(conn: Connection, worker: str) -> list[str]:
    """The other workers that hold claimed rows now."""
    query = select(outbox.claimed_by).distinct().where(outbox.status == SENDING, outbox.claimed_by != worker)
    return [name for name in conn.execute(query).scalars() if name]


def select_by_key(key: str) -> Select[Any]:
    """The row of ``key``, every column."""
    return select(OUTBOX_TABLE).where(outbox.idem_key == key)


def _mine(row_id: int, worker: str) -> ColumnElement[bool]:
    return and_(outbox.id == row_id, outbox.status == SENDING, outbox.claimed_by == worker)


def renew(conn: Connection, row_ids: Sequence[int], worker: str, until: datetime) -> set[int]:
    """Extend ``worker``'s lease on ``row_ids`` to ``until``; return the ids it still holds."""
    if not row_ids:
        return set()
    result = conn.execute(
        update(OUTBOX_TABLE)
        .where(outbox.id.in_(list(row_ids)), outbox.status == SENDING, outbox.claimed_by == worker)
        .values(lease_until=until)
        .returning(outbox.id)
    )
    return set(result.scalars())


def record(conn: Connection, row_id: int, worker: str, outcome: RowUpdate) -> bool:
    """Write what an attempt left in the row; False if ``worker`` lost its claim meanwhile."""
    values: dict[str, Any] = {
        "status": outcome.status,
        "deliveries": {address: dict(entry) for address, entry in outcome.deliveries.items()},
        "lease_until": None,
        "last_error": outcome.last_error,
    }
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    if outcome.sent_at is not None:
        values["sent_at"] = outcome.sent_at
    return conn.execute(update(OUTBOX_TABLE).where(_mine(row_id, worker)).values(**values)).rowcount == 1


_RECORD_MANY = (
    update(OUTBOX_TABLE)
    .where(
        outbox.id == bindparam("row_id"), outbox.status == SENDING, outbox.claimed_by == bindparam("worker")
    )
    .values(
        status=bindparam("new_status"),
        deliveries=bindparam("new_deliveries", type_=outbox.deliveries.type),
        lease_until=None,
        last_error=bindparam("new_error", type_=outbox.last_error.type),
        # Left as they are where the outcome has none (as ``record`` leaves them out).
        next_attempt_at=func.coalesce(
            bindparam("new_next", type_=outbox.next_attempt_at.type), outbox.next_attempt_at
        ),
        sent_at=func.coalesce(bindparam("new_sent", type_=outbox.sent_at.type), outbox.sent_at),
    )
)


def record_many(conn: Connection, worker: str, outcomes: Sequence[tuple[int, RowUpdate]]) -> list[bool]:
    """``record`` for many rows in one statement executed for each (a group of outcomes written
    in one transaction); for each row, whether ``worker`` still held it."""
    if len(outcomes) < 2:
        return [record(conn, row_id, worker, outcome) for row_id, outcome in outcomes]
    params = [
        {
            "row_id": row_id,
            "worker": worker,
            "new_status": outcome.status,
            "new_deliveries": {address: dict(entry) for address, entry in outcome.deliveries.items()},
            "new_error": outcome.last_error,
            "new_next": outcome.next_attempt_at,
            "new_sent": outcome.sent_at,
        }
        for row_id, outcome in outcomes
    ]
    if conn.execute(_RECORD_MANY, params).rowcount == len(params):
        return [True] * len(params)
    # Some row went to another worker meanwhile: which ones, the rows themselves say.
    ids = [row_id for row_id, _outcome in outcomes]
    held = select(outbox.id).where(outbox.id.in_(ids), outbox.claimed_by == worker, outbox.status != SENDING)
    kept = set(conn.execute(held).scalars())
    return [row_id in kept for row_id in ids]


_THIS = outbox.id == bindparam("row_id")


def _for_this(value: Any, column: Any) -> Any:
    """``value`` for the row recorded, the column as it is for the row renewed."""
    return case((_THIS, value), else_=column)


_RECORD_AND_RENEW = (
    update(OUTBOX_TABLE)
    .where(
        outbox.id.in_([bindparam("row_id"), bindparam("next_id")]),
        outbox.status == SENDING,
        outbox.claimed_by == bindparam("worker"),
    )
    .values(
        status=_for_this(bindparam("new_status", type_=outbox.status.type), outbox.status),
        deliveries=_for_this(bindparam("new_deliveries", type_=outbox.deliveries.type), outbox.deliveries),
        lease_until=case((_THIS, None), else_=bindparam("until", type_=outbox.lease_until.type)),
        last_error=_for_this(bindparam("new_error", type_=outbox.last_error.type), outbox.last_error),
        next_attempt_at=_for_this(
            func.coalesce(bindparam("new_next", type_=outbox.next_attempt_at.type), outbox.next_attempt_at),
            outbox.next_attempt_at,
        ),
        sent_at=_for_this(
            func.coalesce(bindparam("new_sent", type_=outbox.sent_at.type), outbox.sent_at), outbox.sent_at
        ),
    )
    .returning(outbox.id)
)


def record_and_renew(
    conn: Connection, worker: str, row_id: int, outcome: RowUpdate, renewal: tuple[int, datetime] | None
) -> tuple[bool, bool]:
    """``record`` of ``row_id`` and, with ``renewal`` (the row to send next, the new end of its
    lease), ``renew`` of that row, in one statement: on a connection in autocommit, one round trip
    and one commit for an outcome that must be durable before the next message goes. Returns
    (whether ``worker`` still held ``row_id``, whether it still holds the next row; True without
    one)."""
    next_id, until = renewal or (None, None)
    params = {
        "row_id": row_id,
        "next_id": row_id if next_id is None else next_id,
        "worker": worker,
        "new_status": outcome.status,
        "new_deliveries": {address: dict(entry) for address, entry in outcome.deliveries.items()},
        "new_error": outcome.last_error,
        "new_next": outcome.next_attempt_at,
        "new_sent": outcome.sent_at,
        "until": until,
    }
    held = set(conn.execute(_RECORD_AND_RENEW, params).scalars())
    return row_id in held, next_id is None or next_id in held


def release(conn: Connection, worker: str, row_ids: Sequence[int] | None = None, *, attempted: bool) -> int:
    """Hand ``worker``'s claimed rows (``row_ids``, or all it holds) back as pending, due at once.

    ``attempted`` False: they were never sent, so the claim does not count
    as an attempt. Returns how many rows were released.
    """
    where = and_(outbox.status == SENDING, outbox.claimed_by == worker)
    if row_ids is not None:
        if not row_ids:
            return 0
        where = and_(where, outbox.id.in_(list(row_ids)))
    values: dict[str, Any] = {"status": PENDING, "lease_until": None, "claimed_by": None}
    if not attempted:
        values["attempts"] = outbox.attempts - 1
    return conn.execute(update(OUTBOX_TABLE).where(where).values(**values)).rowcount
