"""Which period a report covers: the last complete local day, ISO week or month before a moment.

A period is ``[start, end)`` between two local midnights of its zone, so a
day is 23 or 25 hours long on a DST change and nothing falls between two
consecutive periods. A local midnight that does not exist (a zone that
springs forward at 00:00) is the first instant of that date.

Keys name periods in claims and idempotency keys: ``2026-03-14`` (day),
``2026-W11`` (ISO week, Monday to Sunday), ``2026-03`` (month). A
low-balance report is a snapshot: its "period" is the moment itself
(kind ``now``, key ``2026-03-14T08:00+0100``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from balancewatch.reports.base import Period

KINDS = ("day", "week", "month")
LAST = "last"
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_EXAMPLES = {"day": "2026-03-14", "week": "2026-W11", "month": "2026-03"}


class PeriodError(ValueError):
    """A period as typed that cannot be used; the message says what to write instead."""


def local_midnight(day: date, zone: str) -> datetime:
    """The first instant of ``day`` in ``zone``, as an aware datetime in that zone."""
    tz = ZoneInfo(zone)
    # fold=0 places a wall time that does not exist by the offset before the change:
    # the UTC round trip turns it into the instant the day actually begins.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC).astimezone(tz)


def period_of(kind: str, first_day: date, zone: str) -> Period:
    """The ``kind`` period that starts on ``first_day`` (a Monday for weeks, the 1st for months)."""
    if kind == "day":
        end_day, key = first_day + timedelta(days=1), first_day.isoformat()
    elif kind == "week":
        if first_day.weekday() != 0:
            raise ValueError(f"a week starts on a Monday, not on {first_day:%A} {first_day}")
        year, week, _ = first_day.isocalendar()
        end_day, key = first_day + timedelta(days=7), f"{year}-W{week:02d}"
    elif kind == "month":
        if first_day.day != 1:
            raise ValueError(f"a month starts on the 1st, not on {first_day}")
        end_day, key = _next_month(first_day), f"{first_day:%Y-%m}"
    else:
        raise ValueError(f"{kind!r} is not a period; one of {', '.join(KINDS)}")
    return Period(kind, local_midnight(first_day, zone), local_midnight(end_day, zone), zone, key)


def period_before(kind: str, moment: datetime, zone: str) -> Period:
    """The last complete ``kind`` period that ends at or before ``moment``, in ``zone``."""
    today = moment.astimezone(ZoneInfo(zone)).date()
    if kind == "day":
        first = today - timedelta(days=1)
    elif kind == "week":
        first = today - timedelta(days=today.weekday() + 7)
    elif kind == "month":
        first = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    else:
        raise ValueError(f"{kind!r} is not a period; one of {', '.join(KINDS)}")
    return period_of(kind, first, zone)


def snapshot(moment: datetime, zone: str) -> Period:
    """The "period" of a low-balance report sent at ``moment``: that moment, keyed by its local minute."""
    local = moment.astimezone(ZoneInfo(zone)).replace(second=0, microsecond=0)
    return Period("now", local, local, zone, local.strftime("%Y-%m-%dT%H:%M%z"))


def report_period(kind: str | None, moment: datetime, zone: str) -> Period:
    """What a report with period ``kind`` (None: a snapshot) sent at ``moment`` covers."""
    return snapshot(moment, zone) if kind is None else period_before(kind, moment, zone)


def parse_period(text: str, kind: str | None, zone: str, now: datetime) -> Period:
    """The period ``--period TEXT`` names for a report covering ``kind`` periods, in ``zone``.

    ``last`` is the last complete period before ``now``. A period must be
    complete by ``now`` and of the report's kind; raises PeriodError saying
    what to write instead. A snapshot report (``kind`` None) takes only ``last``.
    """
    text = text.strip()
    if kind is None:
        if text != LAST:
            raise PeriodError(
                f"--period {text}: a low-balance report is a snapshot of now; leave --period out"
            )
        return snapshot(now, zone)
    if text == LAST:
        return period_before(kind, now, zone)
    named = _named_kind(text)
    if named is None:
        raise PeriodError(
            f"--period {text}: write a day (2026-03-14), an ISO week (2026-W11), a month (2026-03) or last"
        )
    if named != kind:
        raise PeriodError(
            f"--period {text} names a {named}, but this report covers {kind}s; "
            f"write e.g. --period {_EXAMPLES[kind]} or --period last"
        )
    try:
        period = period_of(kind, _first_day(kind, text), zone)
    except ValueError:
        raise PeriodError(f"--period {text}: no such {kind}") from None
    if period.end > now:
        raise PeriodError(
            f"--period {text} is not over yet (it ends {period.end:%Y-%m-%d %H:%M %Z}); "
            "a report covers a complete period"
        )
    return period


def _named_kind(text: str) -> str | None:
    if _DAY.match(text):
        return "day"
    if _WEEK.match(text):
        return "week"
    if _MONTH.match(text):
        return "month"
    return None


def _first_day(kind: str, text: str) -> date:
    """Raises ValueError for a date that does not exist (2026-02-30, 2026-W60, 2026-13)."""
    if kind == "day":
        return date.fromisoformat(text)
    if kind == "week":
        m = _WEEK.match(text)
        assert m is not None
        return date.fromisocalendar(int(m[1]), int(m[2]), 1)
    return date.fromisoformat(f"{text}-01")


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)
