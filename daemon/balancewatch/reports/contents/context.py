"""The parts of a report's template context that do not depend on its contents kind
(docs/reports.md, "What every report template receives"), each built here once: ``report``,
``period``, ``account`` (from ``render.context``), a section per currency, the highest day.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

from balancewatch.config import EmailSettings
from balancewatch.core.money import Money
from balancewatch.render.context import account_context, email_context
from balancewatch.render.filters import plain_spaces
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.batch import Holding
from balancewatch.reports.contents.localdays import LocalDay, day_label, local_days, span_label
from balancewatch.reports.contents.options import Options
from balancewatch.rules.reports import CompiledReport

Section = tuple[dict[str, Any], list[tuple[str, ...]]]  # one currency's context and its CSV rows


def locale_of(account: AccountInfo | None, options: Options) -> str:
    """The account's locale, else ``defaults.locale``."""
    return (account.locale if account is not None else "") or options.default_locale


def report_context(report: CompiledReport) -> dict[str, Any]:
    """The ``report`` key: what the report rule says about itself."""
    return {
        "id": report.id,
        "description": report.description,
        "contents": report.contents,
        "period": report.period,
        "attach_csv": report.attach_csv,
    }


def period_context(period: Period, now: datetime, locale: str) -> dict[str, Any]:
    """The ``period`` key: its kind and key, start and end in its zone, first and last local
    day, how many days, and its label in ``locale`` (a snapshot's: ``now``, formatted)."""
    zone = ZoneInfo(period.timezone)
    days = local_days(period) if period.kind in ("day", "week", "month") else ()
    first: date
    if days:
        first, last = days[0].date, days[-1].date
        label = span_label(period.kind, first, last, locale)
    else:
        first = last = now.astimezone(zone).date()
        label = plain_spaces(format_datetime(now, "medium", tzinfo=zone, locale=locale))
    return {
        "kind": period.kind,
        "key": period.key,
        "start": period.start.astimezone(zone),
        "end": period.end.astimezone(zone),
        "first_day": first,
        "last_day": last,
        "days": len(days),
        "label": label,
    }


def base_context(
    report: CompiledReport,
    account: AccountInfo | None,
    period: Period,
    now: datetime,
    locale: str,
    *,
    email: EmailSettings | None = None,
) -> dict[str, Any]:
    """The keys every report context has: locale, timezone, now, email (the ``email:`` settings
    given, else their defaults), report, period and (for an owner's report) account."""
    context: dict[str, Any] = {
        "locale": locale,
        "timezone": period.timezone,
        "now": now,
        "email": email_context(email),
        "report": report_context(report),
        "period": period_context(period, now, locale),
    }
    if account is not None:
        context["account"] = account_context(account.id, account.name, account.owner_email, account.labels)
    return context


def highest_day_context(
    days: Sequence[LocalDay], spent: Sequence[int], locale: str, money: Callable[[int], Money]
) -> dict[str, Any] | None:
    """The ``highest_day`` of a section: the day with the most spent (the first of equals), with
    its label and amount; None when nothing was spent."""
    highest = max(spent, default=0)
    if highest <= 0:
        return None
    top = spent.index(highest)
    return {"date": days[top].date, "label": day_label(days[top].date, locale), "spent": money(highest)}


def assemble(
    account: AccountInfo,
    context: dict[str, Any],
    holdings: Sequence[Holding],
    items: Iterable[Any],
    section: Callable[[Holding, list[Any]], Section],
    active: Callable[[dict[str, Any]], Any],
    csv_header: tuple[str, ...],
) -> Built:
    """An account's report: one section per balance held, from the ``items`` (each with a
    ``currency``) in that currency, in holding order; empty when no section is ``active``."""
    by_currency: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        by_currency[item.currency].append(item)
    sections, rows = [], []
    for holding in holdings:
        part, part_rows = section(holding, by_currency[holding.currency])
        sections.append(part)
        rows.extend(part_rows)
    empty = not any(active(s) for s in sections)
    context["currencies"] = sections
    context["empty"] = empty
    return Built(account, context, csv_header, rows, empty)
