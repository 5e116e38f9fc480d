"""Usage: what a paying account spent in a complete local day, week or month.

Per currency the account holds a balance in, with its subaccounts rolled in:

- ``spent``: the usage debits of the period as a positive amount (−Σ amount of
  kind ``usage``); ``credited``: top-ups, refunds and positive adjustments;
  ``other_debits``: negative adjustments; ``net``: every entry summed;
- ``services``: spent and quantity per service, most spent first;
- ``subaccounts``: spent per family member, the paying account itself first
  (empty without subaccounts);
- ``previous``: spent in the period before and the change;
- ``daily``: spent per local day, for the bar chart;
- ``balance_end``: the balance when the period ended (``balance_end_source``:
  ``ledger`` or ``derived``, see ``batch.balances_at``);
- ``usage``: average daily usage and runway as alert emails show them, from
  the stored usage summary (computed now for a balance it has no row for yet)
  and the balance now.

The CSV holds the ledger grouped by local day, account, kind and service.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from balancewatch.config import Settings
from balancewatch.core.money import Money
from balancewatch.render.context import money_in, usage_context
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.batch import Holding, Member, figures_of, load_batch
from balancewatch.reports.contents.context import assemble, base_context, highest_day_context, locale_of
from balancewatch.reports.contents.grouped import PREVIOUS, Group, grouped
from balancewatch.reports.contents.localdays import (
    LocalDay,
    Span,
    day_label,
    local_days,
    previous_span,
    span_label,
)
from balancewatch.reports.contents.numbers import bar_percent, divide, major_text, optional_int, percent
from balancewatch.reports.contents.options import Options
from balancewatch.rules.reports import CompiledReport

CSV_HEADER = (
    "date",
    "currency",
    "account_id",
    "account_name",
    "kind",
    "service",
    "quantity",
    "amount",
    "entries",
)
NO_SERVICE = "other"


def build(
    conn: Connection,
    report: CompiledReport,
    accounts: Sequence[AccountInfo],
    period: Period,
    now: datetime,
    settings: Settings,
) -> Iterator[Built]:
    """One Built per account of ``accounts`` (paying accounts in ``period.timezone``), by id.

    Six queries for the whole batch, whatever its size (a seventh while the usage summary lacks
    some of its balances); the ledger rows are read in account order
    while the Builts are consumed, so keep ``conn`` open and uncommitted until
    the iterator is exhausted or closed.
    """
    options = Options.of(settings)
    days = local_days(period)
    previous = previous_span(period)
    batch = load_batch(conn, report, accounts, [period.end])
    figures = figures_of(conn, batch, options, now)
    for account, groups in grouped(conn, batch, days, previous.start):
        yield account_report(
            report,
            account,
            period,
            now,
            options,
            batch.members[account.id],
            batch.holdings(account.id, figures),
            groups,
        )


def account_report(
    report: CompiledReport,
    account: AccountInfo,
    period: Period,
    now: datetime,
    options: Options,
    members: Sequence[Member],
    holdings: Sequence[Holding],
    groups: Sequence[Group],
) -> Built:
    """The report of one account from its grouped ledger (``groups``) and balances (``holdings``,
    whose ``at`` holds the balance at the period's end)."""
    locale = locale_of(account, options)
    days = local_days(period)
    previous = previous_span(period)
    context = base_context(report, account, period, now, locale, email=options.email)
    context["previous_period"] = previous_context(period.kind, previous, locale)
    return assemble(
        account,
        context,
        holdings,
        groups,
        lambda holding, own: usage_section(holding, own, days, members, options, locale),
        lambda s: s["entry_count"],
        CSV_HEADER,
    )


def previous_context(kind: str, previous: Span, locale: str) -> dict[str, Any]:
    """The ``previous_period`` key: the day, week or month before, with its label in ``locale``."""
    return {
        "key": previous.key,
        "first_day": previous.first_day,
        "last_day": previous.last_day,
        "label": span_label(kind, previous.first_day, previous.last_day, locale),
    }


def _spent(groups: Sequence[Group]) -> int:
    return -sum(g.amount for g in groups if g.kind == "usage")


def usage_section(
    holding: Holding,
    groups: Sequence[Group],
    days: Sequence[LocalDay],
    members: Sequence[Member],
    options: Options,
    locale: str,
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """One currency's numbers (see the module docstring) and its CSV rows."""
    currency = holding.currency
    money = money_in(currency)
    now_groups = [g for g in groups if g.day >= 0]
    spent = _spent(now_groups)
    daily = [0] * len(days)
    for g in now_groups:
        if g.kind == "usage":
            daily[g.day] -= g.amount
    end = holding.at[0] if holding.at else None
    section = {
        "currency": currency,
        "entry_count": sum(g.entries for g in now_groups),
        "spent": money(spent),
        "credited": money(sum(g.credit for g in now_groups if g.kind != "usage")),
        "other_debits": money(-sum(g.debit for g in now_groups if g.kind != "usage")),
        "net": money(sum(g.amount for g in now_groups)),
        "services": _services(now_groups, spent, money),
        "subaccounts": _members(now_groups, members, spent, money),
        "previous": _previous(spent, _spent([g for g in groups if g.day == PREVIOUS]), money),
        "daily": _daily(now_groups, daily, days, locale, money),
        "highest_day": highest_day_context(days, daily, locale, money),
        "average_daily": money(divide(spent, len(days))),
        "balance_end": money(end.amount if end else holding.now),
        "balance_end_source": end.source if end else "derived",
        "balance_now": money(holding.now),
        "usage": usage_context(
            holding.figures,
            holding.now,
            currency,
            options.recommend_days,
            window_days=options.window_days,
            min_history=options.min_history,
        ),
    }
    return section, _csv_rows(now_groups, days, members, currency)


def _previous(spent: int, before: int, money: Callable[[int], Money]) -> dict[str, Any]:
    """The ``previous`` key: spent in the period before, and the change to this one."""
    return {
        "spent": money(before),
        "change": money(abs(spent - before)),
        "change_percent": percent(abs(spent - before), before),
        "direction": "up" if spent > before else "down" if spent < before else "same",
    }


def _daily(
    groups: Sequence[Group],
    daily: Sequence[int],
    days: Sequence[LocalDay],
    locale: str,
    money: Callable[[int], Money],
) -> list[dict[str, Any]]:
    """The ``daily`` key: spent and entries per local day, with the bar's length."""
    day_entries = [0] * len(days)
    for g in groups:
        day_entries[g.day] += g.entries
    highest = max(daily, default=0)
    return [
        {
            "date": day.date,
            "label": day_label(day.date, locale),
            "spent": money(daily[i]),
            "entry_count": day_entries[i],
            "bar_percent": bar_percent(daily[i], highest),
        }
        for i, day in enumerate(days)
    ]


def _csv_rows(
    groups: Sequence[Group], days: Sequence[LocalDay], members: Sequence[Member], currency: str
) -> list[tuple[str, ...]]:
    names = {m.id: m.name for m in members}
    return [
        (
            days[g.day].date.isoformat(),
            currency,
            g.member,
            names.get(g.member, g.member),
            g.kind,
            g.service or "",
            optional_int(g.quantity),
            major_text(g.amount, currency),
            str(g.entries),
        )
        for g in sorted(groups, key=lambda g: (g.day, g.member, g.kind, g.service or ""))
    ]


def _services(groups: Sequence[Group], spent: int, money: Callable[[int], Money]) -> list[dict[str, Any]]:
    totals: dict[str | None, list[Any]] = {}
    for g in groups:
        if g.kind != "usage":
            continue
        entry = totals.setdefault(g.service, [0, None, 0])
        entry[0] -= g.amount
        if g.quantity is not None:
            entry[1] = (entry[1] or 0) + g.quantity
        entry[2] += g.entries
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1][0], kv[0] or ""))
    return [
        {
            "service": service,
            "name": service or NO_SERVICE,
            "spent": money(cost),
            "quantity": quantity,
            "entry_count": entries,
            "share_percent": percent(cost, spent),
        }
        for service, (cost, quantity, entries) in ranked
    ]


def _members(
    groups: Sequence[Group], members: Sequence[Member], spent: int, money: Callable[[int], Money]
) -> list[dict[str, Any]]:
    if len(members) < 2:
        return []
    used: dict[str, int] = defaultdict(int)
    for g in groups:
        if g.kind == "usage":
            used[g.member] -= g.amount
    ranked = sorted(members, key=lambda m: (not m.main, -used[m.id], m.id))
    return [
        {
            "id": m.id,
            "name": m.name,
            "main": m.main,
            "spent": money(used[m.id]),
            "share_percent": percent(used[m.id], spent),
        }
        for m in ranked
    ]
