"""Day-wise summary: one row per local day of a month (of any period), per currency.

Each day: ``spent`` (usage debits, positive), ``credited`` (top-ups, refunds,
positive adjustments), ``other_debits`` (negative adjustments), ``net`` (every
entry summed), ``entries`` and ``closing``: the balance when the day ended,
which is the balance at the end of the period less the net of the days after
it (so the last day closes at ``closing`` and the first opens at ``opening``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from balancewatch.config import Settings
from balancewatch.core.money import Money
from balancewatch.render.context import money_in
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.batch import DERIVED, Holding, load_batch
from balancewatch.reports.contents.context import assemble, base_context, highest_day_context, locale_of
from balancewatch.reports.contents.grouped import Group, grouped
from balancewatch.reports.contents.localdays import LocalDay, day_label, local_days
from balancewatch.reports.contents.numbers import bar_percent, divide, major_text
from balancewatch.reports.contents.options import Options
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
    context = base_context(report, account, period, now, locale, email=options.email)
    return assemble(
        account,
        context,
        holdings,
        groups,
        lambda holding, own: daywise_section(holding, own, days, locale),
        lambda s: s["totals"]["entry_count"],
        CSV_HEADER,
    )


@dataclass(frozen=True)
class _Days:
    """One currency's sums per local day, in minor units (spent and other debits positive)."""

    spent: list[int]
    credited: list[int]
    other: list[int]
    net: list[int]
    entries: list[int]
    closings: list[int]  # the balance when each day ended
    opening: int  # the balance when the first day began

    @classmethod
    def of(cls, groups: Sequence[Group], count: int, closing: int) -> _Days:
        """The sums of ``groups`` over ``count`` days, the last day closing at ``closing``."""
        spent, credited, other, net, entries = ([0] * count for _ in range(5))
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
        closings = [0] * count
        balance = closing
        for i in range(count - 1, -1, -1):
            closings[i] = balance
            balance -= net[i]
        return cls(spent, credited, other, net, entries, closings, balance)


def daywise_section(
    holding: Holding, groups: Sequence[Group], days: Sequence[LocalDay], locale: str
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """One currency's day rows, totals and CSV rows."""
    currency = holding.currency
    money = money_in(currency)
    end = holding.at[0] if holding.at else None
    closing = end.amount if end else holding.now
    sums = _Days.of(groups, len(days), closing)
    section: dict[str, Any] = {
        "currency": currency,
        "days": _day_rows(sums, days, locale, money),
        "totals": {
            "spent": money(sum(sums.spent)),
            "credited": money(sum(sums.credited)),
            "other_debits": money(sum(sums.other)),
            "net": money(sum(sums.net)),
            "entry_count": sum(sums.entries),
        },
        "opening": money(sums.opening),
        "closing": money(closing),
        "balance_source": end.source if end else DERIVED,
        "highest_day": highest_day_context(days, sums.spent, locale, money),
        "average_daily": money(divide(sum(sums.spent), len(days))),
    }
    rows: list[tuple[str, ...]] = [
        (
            day.date.isoformat(),
            currency,
            major_text(sums.spent[i], currency),
            major_text(sums.credited[i], currency),
            major_text(sums.other[i], currency),
            major_text(sums.net[i], currency),
            major_text(sums.closings[i], currency),
            str(sums.entries[i]),
        )
        for i, day in enumerate(days)
    ]
    return section, rows


def _day_rows(
    sums: _Days, days: Sequence[LocalDay], locale: str, money: Callable[[int], Money]
) -> list[dict[str, Any]]:
    highest = max(sums.spent, default=0)
    return [
        {
            "date": day.date,
            "label": day_label(day.date, locale),
            "spent": money(sums.spent[i]),
            "credited": money(sums.credited[i]),
            "other_debits": money(sums.other[i]),
            "net": money(sums.net[i]),
            "closing": money(sums.closings[i]),
            "entry_count": sums.entries[i],
            "bar_percent": bar_percent(sums.spent[i], highest),
        }
        for i, day in enumerate(days)
    ]
