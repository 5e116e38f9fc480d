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

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from balancewatch.rules.compiled import Selector, addresses, channel_references, compile_selector
from balancewatch.rules.crontab import SCHEDULE_HINT, to_cron
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
    # The config's channels named in notify (channel:NAME), each with the line naming it.
    channels: tuple[str, ...] = ()
    channel_lines: tuple[int, ...] = field(default=(), compare=False)


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
        recipients=addresses(report.notify),
        channels=channel_references(report.notify),
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
