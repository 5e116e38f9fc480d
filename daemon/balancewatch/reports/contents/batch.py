"""A batch of paying accounts as every contents kind reads it up front: their families (a paying
account and its subaccounts), the currencies they hold, and their balances now and at the
instants a report needs, in a few grouped queries whatever the batch's size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from balancewatch.evaluate import usage
from balancewatch.evaluate.usage import Figures
from balancewatch.reports.base import AccountInfo
from balancewatch.reports.contents.options import Options
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.tables import ACCOUNT_TABLE, BALANCE_TABLE, LEDGER_TABLE

# The account that pays for an entry: the subaccount's parent, else the account itself.
PAYING_ACCOUNT = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
LEDGER_SOURCE, DERIVED = "ledger", "derived"


@dataclass(frozen=True, slots=True)
class Member:
    """An account of a paying account's family: the paying account itself or one of its subaccounts."""

    id: str
    name: str
    main: bool


@dataclass(frozen=True, slots=True)
class Point:
    """A balance at an instant and where it came from: ``ledger`` (the ``balance_after`` of the
    last entry before the instant) or ``derived`` (the balance now less every entry since)."""

    amount: int
    source: str


@dataclass(frozen=True, slots=True)
class Holding:
    """One balance of a paying account as a report sees it: the amount now, the balance at each
    instant the report asked for, and the stored usage figures (None without a summary)."""

    currency: str
    now: int
    at: tuple[Point, ...]
    figures: Figures | None = None


@dataclass(frozen=True)
class Batch:
    """Accounts of one batch (sorted by id) and what every kind reads about them up front."""

    accounts: tuple[AccountInfo, ...]
    members: Mapping[str, tuple[Member, ...]]  # paying account -> itself first, then subaccounts by id
    currencies: Mapping[str, tuple[str, ...]]  # paying account -> currencies it holds a balance in
    current: Mapping[tuple[str, str], int]  # (paying account, currency) -> balance now
    points: Mapping[tuple[str, str], tuple[Point, ...]]  # one per instant asked for

    @property
    def member_ids(self) -> list[str]:
        return sorted(m.id for family in self.members.values() for m in family)

    @property
    def all_currencies(self) -> list[str]:
        return sorted({c for cs in self.currencies.values() for c in cs})

    def keys(self) -> list[tuple[str, str]]:
        return [(payer, c) for payer, cs in self.currencies.items() for c in cs]

    def holdings(self, payer: str, figures: Mapping[tuple[str, str], Figures] | None = None) -> list[Holding]:
        """The balances of ``payer``, by currency."""
        return [
            Holding(
                c, self.current[(payer, c)], self.points.get((payer, c), ()), (figures or {}).get((payer, c))
            )
            for c in self.currencies.get(payer, ())
        ]


def load_batch(
    conn: Connection, report: CompiledReport, accounts: Sequence[AccountInfo], instants: Sequence[datetime]
) -> Batch:
    """Families, currencies and balances at ``instants`` for ``accounts``: four queries."""
    ordered = tuple(sorted(accounts, key=lambda a: a.id))
    ids = [a.id for a in ordered]
    members = _families(conn, ids, {a.id: a.name for a in ordered})
    currencies: dict[str, list[str]] = defaultdict(list)
    current: dict[tuple[str, str], int] = {}
    if ids:
        balance = BALANCE_TABLE.c
        query = select(balance.account_id, balance.currency, balance.amount).where(
            balance.account_id.in_(ids)
        )
        if report.selector.currencies is not None:
            query = query.where(balance.currency.in_(report.selector.currencies))
        for r in conn.execute(query.order_by(balance.account_id, balance.currency)):
            currencies[r.account_id].append(r.currency)
            current[(r.account_id, r.currency)] = int(r.amount)
    batch = Batch(ordered, members, {payer: tuple(cs) for payer, cs in currencies.items()}, current, {})
    return replace(batch, points=balances_at(conn, batch, instants)) if instants else batch


def _families(conn: Connection, ids: list[str], names: Mapping[str, str]) -> dict[str, tuple[Member, ...]]:
    out: dict[str, list[Member]] = {i: [Member(i, names[i], True)] for i in ids}
    if ids:
        account = ACCOUNT_TABLE.c
        query = (
            select(account.id, account.name, account.parent_id)
            .where(account.parent_id.in_(ids))
            .order_by(account.parent_id, account.id)
        )
        for r in conn.execute(query):
            out[r.parent_id].append(Member(r.id, r.name, False))
    return {payer: tuple(family) for payer, family in out.items()}


