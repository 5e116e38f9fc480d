"""Day-wise summary: one row per local day of a month (of any period), per currency.

Each day: ``spent`` (usage debits, positive), ``credited`` (top-ups, refunds,
positive adjustments), ``other_debits`` (negative adjustments), ``net`` (every
entry summed), ``entries`` and ``closing``: the balance when the day ended,
which is the balance at the end of the period less the net of the days after
it (so the last day closes at ``closing`` and the first opens at ``opening``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from balancewatch.config import Settings
from balancewatch.core.money import Money
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.common import (
    DERIVED,
    Group,
    Holding,
    LocalDay,
    Options,
    assemble,
    bar_percent,
    base_context,
    day_label,
    divide,
    grouped,
    load_batch,
    local_days,
    locale_of,
    major_text,
)
from balancewatch.rules.reports import CompiledReport

CSV_HEADER = (
    "date",
    "currency",
    "spent",
    "credited",
    "other_debits",
    "net",
    "closing_balance",
    "entries",
)


def build(
    conn: Connection,
    report: CompiledReport,
    accounts: Sequence[AccountInfo],
    period: Period,
    now: datetime,
    settings: Settings,
) -> Iterator[Built]:
    """One Built per account of ``accounts`` (paying accounts in ``period.timezone``), by id.

    Five queries for the whole batch, whatever its size; the ledger rows are read in account
    order while the Builts are consumed, so keep ``conn`` open and uncommitted
    until the iterator is exhausted or closed.
    """
    options = Options.of(settings)
    days = local_days(period)
    batch = load_batch(conn, report, accounts, [period.end])
    for account, groups in grouped(conn, batch, days, period.start, by=("kind",)):
        yield account_report(report, account, period, now, options, batch.holdings(account.id), groups)


def account_report(
    report: CompiledReport,
    account: AccountInfo,
    period: Period,
    now: datetime,
    options: Options,
    holdings: Sequence[Holding],
    groups: Sequence[Group],
) -> Built:
    """The report of one account from its ledger grouped by currency and day (``groups``) and its
    balances (``holdings``, whose ``at`` holds the balance at the period's end)."""
    locale = locale_of(account, options)
    days = local_days(period)
    context = base_context(report, account, period, now, locale)
    return assemble(
        account,
        context,
        holdings,
        groups,
        lambda holding, own: daywise_section(holding, own, days, locale),
        lambda s: s["totals"]["entry_count"],
        CSV_HEADER,
    )


def daywise_section(
    holding: Holding, groups: Sequence[Group], days: Sequence[LocalDay], locale: str
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """One currency's day rows, totals and CSV rows."""
    currency = holding.currency

    def money(minor: int) -> Money:
        return Money(minor, currency)

    n = len(days)
    spent, credited, other, net, entries = ([0] * n for _ in range(5))
    for g in groups:
        if g.day < 0:
            continue
        if g.kind == "usage":
            spent[g.day] -= g.amount
        else:
            credited[g.day] += g.credit
            other[g.day] -= g.debit
        net[g.day] += g.amount
        entries[g.day] += g.entries
    end = holding.at[0] if holding.at else None
    closing_end = end.amount if end else holding.now
    closings = [0] * n
    balance = closing_end
    for i in range(n - 1, -1, -1):
        closings[i] = balance
        balance -= net[i]
    highest = max(spent, default=0)
    total_spent = sum(spent)
    top = spent.index(highest) if highest > 0 else None
    section = {
        "currency": currency,
        "days": [
            {
                "date": day.date,
                "label": day_label(day.date, locale),
                "spent": money(spent[i]),
                "credited": money(credited[i]),
                "other_debits": money(other[i]),
                "net": money(net[i]),
                "closing": money(closings[i]),
                "entry_count": entries[i],
                "bar_percent": bar_percent(spent[i], highest),
            }
            for i, day in enumerate(days)
        ],
        "totals": {
            "spent": money(total_spent),
            "credited": money(sum(credited)),
            "other_debits": money(sum(other)),
            "net": money(sum(net)),
            "entry_count": sum(entries),
        },
        "opening": money(balance),
        "closing": money(closing_end),
        "balance_source": end.source if end else DERIVED,
        "highest_day": None
        if top is None
        else {"date": days[top].date, "label": day_label(days[top].date, locale), "spent": money(highest)},
        "average_daily": money(divide(total_spent, n)),
    }
    rows = [
        (
            day.date.isoformat(),
            currency,
            major_text(spent[i], currency),
            major_text(credited[i], currency),
            major_text(other[i], currency),
            major_text(net[i], currency),
            major_text(closings[i], currency),
            str(entries[i]),
        )
        for i, day in enumerate(days)
    ]
    return section, rows
