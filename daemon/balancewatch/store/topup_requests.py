"""Top-up requests in SQL: recorded once per episode, claimed, answered, closed.

A request is decided like a notification: in the transaction that moves the
step's state, under a unique key derived from the same (rule, account,
currency, step, episode), so restarts and several instances never ask twice.

Statuses: ``pending`` (the hook has not accepted it yet: waiting for its first
call or a retry at ``next_attempt_at``), ``requested`` (the hook accepted it;
the top-up is awaited in the ledger), ``succeeded`` (a top-up credit arrived,
or the hook said it charged), ``failed`` (refused, given up on, or reported
failed; ``last_error`` says why). Only the first two are open; at most one
open request per balance is the evaluator's rule, not a constraint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    LEDGER_TABLE,
    TOPUP_REQUEST_TABLE,
)

OPEN = ("pending", "requested")


def open_requests(conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (account, currency) keys among ``keys`` with a request still open."""
    if not keys:
        return set()
    query = select(TOPUP_REQUEST_TABLE.c.account_id, TOPUP_REQUEST_TABLE.c.currency).where(
        TOPUP_REQUEST_TABLE.c.account_id.in_(sorted({k[0] for k in keys})),
        TOPUP_REQUEST_TABLE.c.status.in_(OPEN),
    )
    wanted = set(keys)
    return {(r.account_id, r.currency) for r in conn.execute(query) if (r.account_id, r.currency) in wanted}


