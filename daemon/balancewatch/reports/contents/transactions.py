"""Credit transactions: every ledger entry of a period with the balance after it.

Per currency the account holds a balance in, subaccounts' entries included:
``opening`` and ``closing`` (the balance at the period's start and end, see
``common.balances_at``), then every entry in time order with its local date
and time, kind, service, quantity, signed amount, reference and
``balance_after``: the ledger's own where the entry carries one, else
computed (``balance_after_source: computed``) from the last known balance
plus the running sum of the entries since, a window function over the period.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from balancewatch.config import Settings
from balancewatch.core.money import Money
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.common import (
    ACCOUNT,
    DERIVED,
    LEDGER,
    PAYER,
    A,
    Batch,
    Holding,
    L,
    Member,
    Options,
    Point,
    assemble,
    base_context,
    load_batch,
    locale_of,
    major_text,
    optional_int,
    per_account,
    sorted_by_payer,
)
from balancewatch.rules.reports import CompiledReport

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
    running = func.sum(L.amount).over(partition_by=(PAYER, L.currency), order_by=(L.occurred_at, L.id))
    query = (
        select(
            PAYER.label("payer"),
            L.id,
            L.account_id,
            L.currency,
            L.amount,
            L.kind,
            L.service,
            L.quantity,
            L.occurred_at,
            L.reference,
            L.balance_after,
            running.label("running"),
        )
        .select_from(LEDGER.join(ACCOUNT, A.id == L.account_id))
        .where(
            L.account_id.in_(batch.member_ids),
            L.currency.in_(batch.all_currencies),
            L.occurred_at >= period.start,
            L.occurred_at < period.end,
        )
        .order_by(sorted_by_payer(conn, PAYER), L.currency, L.occurred_at, L.id)
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
    context = base_context(report, account, period, now, locale)
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

    def money(minor: int) -> Money:
        return Money(minor, currency)

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
        name = member.name if member else e.member
        shown.append(
            {
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
                "account": {"id": e.member, "name": name, "main": bool(member and member.main)},
            }
        )
        rows.append(
            (
                local.date().isoformat(),
                local.strftime("%H:%M:%S"),
                local.isoformat(timespec="seconds"),
                currency,
                e.member,
                name,
                e.kind,
                e.service or "",
                optional_int(e.quantity),
                major_text(e.amount, currency),
                e.reference or "",
                major_text(after, currency),
            )
        )
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
