"""Changes to each account's own usage, and the paying accounts whose figures they move.

``Deltas`` turns the ledger entries a refresh read into changes of ``usage_member``;
``touched_payers`` finds every paying account whose summary may differ now;
``recompute`` writes their summary rows from ``usage_member`` (not the ledger), the
first entries by index seeks, with the arithmetic of a full refresh (``usage``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    any_,
    bindparam,
    delete,
    func,
    select,
)

from balancewatch.evaluate import usage
from balancewatch.store.bulk import array_parameter, insert_rows
from balancewatch.store.columns import as_written, utc_from
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
    payer: str | None  # the account that pays for its account; None: no such account


class _Marked(Protocol):
    @property
    def marked_at(self) -> datetime: ...


@dataclass
class Deltas:
    """Per (account, currency): usage and number of usage entries to add to the window's
    totals; ``accounts``: every account whose entries changed (its first entry may have)."""

    by_key: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)
    # Per (account, currency): its earliest entry dated by now among those counted in.
    first: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # Each of ``accounts`` that exists -> the account that pays for it (read with the entries).
    payer_of: dict[str, str] = field(default_factory=dict)

    def count_in(self, entry: Entry, start: datetime, now: datetime) -> None:
        """An entry not counted before (written since, or dated since): counted if it is
        usage in the window [start, now]; its account is touched if it is dated by ``now``."""
        if entry.occurred_at > now:
            return  # not yet: it arrives when its time comes
        self._touch(entry)
        key = (entry.account_id, entry.currency)
        if key not in self.first or entry.occurred_at < self.first[key]:
            self.first[key] = entry.occurred_at
        if entry.kind == "usage" and entry.occurred_at >= start:
            self._add(entry, 1)

    def count_out(self, entry: Entry) -> None:
        """Usage counted before that the window's start has passed since."""
        self._touch(entry)
        self._add(entry, -1)

    def _touch(self, entry: Entry) -> None:
        self.accounts.add(entry.account_id)
        if entry.payer is not None:
            self.payer_of[entry.account_id] = entry.payer

    def _add(self, entry: Entry, sign: int) -> None:
        totals = self.by_key.setdefault((entry.account_id, entry.currency), [0, 0])
        totals[0] += sign * -entry.amount
        totals[1] += sign

    def apply(self, conn: Connection, window: int) -> None:
        """Add the deltas to ``usage_member`` for ``window``; drop rows left with no entry."""
        rows = [
            {"account_id": key[0], "currency": key[1], "window_days": window, "used": used, "entries": count}
            for key, (used, count) in self.by_key.items()  # in no order: one statement writes them
            if count or used
        ]
        if not rows:
            return
        key, totals = ("account_id", "currency", "window_days"), ("used", "entries")
        insert_rows(conn, USAGE_MEMBER_TABLE, rows, conflict=key, add=totals)
        # Only entries leaving can leave a row with none.
        touched = sorted({key[0] for key, (_used, count) in self.by_key.items() if count < 0})
        for i in range(0, len(touched), CHUNK):
            conn.execute(
                delete(USAGE_MEMBER_TABLE).where(
                    USAGE_MEMBER_TABLE.c.window_days == window,
                    USAGE_MEMBER_TABLE.c.entries == 0,
                    among(conn, USAGE_MEMBER_TABLE.c.account_id, touched[i : i + CHUNK]),
                )
            )


def touched_payers(conn: Connection, deltas: Deltas, mark: _Marked, window: int) -> set[str]:
    """The paying accounts to recompute from ``usage_member``: those of ``deltas.accounts``
    (their entries changed), and those with a balance changed since ``mark`` in a currency
    they have no summary row for (a new balance gets its row; a moved one changes no figure)."""
    payers = set(deltas.payer_of.values())
    changed = select(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency).where(
        BALANCE_TABLE.c.updated_at >= mark.marked_at - BALANCE_SLACK
    )
    moved = conn.execute(changed).all()
    known = deltas.payer_of
    payer_of = {**paying_of(conn, {row.account_id for row in moved if row.account_id not in known}), **known}
    pairs = {(payer_of[row.account_id], row.currency) for row in moved if row.account_id in payer_of}
    candidates = sorted({payer for payer, _ in pairs} - payers)
    for i in range(0, len(candidates), CHUNK):
        chunk = candidates[i : i + CHUNK]
        rows = select(USAGE_SUMMARY_TABLE.c.account_id, USAGE_SUMMARY_TABLE.c.currency).where(
            USAGE_SUMMARY_TABLE.c.window_days == window,
            among(conn, USAGE_SUMMARY_TABLE.c.account_id, chunk),
        )
        have = {(row.account_id, row.currency) for row in conn.execute(rows)}
        in_chunk = set(chunk)
        payers.update(payer for payer, currency in pairs - have if payer in in_chunk)
    return payers


def paying_of(conn: Connection, accounts: Collection[str]) -> dict[str, str]:
    """Each of ``accounts`` (that exists) -> the account that pays for it."""
    ordered, payer_of = sorted(accounts), {}
    paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    for i in range(0, len(ordered), CHUNK):
        query = select(ACCOUNT_TABLE.c.id, paying).where(
            among(conn, ACCOUNT_TABLE.c.id, ordered[i : i + CHUNK])
        )
        payer_of.update({account: payer for account, payer in conn.execute(query)})
    return payer_of


def age_young(
    conn: Connection,
    skip: Collection[tuple[str, str]],
    mark: _Marked,
    now: datetime,
    window: int,
    min_history: timedelta,
) -> int:
    """Rewrite the summary rows whose figures move with time alone: history shorter than the
    window or the minimum at ``mark`` (their days counted and status move), from the row
    itself (nothing else of theirs changed), except the (payer, currency) rows in ``skip``."""
    young = mark.marked_at - max(window * DAY, min_history)
    query = select(
        USAGE_SUMMARY_TABLE.c.account_id,
        USAGE_SUMMARY_TABLE.c.currency,
        USAGE_SUMMARY_TABLE.c.usage_total,
        as_written(USAGE_SUMMARY_TABLE.c.first_at),
    ).where(USAGE_SUMMARY_TABLE.c.window_days == window, USAGE_SUMMARY_TABLE.c.first_at > young)
    rows = [
        usage.summary_row(
            usage.figures_of(payer, currency, window, total, utc_from(first), now, min_history), now
        )
        for payer, currency, total, first in conn.execute(query)
        if (payer, currency) not in skip
    ]
    usage.write_rows(conn, rows)
    return len(rows)


def among(conn: Connection, column: ColumnElement[str], values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN values`` with the values bound as one parameter instead of one each
    (thousands per chunk here, each compiled, bound and parsed): on PostgreSQL
    ``column = ANY(array)``, on SQLite ``column IN (SELECT value FROM json_each(list))``,
    which SQLite answers by key from ``column``'s index as it does a list."""
    if conn.dialect.name == "postgresql":  # the array's text: psycopg dumps a list element by element
        return column == any_(array_parameter(values, String()))
    listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))
