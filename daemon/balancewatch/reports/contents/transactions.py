"""Credit transactions: every ledger entry of a period with the balance after it.

Per currency the account holds a balance in, subaccounts' entries included:
``opening`` and ``closing`` (the balance at the period's start and end, see
``batch.balances_at``), then every entry in time order with its local date
and time, kind, service, quantity, signed amount, reference and
``balance_after``: the ledger's own where the entry carries one, else
computed (``balance_after_source: computed``) from the last known balance
plus the running sum of the entries since, a window function over the period.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from balancewatch.config import Settings
from balancewatch.core.money import Money
from balancewatch.render.context import money_in
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.batch import (
    DERIVED,
    PAYING_ACCOUNT,
    Batch,
    Holding,
    Member,
    Point,
    load_batch,
)
from balancewatch.reports.contents.context import assemble, base_context, locale_of
from balancewatch.reports.contents.grouped import per_account, sorted_by_payer
from balancewatch.reports.contents.numbers import major_text, optional_int
from balancewatch.reports.contents.options import Options
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.tables import ACCOUNT_TABLE, LEDGER_TABLE

CSV_HEADER = (
    "date",
    "time",
    "occurred_at",
    "currency",
    "account_id",
    "account_name",
    "kind",
    "service",
    "quantity",
    "amount",
    "reference",
    "balance_after",
)
COMPUTED = "computed"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry of the period; ``running`` is the sum of the family's amounts in the
    currency from the period's start up to and including this entry."""

    id: int
    member: str
    currency: str
    amount: int
    kind: str
    service: str | None
    quantity: int | None
    occurred_at: datetime
    reference: str | None
    balance_after: int | None
    running: int


def build(
    conn: Connection,
    report: CompiledReport,
    accounts: Sequence[AccountInfo],
    period: Period,
    now: datetime,
    settings: Settings,
) -> Iterator[Built]:
    """One Built per account of ``accounts`` (paying accounts in ``period.timezone``), by id.

    Five queries for the whole batch, whatever its size; the entries are read in account order
    while the Builts are consumed, so keep ``conn`` open and uncommitted until
    the iterator is exhausted or closed.
    """
    options = Options.of(settings)
    batch = load_batch(conn, report, accounts, [period.start, period.end])
    for account, entries in _entries(conn, batch, period):
        yield account_report(
            report,
            account,
            period,
            now,
            options,
            batch.members[account.id],
            batch.holdings(account.id),
            entries,
        )


def _entries(conn: Connection, batch: Batch, period: Period) -> Iterator[tuple[AccountInfo, list[Entry]]]:
    if not batch.keys():
        yield from ((a, []) for a in batch.accounts)
        return
    ledger = LEDGER_TABLE.c
    running = func.sum(ledger.amount).over(
        partition_by=(PAYING_ACCOUNT, ledger.currency), order_by=(ledger.occurred_at, ledger.id)
    )
    query = (
        select(
            PAYING_ACCOUNT.label("payer"),
            ledger.id,
            ledger.account_id,
            ledger.currency,
            ledger.amount,
            ledger.kind,
            ledger.service,
            ledger.quantity,
            ledger.occurred_at,
            ledger.reference,
            ledger.balance_after,
            running.label("running"),
        )
        .select_from(LEDGER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == ledger.account_id))
        .where(
            ledger.account_id.in_(batch.member_ids),
            ledger.currency.in_(batch.all_currencies),
            ledger.occurred_at >= period.start,
            ledger.occurred_at < period.end,
        )
        .order_by(sorted_by_payer(conn, PAYING_ACCOUNT), ledger.currency, ledger.occurred_at, ledger.id)
    )
    wanted = set(batch.keys())

    def entries(rows: Iterable[Any]) -> list[Entry]:
        return [
            Entry(
                int(r.id),
                r.account_id,
                r.currency,
                int(r.amount),
                r.kind,
                r.service,
                None if r.quantity is None else int(r.quantity),
                r.occurred_at,
                r.reference,
                None if r.balance_after is None else int(r.balance_after),
                int(r.running),
            )
            for r in rows
            if (r.payer, r.currency) in wanted
        ]

    result = conn.execute(query, execution_options={"yield_per": 2000})
    try:
        yield from per_account(batch.accounts, ((r.payer, r) for r in result), entries)
    finally:
        result.close()


def account_report(
    report: CompiledReport,
    account: AccountInfo,
    period: Period,
    now: datetime,
    options: Options,
    members: Sequence[Member],
    holdings: Sequence[Holding],
    entries: Sequence[Entry],
) -> Built:
    """The report of one account from its entries in time order and its balances (``holdings``,
    whose ``at`` holds the balances at the period's start and end)."""
    locale = locale_of(account, options)
    context = base_context(report, account, period, now, locale, email=options.email)
    zone = ZoneInfo(period.timezone)
    return assemble(
        account,
        context,
        holdings,
        entries,
        lambda holding, own: transactions_section(holding, own, members, zone),
        lambda s: s["entries"],
        CSV_HEADER,
    )


def transactions_section(
    holding: Holding, entries: Sequence[Entry], members: Sequence[Member], zone: ZoneInfo
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """One currency's entries with the balance after each, its totals and its CSV rows."""
    currency = holding.currency
    money = money_in(currency)
    opening, closing = holding.at if len(holding.at) == 2 else (Point(holding.now, DERIVED),) * 2
    names = {m.id: m for m in members}
    anchor = opening.amount  # the balance after an entry, less the running sum up to it
    shown, rows = [], []
    for e in entries:
        if e.balance_after is not None:
            after, source = e.balance_after, "ledger"
            anchor = e.balance_after - e.running
        else:
            after, source = anchor + e.running, COMPUTED
        local = e.occurred_at.astimezone(zone)
        member = names.get(e.member)
        shown.append(_shown(e, local, after, source, member, money))
        rows.append(_csv_row(e, local, after, member.name if member else e.member))
    section = {
        "currency": currency,
        "entries": shown,
        "opening": money(opening.amount),
        "opening_source": opening.source,
        "closing": money(closing.amount),
        "closing_source": closing.source,
        "totals": {
            "count": len(entries),
            "credited": money(sum(e.amount for e in entries if e.amount > 0)),
            "debited": money(-sum(e.amount for e in entries if e.amount < 0)),
            "net": money(sum(e.amount for e in entries)),
        },
        "has_subaccounts": len(members) > 1,
    }
    return section, rows


def _shown(
    e: Entry, local: datetime, after: int, source: str, member: Member | None, money: Callable[[int], Money]
) -> dict[str, Any]:
    """One entry as the template sees it."""
    return {
        "at": local,
        "date": local.date(),
        "kind": e.kind,
        "service": e.service,
        "quantity": e.quantity,
        "amount": money(e.amount),
        "credit": e.amount > 0,
        "reference": e.reference,
        "balance_after": money(after),
        "balance_after_source": source,
        "account": {
            "id": e.member,
            "name": member.name if member else e.member,
            "main": bool(member and member.main),
        },
    }


def _csv_row(e: Entry, local: datetime, after: int, name: str) -> tuple[str, ...]:
    return (
        local.date().isoformat(),
        local.strftime("%H:%M:%S"),
        local.isoformat(timespec="seconds"),
        e.currency,
        e.member,
        name,
        e.kind,
        e.service or "",
        optional_int(e.quantity),
        major_text(e.amount, e.currency),
        e.reference or "",
        major_text(after, e.currency),
    )
