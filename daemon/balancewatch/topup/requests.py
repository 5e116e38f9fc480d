"""Recording top-up requests: one per episode of a step, none while another is open.

A request is decided like a notification: in the transaction that moves the
step's state, under a unique key derived from the same (rule, account,
currency, step, episode), so restarts and several instances never ask twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.store.tables import TopupRequest

T = TopupRequest.__table__  # type: ignore[attr-defined]
C = T.c
OPEN = ("pending", "requested")


def open_requests(conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (account, currency) keys among ``keys`` with a request still open."""
    if not keys:
        return set()
    query = select(C.account_id, C.currency).where(
        C.account_id.in_(sorted({k[0] for k in keys})), C.status.in_(OPEN)
    )
    wanted = set(keys)
    return {(r.account_id, r.currency) for r in conn.execute(query) if (r.account_id, r.currency) in wanted}


def record(
    conn: Connection, idem_key: str, rule_id: str, account_id: str, currency: str, amount: int, now: datetime
) -> bool:
    """Insert a pending request unless its key exists; True when a new one was recorded."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(T)
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
        .on_conflict_do_nothing(index_elements=[C.idem_key])
    )
    return conn.execute(stmt).rowcount == 1
