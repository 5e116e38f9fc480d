"""The outbox: every notification decided, once, and how its delivery went.

A row is inserted in the same transaction as the state change that decided
it, under a unique idempotency key; a second decision of the same thing
fails on that key instead of sending twice. Delivery claims rows with a
lease (compare-and-set; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any
instance may die at any time: an expired lease makes the row claimable again.

Statuses: ``pending`` (waiting, maybe after failed attempts), ``sending``
(claimed under a lease), ``sent``, ``parked`` (a permanent failure, with the
reason in ``last_error``; never retried, never dropped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from balancewatch.store.tables import Outbox

T = Outbox.__table__  # type: ignore[attr-defined]
C = T.c

PENDING, SENDING, SENT, PARKED = "pending", "sending", "sent", "parked"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A text file sent with a message (a report's CSV, say)."""

    filename: str
    content_type: str
    content: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A rendered notification ready to be recorded."""

    idem_key: str
    kind: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    rule_id: str | None = None
    account_id: str | None = None
    currency: str | None = None
    step: int | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row claimed for delivery."""

    id: int
    idem_key: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    attempts: int
    created_at: datetime
    attachments: tuple[Attachment, ...] = ()


def message_id(idem_key: str, domain: str) -> str:
    """A Message-ID derived from the idempotency key: a duplicate delivery is detectable."""
    digest = hashlib.sha256(idem_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def add(conn: Connection, messages: Sequence[NewMessage], now: datetime, domain: str) -> None:
    """Insert ``messages`` as pending; raises IntegrityError if a key was already decided."""
    if not messages:
        return
    rows = []
    for m in messages:
        row: dict[str, Any] = asdict(m)
        row["recipients"] = list(m.recipients)
        row["attachments"] = [asdict(a) for a in m.attachments]
        row.update(
            message_id=message_id(m.idem_key, domain),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        rows.append(row)
    conn.execute(insert(T), rows)


def _due(now: datetime) -> Any:
    return or_(
        and_(C.status == PENDING, C.next_attempt_at <= now),
        and_(C.status == SENDING, C.lease_until < now),
    )


def claim(
    conn: Connection, worker: str, now: datetime, limit: int, lease: timedelta, key: str | None = None
) -> list[Claimed]:
    """Claim up to ``limit`` due rows (or just the row of ``key``) for ``worker`` until ``now + lease``.

    The ids are picked first (locking them with ``SKIP LOCKED`` on PostgreSQL,
    so concurrent workers take different rows without waiting), then updated
    only where still due: a row claimed meanwhile is not handed out twice.
    Picking in a statement of its own keeps ``limit`` exact; as a subquery
    of the UPDATE, PostgreSQL may scan it again and claim far more rows.
    """
    ids = select(C.id).where(_due(now)).order_by(C.id).limit(limit)
    if key is not None:
        ids = ids.where(C.idem_key == key)
    if conn.dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    picked = list(conn.execute(ids).scalars())
    if not picked:
        return []
    stmt = (
        update(T)
        .where(C.id.in_(picked), _due(now))
        .values(status=SENDING, claimed_by=worker, lease_until=now + lease, attempts=C.attempts + 1)
        .returning(
            C.id,
            C.idem_key,
            C.message_id,
            C.sender,
            C.recipients,
            C.subject,
            C.text,
            C.html,
            C.attempts,
            C.created_at,
            C.attachments,
        )
    )
    rows = [
        Claimed(
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
        )
        for r in conn.execute(stmt)
    ]
    return sorted(rows, key=lambda c: c.id)


def select_by_key(key: str) -> Any:
    return select(T).where(C.idem_key == key)


def _mine(row_id: int, worker: str) -> Any:
    return and_(C.id == row_id, C.status == SENDING, C.claimed_by == worker)


def renew(conn: Connection, row_ids: Sequence[int], worker: str, until: datetime) -> set[int]:
    """Extend ``worker``'s lease on ``row_ids`` to ``until``; return the ids it still holds."""
    if not row_ids:
        return set()
    result = conn.execute(
        update(T)
        .where(C.id.in_(list(row_ids)), C.status == SENDING, C.claimed_by == worker)
        .values(lease_until=until)
        .returning(C.id)
    )
    return set(result.scalars())


def mark_sent(conn: Connection, row_id: int, worker: str, now: datetime, note: str | None = None) -> bool:
    """Record a delivery; False if the lease was lost to another worker meanwhile."""
    result = conn.execute(
        update(T)
        .where(_mine(row_id, worker))
        .values(status=SENT, sent_at=now, lease_until=None, last_error=note)
    )
    return result.rowcount == 1


def mark_retry(conn: Connection, row_id: int, worker: str, error: str, next_attempt: datetime) -> bool:
    """Put a row back to pending with its error, to be tried at ``next_attempt``."""
    result = conn.execute(
        update(T)
        .where(_mine(row_id, worker))
        .values(status=PENDING, next_attempt_at=next_attempt, lease_until=None, last_error=error)
    )
    return result.rowcount == 1


def mark_parked(conn: Connection, row_id: int, worker: str, reason: str) -> bool:
    """Park a row for good with ``reason``: it is shown, never retried."""
    result = conn.execute(
        update(T).where(_mine(row_id, worker)).values(status=PARKED, lease_until=None, last_error=reason)
    )
    return result.rowcount == 1


def backoff(attempts: int, initial: timedelta, ceiling: timedelta, row_id: int = 0) -> timedelta:
    """The delay before attempt ``attempts + 1``: ``initial`` doubled per attempt, never above ``ceiling``.

    Up to 10% is taken off, derived from the row id, so many rows failing
    together do not all retry in the same second, yet the delay stays
    reproducible. Any number of attempts works (no overflow).
    """
    doublings = min(max(attempts - 1, 0), 64)
    seconds = min(initial.total_seconds() * 2.0**doublings, ceiling.total_seconds())
    spread = (hashlib.sha256(f"{row_id}:{attempts}".encode()).digest()[0] / 255) * 0.1
    return timedelta(seconds=seconds * (1 - spread))
