"""Changes to each account's own usage, and the paying accounts whose figures they move.

``Deltas`` turns the ledger entries a refresh read into changes of ``usage_member``;
``touched_payers`` finds every paying account whose summary may differ now;
``recompute`` writes their summary rows from ``usage_member`` (not the ledger), the
first entries by index seeks, with the arithmetic of a full refresh (``usage``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, Select, and_, delete, func, insert, or_, select, true, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.evaluate import usage
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    BALANCE_TABLE,
    USAGE_MEMBER_TABLE,
    USAGE_SUMMARY_TABLE,
)

DAY = timedelta(days=1)
CHUNK = 2_000  # paying accounts recomputed per query
# A balance's updated_at is its writer's clock, set before its commit: read back this far.
BALANCE_SLACK = timedelta(minutes=5)


class Entry(NamedTuple):
    """A ledger entry as a refresh reads it."""

    id: int
    account_id: str
    currency: str
    kind: str
    amount: int
    occurred_at: datetime


class _Marked(Protocol):
    @property
    def marked_at(self) -> datetime: ...


@dataclass
class Deltas:
    """Per (account, currency): usage and number of usage entries to add to the window's
    totals; ``accounts``: every account whose entries changed (its first entry may have)."""

    by_key: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)

    def count_in(self, entry: Entry, start: datetime, now: datetime) -> None:
        """An entry not counted before (written since, or dated since): counted if it is
        usage in the window [start, now]; its account is touched if it is dated by ``now``."""
        if entry.occurred_at > now:
            return  # not yet: it arrives when its time comes
        self.accounts.add(entry.account_id)
        if entry.kind == "usage" and entry.occurred_at >= start:
            self._add(entry, 1)

    def count_out(self, entry: Entry) -> None:
        """Usage counted before that the window's start has passed since."""
        self.accounts.add(entry.account_id)
        self._add(entry, -1)

    def _add(self, entry: Entry, sign: int) -> None:
        totals = self.by_key.setdefault((entry.account_id, entry.currency), [0, 0])
        totals[0] += sign * -entry.amount
        totals[1] += sign

    def apply(self, conn: Connection, window: int) -> None:
        """Add the deltas to ``usage_member`` for ``window``; drop rows left with no entry."""
        rows = [
            {"account_id": key[0], "currency": key[1], "window_days": window, "used": used, "entries": count}
            for key, (used, count) in sorted(self.by_key.items())
            if count or used
        ]
        if not rows:
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(USAGE_MEMBER_TABLE)
        keys = [
            USAGE_MEMBER_TABLE.c.account_id,
            USAGE_MEMBER_TABLE.c.currency,
            USAGE_MEMBER_TABLE.c.window_days,
        ]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={
                "used": USAGE_MEMBER_TABLE.c.used + stmt.excluded.used,
                "entries": USAGE_MEMBER_TABLE.c.entries + stmt.excluded.entries,
            },
        )
        for i in range(0, len(rows), 5000):
            conn.execute(stmt, rows[i : i + 5000])
        touched = sorted({str(row["account_id"]) for row in rows})
        for i in range(0, len(touched), CHUNK):
            conn.execute(
                delete(USAGE_MEMBER_TABLE).where(
                    USAGE_MEMBER_TABLE.c.window_days == window,
                    USAGE_MEMBER_TABLE.c.entries == 0,
                    USAGE_MEMBER_TABLE.c.account_id.in_(touched[i : i + CHUNK]),
                )
            )


def touched_payers(
    conn: Connection,
    accounts: Collection[str],
    mark: _Marked,
    now: datetime,
    window: int,
    min_history: timedelta,
) -> set[str]:
    """The paying accounts whose figures may have moved since ``mark``: those of
    ``accounts``, of balances changed since (a new balance needs its row), and those whose
    history was shorter than the window or the minimum then (their days counted move)."""
    changed = select(BALANCE_TABLE.c.account_id).where(
        BALANCE_TABLE.c.updated_at >= mark.marked_at - BALANCE_SLACK
    )
    members = set(accounts) | set(conn.execute(changed).scalars())
    payers: set[str] = set()
    ordered = sorted(members)
    for i in range(0, len(ordered), CHUNK):
        paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
        query = select(paying).where(ACCOUNT_TABLE.c.id.in_(ordered[i : i + CHUNK]))
        payers.update(conn.execute(query).scalars())
    young = mark.marked_at - max(window * DAY, min_history)
    recent = select(USAGE_SUMMARY_TABLE.c.account_id).where(
        USAGE_SUMMARY_TABLE.c.window_days == window, USAGE_SUMMARY_TABLE.c.first_at > young
    )
    payers.update(conn.execute(recent).scalars())
    return payers