def balances_at(
    conn: Connection, batch: Batch, instants: Sequence[datetime]
) -> dict[tuple[str, str], tuple[Point, ...]]:
    """Each balance of the batch at each of ``instants``: two queries.

    The ``balance_after`` of the family's last entry before the instant when it
    has one (``ledger``); else the balance now less the family's entries at or
    after the instant (``derived``), as when a billing system writes the ledger
    without ``balance_after``.
    """
    if not batch.keys() or not instants:
        return {}
    last = _last_entries(conn, batch, instants)
    later = _later_sums(conn, batch, instants)
    out = {}
    for key, now_amount in batch.current.items():
        points = []
        for i in range(len(instants)):
            found = last.get((*key, i))
            if found is not None and found[2] is not None:
                points.append(Point(int(found[2]), LEDGER_SOURCE))
            else:
                points.append(Point(now_amount - later.get((*key, i), 0), DERIVED))
        out[key] = tuple(points)
    return out


def _last_entries(
    conn: Connection, batch: Batch, instants: Sequence[datetime]
) -> dict[tuple[str, str, int], tuple[datetime, int, int | None]]:
    """(occurred_at, id, balance_after) of each family's last entry before each instant.

    One indexed probe per family member, currency and instant (the ledger's
    (account, currency, time) index read backwards), so history before the
    period is never scanned.
    """
    account, balance, ledger = ACCOUNT_TABLE.c, BALANCE_TABLE.c, LEDGER_TABLE.c
    cols: list[Any] = [PAYING_ACCOUNT.label("payer"), balance.currency]
    for i, at in enumerate(instants):
        last = (
            select(ledger.id)
            .where(
                ledger.account_id == account.id, ledger.currency == balance.currency, ledger.occurred_at < at
            )
            .order_by(ledger.occurred_at.desc(), ledger.id.desc())
            .limit(1)
            .correlate(ACCOUNT_TABLE, BALANCE_TABLE)
            .scalar_subquery()
        )
        cols.append(last.label(f"last{i}"))
    pairs = (
        select(*cols)
        .select_from(ACCOUNT_TABLE.join(BALANCE_TABLE, balance.account_id == PAYING_ACCOUNT))
        .where(account.id.in_(batch.member_ids), balance.currency.in_(batch.all_currencies))
        .subquery("pairs")
    )
    query = select(pairs.c.payer, pairs.c.currency)
    joined: Any = pairs
    for i in range(len(instants)):
        entry = LEDGER_TABLE.alias(f"e{i}")
        joined = joined.outerjoin(entry, entry.c.id == pairs.c[f"last{i}"])
        query = query.add_columns(
            entry.c.id.label(f"id{i}"),
            entry.c.occurred_at.label(f"at{i}"),
            entry.c.balance_after.label(f"after{i}"),
        )
    out: dict[tuple[str, str, int], tuple[datetime, int, int | None]] = {}
    for r in conn.execute(query.select_from(joined)):
        for i in range(len(instants)):
            entry_id = r._mapping[f"id{i}"]
            if entry_id is None:
                continue
            seen = (r._mapping[f"at{i}"], int(entry_id), r._mapping[f"after{i}"])
            key = (r.payer, r.currency, i)
            if key not in out or seen[:2] > out[key][:2]:
                out[key] = seen
    return out


def _later_sums(
    conn: Connection, batch: Batch, instants: Sequence[datetime]
) -> dict[tuple[str, str, int], int]:
    """The sum of each family's entries at or after each instant, by paying account and currency."""
    ledger = LEDGER_TABLE.c
    sums = [
        func.sum(case((ledger.occurred_at >= at, ledger.amount), else_=0)).label(f"later{i}")
        for i, at in enumerate(instants)
    ]
    query = (
        select(PAYING_ACCOUNT.label("payer"), ledger.currency, *sums)
        .select_from(LEDGER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == ledger.account_id))
        .where(
            ledger.account_id.in_(batch.member_ids),
            ledger.currency.in_(batch.all_currencies),
            ledger.occurred_at >= min(instants),
        )
        .group_by(PAYING_ACCOUNT, ledger.currency)
    )
    return {
        (r.payer, r.currency, i): int(r._mapping[f"later{i}"] or 0)
        for r in conn.execute(query)
        for i in range(len(instants))
    }


def figures_of(
    conn: Connection, batch: Batch, options: Options, now: datetime
) -> dict[tuple[str, str], Figures]:
    """The average daily usage of every balance of the batch (over ``options.window_days``): the
    stored summary, computed as of ``now`` for the balances it has no row for yet."""
    window = options.window_days
    return usage.current(conn, batch.keys(), [window], now, options.min_history)[window]