def record(
    conn: Connection, idem_key: str, rule_id: str, account_id: str, currency: str, amount: int, now: datetime
) -> bool:
    """Insert a pending request unless its key exists; True when a new one was recorded."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(TOPUP_REQUEST_TABLE)
        .values(
            idem_key=idem_key,
            rule_id=rule_id,
            account_id=account_id,
            currency=currency,
            amount=amount,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[TOPUP_REQUEST_TABLE.c.idem_key])
        # RETURNING, not rowcount: psycopg reports -1 rows for an INSERT that returns its key.
        .returning(TOPUP_REQUEST_TABLE.c.id)
    )
    return conn.execute(stmt).first() is not None


# --- what became of a request ------------------------------------------------------------------------

PENDING, REQUESTED, SUCCEEDED, FAILED = "pending", "requested", "succeeded", "failed"
STATUSES = (PENDING, REQUESTED, SUCCEEDED, FAILED)


@dataclass(frozen=True, slots=True)
class Request:
    """One topup_request row."""

    id: int
    idem_key: str
    rule_id: str
    account_id: str
    currency: str
    amount: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    hook_response: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def open(self) -> bool:
        return self.status in OPEN


def _request(row: Any) -> Request:
    return Request(**{name: getattr(row, name) for name in Request.__slots__})


def arrived() -> ColumnElement[bool]:
    """True for a request whose top-up is in the ledger: a ``top-up`` credit to its account,
    or to one of its subaccounts (which draw on it), in its currency, at or after it was made."""
    own = (
        select(LEDGER_TABLE.c.id)
        .where(
            LEDGER_TABLE.c.account_id == TOPUP_REQUEST_TABLE.c.account_id,
            LEDGER_TABLE.c.currency == TOPUP_REQUEST_TABLE.c.currency,
            LEDGER_TABLE.c.kind == "top-up",
            LEDGER_TABLE.c.amount > 0,
            LEDGER_TABLE.c.occurred_at >= TOPUP_REQUEST_TABLE.c.created_at,
        )
        .exists()
    )
    subaccounts = (
        select(LEDGER_TABLE.c.id)
        .select_from(LEDGER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == LEDGER_TABLE.c.account_id))
        .where(
            ACCOUNT_TABLE.c.parent_id == TOPUP_REQUEST_TABLE.c.account_id,
            LEDGER_TABLE.c.currency == TOPUP_REQUEST_TABLE.c.currency,
            LEDGER_TABLE.c.kind == "top-up",
            LEDGER_TABLE.c.amount > 0,
            LEDGER_TABLE.c.occurred_at >= TOPUP_REQUEST_TABLE.c.created_at,
        )
        .exists()
    )
    return or_(own, subaccounts)


def any_open(conn: Connection) -> bool:
    """Whether any request is pending or requested (a cheap look before any writing)."""
    return (
        conn.execute(
            select(TOPUP_REQUEST_TABLE.c.id).where(TOPUP_REQUEST_TABLE.c.status.in_(OPEN)).limit(1)
        ).first()
        is not None
    )


def mark_arrived(conn: Connection, now: datetime) -> list[Request]:
    """Mark every open request whose top-up is in the ledger ``succeeded``; return them.

    One statement over all open requests. A pending one is never handed to the
    hook afterwards: the credit already came (an owner topping up by hand).
    """
    stmt = (
        update(TOPUP_REQUEST_TABLE)
        .where(TOPUP_REQUEST_TABLE.c.status.in_(OPEN), arrived())
        .values(status=SUCCEEDED, updated_at=now)
        .returning(*TOPUP_REQUEST_TABLE.c)
    )
    return sorted((_request(r) for r in conn.execute(stmt)), key=lambda r: r.id)


def overdue(conn: Connection, accepted_before: datetime) -> list[int]:
    """Ids of the requests the hook accepted before ``accepted_before`` whose top-up has not
    arrived (still ``requested``; ``updated_at`` is when the hook accepted), oldest first."""
    query = (
        select(TOPUP_REQUEST_TABLE.c.id)
        .where(TOPUP_REQUEST_TABLE.c.status == REQUESTED, TOPUP_REQUEST_TABLE.c.updated_at < accepted_before)
        .order_by(TOPUP_REQUEST_TABLE.c.id)
    )
    return list(conn.execute(query).scalars())


def claim(conn: Connection, now: datetime, lease: timedelta) -> Request | None:
    """Claim the pending request due first, for ``lease``; None when none is due.

    Compare-and-set: the row is updated only where it is still pending and due,
    and its ``attempts`` goes up by one, so the outcome of this attempt is recorded
    only while ``attempts`` still has the value returned here. ``next_attempt_at``
    moves to ``now + lease``: if this instance dies mid-call, another takes the
    request over once the lease has passed. On PostgreSQL the pick skips rows
    another instance has locked.
    """
    due = and_(
        TOPUP_REQUEST_TABLE.c.status == PENDING, TOPUP_REQUEST_TABLE.c.next_attempt_at <= now, ~arrived()
    )
    pick = (
        select(TOPUP_REQUEST_TABLE.c.id)
        .where(due)
        .order_by(TOPUP_REQUEST_TABLE.c.next_attempt_at, TOPUP_REQUEST_TABLE.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(of=TOPUP_REQUEST_TABLE, skip_locked=True)
    picked = conn.execute(pick).scalar()
    if picked is None:
        return None
    stmt = (
        update(TOPUP_REQUEST_TABLE)
        .where(TOPUP_REQUEST_TABLE.c.id == picked, due)
        .values(attempts=TOPUP_REQUEST_TABLE.c.attempts + 1, next_attempt_at=now + lease, updated_at=now)
        .returning(*TOPUP_REQUEST_TABLE.c)
    )
    row = conn.execute(stmt).first()
    return _request(row) if row is not None else None


def _held(request_id: int, attempts: int) -> ColumnElement[bool]:
    return and_(
        TOPUP_REQUEST_TABLE.c.id == request_id,
        TOPUP_REQUEST_TABLE.c.status == PENDING,
        TOPUP_REQUEST_TABLE.c.attempts == attempts,
    )


def mark_answered(
    conn: Connection, request: Request, status: str, now: datetime, response: str | None
) -> bool:
    """Record that the hook accepted (``requested``) or charged (``succeeded``) the claimed
    ``request``; False if it was taken over or closed meanwhile."""
    result = conn.execute(
        update(TOPUP_REQUEST_TABLE)
        .where(_held(request.id, request.attempts))
        .values(status=status, hook_response=response, last_error=None, updated_at=now)
    )
    return result.rowcount == 1


def mark_retry(conn: Connection, request: Request, now: datetime, next_attempt: datetime, error: str) -> bool:
    """Put the claimed ``request`` back to wait until ``next_attempt``; False if no longer held."""
    result = conn.execute(
        update(TOPUP_REQUEST_TABLE)
        .where(_held(request.id, request.attempts))
        .values(next_attempt_at=next_attempt, last_error=error, updated_at=now)
    )
    return result.rowcount == 1


def close(
    conn: Connection,
    request_id: int,
    status: str,
    now: datetime,
    note: str | None,
    *,
    attempts: int | None = None,
    response: str | None = None,
) -> Request | None:
    """Set an open request to ``succeeded`` or ``failed`` with ``note`` (``last_error``).

    Compare-and-set on the request being open (and, given ``attempts``, still held
    by that attempt); returns the row as closed, or None when it was not open.
    """
    where = [TOPUP_REQUEST_TABLE.c.id == request_id, TOPUP_REQUEST_TABLE.c.status.in_(OPEN)]
    if attempts is not None:
        where += [TOPUP_REQUEST_TABLE.c.status == PENDING, TOPUP_REQUEST_TABLE.c.attempts == attempts]
    values: dict[str, Any] = {"status": status, "last_error": note, "updated_at": now}
    if response is not None:
        values["hook_response"] = response
    row = conn.execute(
        update(TOPUP_REQUEST_TABLE).where(*where).values(**values).returning(*TOPUP_REQUEST_TABLE.c)
    ).first()
    return _request(row) if row is not None else None


def get(conn: Connection, request_id: int) -> Request | None:
    row = conn.execute(select(TOPUP_REQUEST_TABLE).where(TOPUP_REQUEST_TABLE.c.id == request_id)).first()
    return _request(row) if row is not None else None


def listing(
    conn: Connection, *, status: str | None = None, account_id: str | None = None, limit: int = 100
) -> list[Request]:
    """Requests, newest first, optionally of one status and one account."""
    query = select(TOPUP_REQUEST_TABLE).order_by(TOPUP_REQUEST_TABLE.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(TOPUP_REQUEST_TABLE.c.status == status)
    if account_id is not None:
        query = query.where(TOPUP_REQUEST_TABLE.c.account_id == account_id)
    return [_request(r) for r in conn.execute(query)]
