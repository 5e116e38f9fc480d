"""The ledger of a batch grouped per paying account, currency, local day (and member, kind,
service), read in account order so each account's report is built and yielded before the next
one's rows are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Integer, Select, case, func, literal_column, select

from balancewatch.reports.base import AccountInfo
from balancewatch.reports.contents.batch import PAYING_ACCOUNT, Batch
from balancewatch.reports.contents.localdays import LocalDay
from balancewatch.store.tables import ACCOUNT_TABLE, LEDGER_TABLE

PREVIOUS = -1  # the day index of rows in the previous period
GROUP_BY = {
    "member": LEDGER_TABLE.c.account_id,
    "kind": LEDGER_TABLE.c.kind,
    "service": LEDGER_TABLE.c.service,
}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Group:
    """Ledger entries of one family member, currency, kind, service and local day, summed.

    ``day`` is the index of the local day in the period, or PREVIOUS for the
    period before it. ``credit`` sums the positive amounts, ``debit`` the
    negative ones (minor units); ``quantity`` is None when no entry gave one.
    """

    currency: str
    day: int
    credit: int
    debit: int
    entries: int
    member: str = ""
    kind: str = ""
    service: str | None = None
    quantity: int | None = None

    @property
    def amount(self) -> int:
        return self.credit + self.debit


def sorted_by_payer(conn: Connection, expr: Any) -> Any:
    """``expr`` ordered as Python orders strings (code points): ``COLLATE "C"`` on PostgreSQL."""
    return expr.collate("C") if conn.dialect.name == "postgresql" else expr


def day_bucket(days: Sequence[LocalDay], since: datetime) -> ColumnElement[Any]:
    """The index of the local day an entry falls in (PREVIOUS before the first day's start)."""
    occurred_at = LEDGER_TABLE.c.occurred_at
    whens: list[tuple[Any, int]] = []
    if since < days[0].start:
        whens.append((occurred_at < days[0].start, PREVIOUS))
    whens += [(occurred_at < d.end, i) for i, d in enumerate(days[:-1])]
    return case(*whens, else_=len(days) - 1) if whens else literal_column("0", Integer)


def grouped(
    conn: Connection,
    batch: Batch,
    days: Sequence[LocalDay],
    since: datetime,
    by: Sequence[str] = ("member", "kind", "service"),
) -> Iterator[tuple[AccountInfo, list[Group]]]:
    """Each account of the batch with its ledger from ``since`` to the end of the period,
    grouped by currency, local day and ``by`` (of member, kind and service).

    One query, its rows read in account order while the caller consumes them.
    """
    if not batch.keys() or not days:
        yield from ((a, []) for a in batch.accounts)
        return
    wanted = set(batch.keys())
    make = _maker(by)

    def groups(rows: Iterable[Any]) -> list[Group]:
        return [make(r) for r in rows if (r[0], r[1]) in wanted]

    result = conn.execute(_grouped_query(conn, batch, days, since, by), execution_options={"yield_per": 2000})
    try:
        # Whole partitions and positions: a row's attributes by name cost more than the rest of it.
        rows = (r for part in result.partitions() for r in part)
        yield from per_account(batch.accounts, ((r[0], r) for r in rows), groups)
    finally:
        result.close()


def _grouped_query(
    conn: Connection, batch: Batch, days: Sequence[LocalDay], since: datetime, by: Sequence[str]
) -> Select[Any]:
    """The batch's entries from ``since`` to the period's end, summed per paying account,
    currency, local day and ``by``, in paying account order."""
    ledger = LEDGER_TABLE.c
    inner = (
        select(
            PAYING_ACCOUNT.label("payer"),
            ledger.currency,
            day_bucket(days, since).label("day"),
            *(GROUP_BY[name].label(name) for name in by),
            ledger.amount,
            ledger.quantity,
        )
        .select_from(LEDGER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == ledger.account_id))
        .where(
            ledger.account_id.in_(batch.member_ids),
            ledger.currency.in_(batch.all_currencies),
            ledger.occurred_at >= since,
            ledger.occurred_at < days[-1].end,
        )
        .subquery("entries")
    )
    entry = inner.c
    keys = [entry.payer, entry.currency, entry.day, *(entry[name] for name in by)]
    return (
        select(
            *keys,
            func.sum(case((entry.amount > 0, entry.amount), else_=0)).label("credit"),
            func.sum(case((entry.amount < 0, entry.amount), else_=0)).label("debit"),
            func.sum(entry.quantity).label("quantity"),
            func.count().label("entries"),
        )
        .group_by(*keys)
        .order_by(sorted_by_payer(conn, entry.payer), *keys[1:])
    )


def _maker(by: Sequence[str]) -> Callable[[Any], Group]:
    """A Group from a row of ``_grouped_query(..., by)``, reading its columns by position:
    payer, currency, day, the ``by`` columns, credit, debit, quantity, entries."""
    at = {name: 3 + i for i, name in enumerate(by)}
    member, kind, service = at.get("member"), at.get("kind"), at.get("service")
    sums = 3 + len(by)

    def make(row: Any) -> Group:
        quantity = row[sums + 2]
        return Group(
            row[1],
            int(row[2]),
            int(row[sums] or 0),
            int(row[sums + 1] or 0),
            int(row[sums + 3]),
            "" if member is None else row[member],
            "" if kind is None else row[kind],
            None if service is None else row[service],
            None if quantity is None else int(quantity),
        )

    return make


def per_account(
    accounts: Sequence[AccountInfo],
    rows: Iterable[tuple[str, Any]],
    collect: Callable[[Iterable[Any]], T],
) -> Iterator[tuple[AccountInfo, T]]:
    """Merge ``rows`` (``(paying account, row)``, in account order) with ``accounts`` (sorted by
    id): each account with ``collect(its rows)``, an account without rows with ``collect([])``."""
    families = groupby(rows, key=lambda pair: pair[0])
    pending = next(families, None)
    for account in accounts:
        while pending is not None and pending[0] < account.id:
            pending = next(families, None)
        if pending is not None and pending[0] == account.id:
            yield account, collect(r for _, r in pending[1])
            pending = next(families, None)
        else:
            yield account, collect([])
