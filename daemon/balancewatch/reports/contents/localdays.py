"""Local days: the days of a period in its zone, the period before it, and their labels.

Local days are computed in Python (``zoneinfo``) as UTC instants of each local midnight, so a
23- or 25-hour day of a DST change is one day; the ledger is bucketed in SQL against those
instants (``grouped``), since SQLite has no time zones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_interval, format_skeleton

from balancewatch.render.filters import plain_spaces
from balancewatch.reports.base import Period


@dataclass(frozen=True, slots=True)
class LocalDay:
    """One local day of a period: its date and ``[start, end)`` as UTC instants."""

    date: date
    start: datetime
    end: datetime


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant the local ``day`` begins (at a DST gap over midnight, when the day begins)."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@lru_cache(maxsize=256)
def local_days(period: Period) -> tuple[LocalDay, ...]:
    """Every local day of ``period``, first to last, bounded by the period's own start and end."""
    zone = ZoneInfo(period.timezone)
    start, end = period.start.astimezone(UTC), period.end.astimezone(UTC)
    days = []
    day = period.start.astimezone(zone).date()
    while True:
        begins = max(local_midnight(day, zone), start)
        if begins >= end:
            break
        days.append(LocalDay(day, begins, min(local_midnight(day + timedelta(days=1), zone), end)))
        day += timedelta(days=1)
    return tuple(days)


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of local days ``[start, end)`` (UTC instants), first and last day included."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date
    key: str


def period_key(kind: str, first_day: date) -> str:
    """``2026-03-14``, ``2026-W11`` or ``2026-03``."""
    if kind == "month":
        return first_day.strftime("%Y-%m")
    if kind == "week":
        year, week, _ = first_day.isocalendar()
        return f"{year}-W{week:02d}"
    return first_day.isoformat()


@lru_cache(maxsize=256)
def previous_span(period: Period) -> Span:
    """The day, week or month just before ``period``, ending where it starts."""
    zone = ZoneInfo(period.timezone)
    first = period.start.astimezone(zone).date()
    if period.kind == "month":
        begins = (first - timedelta(days=1)).replace(day=1)
    elif period.kind == "week":
        begins = first - timedelta(days=7)
    else:
        begins = first - timedelta(days=1)
    return Span(
        local_midnight(begins, zone),
        period.start.astimezone(UTC),
        begins,
        first - timedelta(days=1),
        period_key(period.kind, begins),
    )


@lru_cache(maxsize=1024)
def span_label(kind: str, first: date, last: date, locale: str) -> str:
    """``March 2026``, ``Mar 9 – 15, 2026`` or ``Sat, Mar 14, 2026`` in ``locale``."""
    if kind == "month":
        return plain_spaces(format_skeleton("yMMMM", first, locale=locale))
    if kind == "week":
        return plain_spaces(format_interval(first, last, "yMMMd", locale=locale))
    return plain_spaces(format_skeleton("yMMMEd", first, locale=locale))


# A batch formats the same few dates in a few locales for thousands of accounts.
@lru_cache(maxsize=8192)
def day_label(day: date, locale: str) -> str:
    """``Sun, Mar 1`` in en_US, ``So., 1. März`` in de_DE."""
    return plain_spaces(format_skeleton("MMMEd", day, locale=locale))
