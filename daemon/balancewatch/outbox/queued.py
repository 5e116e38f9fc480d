"""Rows waiting for the render stage (``queued``): taken under a lease, then written rendered
(``pending``, ready for delivery) or noted as not rendered (tried again later, or ``parked``).

Taking is a compare-and-set like delivery's claim (``claim.py``): the ids are picked first
(``SKIP LOCKED`` on PostgreSQL), then leased only where still queued and free, so two instances
never render the same row at once, and a renderer that died leaves its rows to the next one: at
once when it is known to have stopped or died (``dead``), else once its lease has run out. Every
write checks the lease is still the writer's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select, update

from balancewatch.outbox.rows import PARKED, PENDING, QUEUED
from balancewatch.store.tables import OUTBOX_TABLE

outbox = OUTBOX_TABLE.c


@dataclass(frozen=True, slots=True)
class Queued:
    """A row taken for rendering: its template, its packed context, who it is about, and what
    its give-up window starts from (``retry.give_up_from`` of its ``created_at`` and
    ``deliveries``: a row queued again by hand starts a new one)."""

    id: int
    idem_key: str
    template: str | None
    context: str | None
    attempts: int
    created_at: datetime
    rule_id: str | None
    account_id: str | None
    recipients: tuple[str, ...] = ()
    deliveries: Mapping[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """A queued row's message, rendered."""

    id: int
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True, slots=True)
class NotRendered:
    """Why a queued row was not rendered, and when to try again (None: never; it is parked)."""

    id: int
    error: str
    retry_at: datetime | None


def holders(conn: Connection, worker: str) -> list[str]:
    """The other workers that hold queued rows now."""
    query = select(outbox.claimed_by).distinct()
    query = query.where(outbox.status == QUEUED, outbox.claimed_by.is_not(None), outbox.claimed_by != worker)
    return [name for name in conn.execute(query).scalars() if name]


def take_queued(
    conn: Connection, worker: str, now: datetime, limit: int, lease: timedelta, dead: Collection[str] = ()
) -> list[Queued]:
    """Lease up to ``limit`` queued rows whose next attempt has come to ``worker`` until
    ``now + lease``, the earliest first: rows nobody holds, whose lease has run out, or held
    by a worker in ``dead`` (an instance that stopped or died: taken at once)."""
    free = or_(outbox.lease_until.is_(None), outbox.lease_until < now)
    if dead:
        free = or_(free, outbox.claimed_by.in_(list(dead)))
    due = and_(outbox.status == QUEUED, outbox.next_attempt_at <= now, free)
    # In the order of the index on (status, next_attempt_at), so the scan stops at ``limit``.
    ids = select(outbox.id).where(due).order_by(outbox.next_attempt_at).limit(limit)
    if conn.dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    picked = list(conn.execute(ids).scalars())
    if not picked:
        return []
    stmt = (
        update(OUTBOX_TABLE)
        .where(outbox.id.in_(picked), due)
        .values(claimed_by=worker, lease_until=now + lease)
        .returning(
            outbox.id,
            outbox.idem_key,
            outbox.template,
            outbox.context,
            outbox.attempts,
            outbox.created_at,
            outbox.rule_id,
            outbox.account_id,
            outbox.recipients,
            outbox.deliveries,
        )
    )
    rows = [
        Queued(
            r.id,
            r.idem_key,
            r.template,
            r.context,
            r.attempts,
            r.created_at,
            r.rule_id,
            r.account_id,
            tuple(r.recipients or ()),
            dict(r.deliveries or {}),
        )
        for r in conn.execute(stmt)
    ]
    return sorted(rows, key=lambda q: q.id)


def due_now(conn: Connection, now: datetime) -> int:
    """Make every queued row waiting for a later try due at ``now`` (the templates changed: a
    fixed one renders it at once, not after its backoff). Returns how many."""
    stmt = (
        update(OUTBOX_TABLE)
        .where(outbox.status == QUEUED, outbox.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    return conn.execute(stmt).rowcount or 0


def release_queued(conn: Connection, worker: str) -> int:
    """Free the queued rows ``worker`` holds (an earlier run of it, at start): due to be taken
    again at once. Returns how many."""
    stmt = (
        update(OUTBOX_TABLE)
        .where(outbox.status == QUEUED, outbox.claimed_by == worker)
        .values(claimed_by=None, lease_until=None)
    )
    return conn.execute(stmt).rowcount or 0


def _held(worker: str) -> list[object]:
    return [
        outbox.id == bindparam("row_id"),
        outbox.status == QUEUED,
        outbox.claimed_by == worker,
    ]


def write_rendered(conn: Connection, worker: str, now: datetime, written: Sequence[Written]) -> int:
    """Store each row's message and make it pending, due at ``now`` (its context dropped; its
    attempts back at zero: rendering tries are not delivery attempts); only rows whose lease is
    still ``worker``'s. Returns how many were written."""
    if not written:
        return 0
    stmt = (
        update(OUTBOX_TABLE)
        .where(*_held(worker))  # type: ignore[arg-type]
        .values(
            status=PENDING,
            subject=bindparam("rendered_subject"),
            text=bindparam("rendered_text"),
            html=bindparam("rendered_html"),
            context=None,
            attempts=0,
            next_attempt_at=now,
            last_error=None,
            claimed_by=None,
            lease_until=None,
        )
    )
    params = [
        {"row_id": w.id, "rendered_subject": w.subject, "rendered_text": w.text, "rendered_html": w.html}
        for w in written
    ]
    return conn.execute(stmt, params).rowcount or 0


def note_not_rendered(conn: Connection, worker: str, failures: Sequence[NotRendered]) -> int:
    """Record why each row was not rendered: queued again for ``retry_at`` with one more attempt,
    or parked when ``retry_at`` is None (its context kept, so ``outbox retry`` can queue it
    again). Only rows whose lease is still ``worker``'s; returns how many were noted."""
    count = 0
    for parked in (False, True):
        rows = [f for f in failures if (f.retry_at is None) == parked]
        if not rows:
            continue
        values: dict[str, object] = {
            "attempts": outbox.attempts + 1,
            "last_error": bindparam("error"),
            "claimed_by": None,
            "lease_until": None,
        }
        if parked:
            values["status"] = PARKED
        else:
            values["next_attempt_at"] = bindparam("retry_at")
        stmt = update(OUTBOX_TABLE).where(*_held(worker)).values(values)  # type: ignore[arg-type]
        params = [
            {"row_id": f.id, "error": f.error, **({} if parked else {"retry_at": f.retry_at})} for f in rows
        ]
        count += conn.execute(stmt, params).rowcount or 0
    return count