def recompute(
    conn: Connection, payers: Collection[str], now: datetime, window: int, min_history: timedelta
) -> int:
    """Write the summary rows of ``payers`` for ``window`` from ``usage_member``; delete
    their rows that a full refresh would not write. Returns the rows written."""
    ordered, written = sorted(payers), 0
    for i in range(0, len(ordered), CHUNK):
        chunk = ordered[i : i + CHUNK]
        rows = [
            usage.summary_row(
                usage.figures_of(r.payer, r.currency, window, int(r.used or 0), r.first_at, now, min_history),
                now,
            )
            for r in conn.execute(_from_members(chunk, now, window))
        ]
        usage.write_rows(conn, rows)
        _drop_others(conn, chunk, [(str(row["account_id"]), str(row["currency"])) for row in rows], window)
        written += len(rows)
    return written


def recompute_all(conn: Connection, now: datetime, window: int, min_history: timedelta) -> int:
    """Replace every summary row of ``window`` with one computed from ``usage_member``.

    Delete and insert, not upsert: the caller holds the refresh lock (``usage_delta``), and
    readers keep seeing the old rows until the transaction commits.
    """
    rows = [
        usage.summary_row(
            usage.figures_of(r.payer, r.currency, window, int(r.used or 0), r.first_at, now, min_history), now
        )
        for r in conn.execute(_from_members(None, now, window))
    ]
    conn.execute(delete(USAGE_SUMMARY_TABLE).where(USAGE_SUMMARY_TABLE.c.window_days == window))
    for i in range(0, len(rows), 5000):
        conn.execute(insert(USAGE_SUMMARY_TABLE), rows[i : i + 5000])
    return len(rows)


def _from_members(chunk: Sequence[str] | None, now: datetime, window: int) -> Select[Any]:
    """``usage.with_firsts`` over the members' totals of the accounts paid by ``chunk``
    (None: every paying account)."""
    paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    paid_by_chunk = (
        true()
        if chunk is None
        else or_(
            ACCOUNT_TABLE.c.parent_id.in_(chunk),
            and_(ACCOUNT_TABLE.c.id.in_(chunk), ACCOUNT_TABLE.c.parent_id.is_(None)),
        )
    )
    used = (
        select(
            paying.label("payer"),
            USAGE_MEMBER_TABLE.c.currency,
            func.sum(USAGE_MEMBER_TABLE.c.used).label("used"),
        )
        .select_from(
            USAGE_MEMBER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == USAGE_MEMBER_TABLE.c.account_id)
        )
        .where(USAGE_MEMBER_TABLE.c.window_days == window, paid_by_chunk)
        .group_by(paying, USAGE_MEMBER_TABLE.c.currency)
        .having(func.sum(USAGE_MEMBER_TABLE.c.entries) > 0)
    )
    balances = (
        select(paying.label("payer"), BALANCE_TABLE.c.currency)
        .select_from(BALANCE_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == BALANCE_TABLE.c.account_id))
        .where(paid_by_chunk)
    )
    return usage.with_firsts(used, balances, now)


def _drop_others(
    conn: Connection, chunk: Sequence[str], kept: Sequence[tuple[str, str]], window: int
) -> None:
    """Delete the chunk's summary rows for ``window`` other than ``kept`` (account, currency)."""
    query = delete(USAGE_SUMMARY_TABLE).where(
        USAGE_SUMMARY_TABLE.c.window_days == window, USAGE_SUMMARY_TABLE.c.account_id.in_(chunk)
    )
    if kept:
        query = query.where(
            tuple_(USAGE_SUMMARY_TABLE.c.account_id, USAGE_SUMMARY_TABLE.c.currency).notin_(kept)
        )
    conn.execute(query)
