"""Scheduled reports, written in rule files beside the alerts::

    reports:
      - id: daily-usage
        schedule: daily at 08:00          # or cron: "0 8 * * *"
        timezone: account                 # each account's own, or a zone: Europe/Berlin
        accounts: {billing: prepaid}
        contents: usage                   # usage | daywise | transactions | low-balance
        period: day                       # day | week | month (what the report covers)
        notify: [owner]
        template: usage-report
        attach_csv: true
        empty: skip                       # skip | send ("no usage in this period")

The schedule says when a report is sent; the period is the last complete
day, week (Monday to Sunday) or month before that moment, in the report's
timezone. A low-balance report is a snapshot of now for operators: it goes
to fixed addresses, never to owners.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from balancewatch.rules.compiled import Selector, compile_selector
from balancewatch.rules.models import (
    OWNER,
    PREFERENCES,
    RECIPIENTS_SCHEMA,
    Address,
    RuleId,
    TemplateName,
    _split_recipients,
    _Strict,
)
from balancewatch.rules.models import (
    Selector as SelectorModel,
)

Contents = Literal["usage", "daywise", "transactions", "low-balance"]
Period = Literal["day", "week", "month"]
DEFAULT_TEMPLATES: dict[str, str] = {
    "usage": "usage-report",
    "daywise": "daywise-report",
    "transactions": "transactions-report",
    "low-balance": "low-balance-report",
}
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
            last = first  # '7-7': Sunday alone
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


def _schedule(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a schedule; {SCHEDULE_HINT}")
    return to_cron(value)


def _timezone(value: Any) -> str:
    if value == "account":
        return value
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone; write account or an IANA zone such as Europe/Berlin"
        ) from None
    return str(value)


class ReportRule(_Strict):
    """One scheduled report: when, for which accounts, what it contains, to whom."""

    id: RuleId = Field(
        description="The report's stable name; a report is sent once per id, account and period."
    )
    description: str = Field(default="", description="Free text; templates show it as report.description.")
    enabled: bool = Field(default=True, description="false sends nothing; true again resumes the schedule.")
    schedule: Annotated[str, BeforeValidator(_schedule)] = Field(
        description="When to send: 'daily at 08:00', 'weekly on monday at 08:00', 'monthly on 1 at 08:00', "
        "or cron '0 8 * * *', in the report's timezone.",
    )
    timezone: Annotated[str, BeforeValidator(_timezone)] = Field(
        default="account",
        description="account: each account's own timezone (the default), or an IANA zone for all.",
    )
    accounts: SelectorModel = Field(
        default_factory=SelectorModel,
        description="Which accounts get the report. Default: every prepaid account.",
    )
    contents: Contents = Field(
        description="usage (spending, by service and subaccount, against the previous period), daywise (one "
        "row per day), transactions (every credit and debit with the balance after it), or low-balance "
        "(operators: every balance below an alert step now).",
    )
    period: Period | None = Field(
        default=None,
        description="The complete day, week (Monday to Sunday) or month before the send time. Default: "
        "day for daily schedules, week for weekly, month for monthly; daywise is always a month.",
    )
    notify: Annotated[
        list[Address], BeforeValidator(_split_recipients), WithJsonSchema(RECIPIENTS_SCHEMA)
    ] = Field(
        default_factory=lambda: [OWNER],
        description="Who gets it: owner and/or addresses. A low-balance report goes to addresses only.",
    )
    template: TemplateName | None = Field(
        default=None,
        description="The template; default usage-report, daywise-report, transactions-report "
        "or low-balance-report by contents.",
    )
    attach_csv: bool = Field(default=False, description="Attach the rows as a CSV file.")
    empty: Literal["skip", "send"] = Field(
        default="skip", description="skip: send nothing for a period without activity; send: say so."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReportRule:
        if PREFERENCES in self.notify:
            raise ValueError(
                "notify: 'preferences' is for alerts (the addresses an owner added for low-balance "
                "emails); a report goes to owner and the addresses named here"
            )
        if self.contents == "low-balance" and OWNER in self.notify:
            raise ValueError("notify: a low-balance report is for operators; name their addresses, not owner")
        if self.contents == "low-balance" and self.period is not None:
            raise ValueError(
                "period: a low-balance report is a snapshot of the moment it is sent; leave period out"
            )
        if self.contents == "daywise" and self.period not in (None, "month"):
            raise ValueError(f"period: a daywise report covers a month, one row per day; not a {self.period}")
        return self


@dataclass(frozen=True)
class CompiledReport:
    """A validated report ready for the scheduler."""

    id: str
    description: str
    enabled: bool
    cron: str
    timezone: str  # "account" or an IANA zone
    selector: Selector
    contents: str
    period: str | None  # None for low-balance (a snapshot)
    notify_owner: bool
    recipients: tuple[str, ...]
    template: str
    attach_csv: bool
    send_empty: bool
    source: str = ""
    line: int = 0
    model: ReportRule | None = field(default=None, compare=False, repr=False)


def compile_report(report: ReportRule, source: str = "", line: int = 0) -> CompiledReport:
    """Compile ``report``: the schedule as cron, the period and template defaults filled in."""
    return CompiledReport(
        id=report.id,
        description=report.description,
        enabled=report.enabled,
        cron=report.schedule,
        timezone=report.timezone,
        selector=compile_selector(report.accounts),
        contents=report.contents,
        period=None if report.contents == "low-balance" else _period(report),
        notify_owner=OWNER in report.notify,
        recipients=tuple(dict.fromkeys(a for a in report.notify if a != OWNER)),
        template=report.template or DEFAULT_TEMPLATES[report.contents],
        attach_csv=report.attach_csv,
        send_empty=report.empty == "send",
        source=source,
        line=line,
        model=report,
    )


def _period(report: ReportRule) -> str:
    if report.contents == "daywise":
        return "month"
    if report.period is not None:
        return report.period
    # Once a month -> month, once a week -> week; anything more often (weekdays, hourly) -> day.
    day_of_month, day_of_week = report.schedule.split(" ")[2], report.schedule.split(" ")[4]
    if day_of_month.isdigit() or day_of_month in ("L", "LW"):
        return "month"
    return "week" if day_of_week != "*" and "," not in day_of_week else "day"
