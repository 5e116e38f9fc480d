"""Report schedules as five-field cron expressions: the shorthands ('daily at 08:00', 'weekly on
monday', 'monthly on 1'), how a written cron expression is checked, and the one spelling it is
kept in (the one ``cronsim`` reads and ``reports.schedule`` lists fire times from).

Cron's meaning throughout (Debian's, as cronsim implements it: 0 and 7 are Sunday), with two
exceptions that keep schedules unambiguous: restricting both the day of the month and the day
of the week is refused (cron would send when either matches), and a monthly shorthand takes
only days every month has.
"""

from __future__ import annotations

import re
from datetime import datetime

from cronsim import CronSim, CronSimError

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SHORTHAND = re.compile(
    r"^(?P<every>daily|weekly|monthly)"
    r"(?:\s+on\s+(?P<on>[a-z]+|\d{1,2}))?"
    r"(?:\s+at\s+(?P<hour>\d{1,2}):(?P<minute>\d{2}))?$"
)
SCHEDULE_HINT = (
    "write 'daily at 08:00', 'weekly on monday at 08:00', 'monthly on 1 at 08:00', "
    "or a cron expression such as '0 8 * * *'"
)


def to_cron(schedule: str) -> str:
    """The five-field cron expression of ``schedule`` (cron or shorthand), as ``cronsim`` reads it:
    the day of the week spelled as day names ('mon,tue', '*' for every day), the last day of the
    month as 'L'. Raises ValueError saying what to write instead.
    """
    text = " ".join(str(schedule).strip().lower().split())
    m = _SHORTHAND.match(text)
    if m:
        return _shorthand_cron(m)
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"{schedule!r} is not a schedule; {SCHEDULE_HINT}")
    if fields[2] != "*" and fields[4] != "*":
        # Cron then sends when either day matches, which reads as if both had to: too easily misread.
        raise ValueError(
            f"{schedule!r} restricts both the day of the month and the day of the week; give one of them "
            "(e.g. '0 8 1 * *' or '0 8 * * mon')"
        )
    fields[2] = "L" if fields[2] == "last" else fields[2].upper()  # 'last' is the spelling rules have used
    try:
        fields[4] = _weekday_names(fields[4])
        text = " ".join(fields)
        CronSim(text, _EPOCH)
    except (ValueError, CronSimError) as exc:
        raise ValueError(
            f"{schedule!r} is not a valid cron expression ({_cron_problem(fields, exc)}); {SCHEDULE_HINT}"
        ) from None
    return text


_EPOCH = datetime(2000, 1, 1)  # any start: cronsim checks an expression when it is built
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's numbers: 0 (and 7) is Sunday
_FIELD_RANGES = (("minute", 0, 59), ("hour", 0, 23), ("day of the month", 1, 31), ("month", 1, 12))


def _weekday_names(field: str) -> str:
    """The cron day-of-week ``field`` as day names, Monday first ('mon,wed'); '*' for every day.

    Read as cron reads it (0 and 7 are Sunday), and ranges and steps as rules have always
    read them: Sunday starts a range as 0 and ends one as 7 ('7-1' is Sunday and Monday,
    'fri-0' Friday to Sunday), and a step from one day ('1/2') steps up to Saturday.
    Raises ValueError.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.split(","):
        span, slash, step = item.partition("/")
        slash = slash if step else ""  # 'mon-fri/': read as no step, as rules always have
        low, dash, high = span.partition("-")
        first = "0" if low == "7" else low  # Sunday starts a range as 0 ...
        if not dash:
            last = "6" if slash and span != "*" else ""  # ... a step from one day runs to Saturday
        elif high == low:
            last = first  # 'mon-mon', '7-7': that day alone
        else:
            last = "7" if high in ("0", "sun") else high  # ... and Sunday ends a range as 7
        spec = f"{first}-{last}" if last else span
        try:
            parsed = CronSim(f"* * * * {spec}{slash}{step}", _EPOCH).weekdays  # 0-7, or (day, nth)
        except CronSimError:
            parsed = set()
        if not parsed or not all(isinstance(day, int) for day in parsed):  # 'L' and '#' have no names
            raise ValueError(f"day of week {item!r}: write 0-7 (0 and 7 are Sunday) or mon ... sun")
        days.update(day % 7 for day in parsed if isinstance(day, int))
    if len(days) == 7:
        return "*"
    return ",".join(_DAY_NAMES[day] for day in (1, 2, 3, 4, 5, 6, 0) if day in days)


def _cron_problem(fields: list[str], exc: Exception) -> str:
    """Why ``fields`` is not a cron expression, naming the field and the number out of its range."""
    if isinstance(exc, ValueError):  # from _weekday_names, which says what to write
        return str(exc)
    for (name, low, high), text in zip(_FIELD_RANGES, fields, strict=False):
        for number in map(int, re.findall(r"\d+", text.partition("/")[0])):
            if number > high:
                return f"the {name} ({number}) is higher than the maximum value ({high})"
            if number < low:
                return f"the {name} ({number}) is lower than the minimum value ({low})"
    if "day-of-month" in str(exc):  # cronsim refuses a day no month it names has, such as 30 2
        return "no month it names has that day"
    return f"cannot read the {str(exc).removeprefix('Bad ')}"


def _shorthand_cron(m: re.Match[str]) -> str:
    """The cron expression of a matched shorthand; raises ValueError for a time or day it cannot be."""
    hour, minute = int(m["hour"] or 8), int(m["minute"] or 0)
    if hour > 23 or minute > 59:
        raise ValueError(f"{m['hour']}:{m['minute']} is not a time of day; write e.g. 08:00")
    every, on = m["every"], m["on"]
    if every == "daily":
        if on:
            raise ValueError(f"daily takes no 'on {on}'; {SCHEDULE_HINT}")
        return f"{minute} {hour} * * *"
    if every == "weekly":
        day = on or "monday"
        if day not in _DAYS:
            raise ValueError(f"'{day}' is not a day of the week; write monday ... sunday")
        return f"{minute} {hour} * * {day[:3]}"
    day_of_month = int(on or 1) if (on or "1").isdigit() else None
    if day_of_month is None or not 1 <= day_of_month <= 28:
        raise ValueError(f"monthly on {on}: write a day of the month from 1 to 28 (every month has it)")
    return f"{minute} {hour} {day_of_month} * *"
