"""Realistic invented report contexts, built by the same code as real ones, for ``check`` and previews.

Every shape a report template sees: a month, a week and a day; subaccounts or
none; usage figures or too short a history; entries whose balance comes from
the ledger and entries whose balance is computed; and an empty period.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from balancewatch.evaluate.usage import OK, SHORT, Figures
from balancewatch.reports.base import AccountInfo, Period
from balancewatch.reports.contents import daywise, low_balance, transactions, usage
from balancewatch.reports.contents.batch import LEDGER_SOURCE, Holding, Member, Point
from balancewatch.reports.contents.grouped import PREVIOUS, Group
from balancewatch.reports.contents.localdays import local_days, local_midnight, period_key
from balancewatch.reports.contents.low_balance import Low
from balancewatch.reports.contents.options import Options
from balancewatch.reports.contents.transactions import Entry
from balancewatch.rules.reports import CompiledReport, ReportRule, compile_report

SAMPLE_NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
SAMPLE_ZONE = "America/New_York"
OPTIONS = Options()
ACCOUNT = AccountInfo(
    "acme-42", "Acme Messaging Ltd", "billing@acme.example", "en_US", SAMPLE_ZONE, {"tier": "gold"}
)
MEMBERS = (
    Member("acme-42", "Acme Messaging Ltd", True),
    Member("acme-eu", "Acme Europe", False),
    Member("acme-us", "Acme US", False),
)
SCHEDULES = {"day": "daily at 08:00", "week": "weekly on monday at 08:00", "month": "monthly on 1 at 08:00"}


def sample_period(kind: str, zone: str = SAMPLE_ZONE) -> Period:
    """March 2026 (with a 23-hour day in New York), the week of 9 to 15 March, or 14 March."""
    tz = ZoneInfo(zone)
    first = {"month": date(2026, 3, 1), "week": date(2026, 3, 9), "day": date(2026, 3, 14)}[kind]
    after = {"month": date(2026, 4, 1), "week": date(2026, 3, 16), "day": date(2026, 3, 15)}[kind]
    start, end = local_midnight(first, tz).astimezone(tz), local_midnight(after, tz).astimezone(tz)
    return Period(kind, start, end, zone, period_key(kind, first))


def sample_report(contents: str, kind: str = "month") -> CompiledReport:
    rule: dict[str, Any] = {
        "id": f"sample-{contents}",
        "description": f"Sample {contents} report",
        "schedule": SCHEDULES[kind],
        "contents": contents,
        "attach_csv": True,
    }
    if contents == "low-balance":
        rule["notify"] = ["ops@platform.example"]
    elif contents != "daywise":
        rule["period"] = kind
    return compile_report(ReportRule.model_validate(rule))


def _figures(short: bool = False) -> Figures:
    first = SAMPLE_NOW - (timedelta(hours=20) if short else timedelta(days=90))
    if short:
        return Figures("acme-42", "USD", 30, 4_150, Decimal("0.83"), first, None, SHORT)
    return Figures("acme-42", "USD", 30, 126_000, Decimal(30), first, 4_200, OK)


def _usage_groups(days: int, subaccounts: bool = True) -> list[Group]:
    """A month of SMS (Europe), voice (US) and a number rental, a top-up and a correction."""
    groups = []
    sms_member = "acme-eu" if subaccounts else "acme-42"
    voice_member = "acme-us" if subaccounts else "acme-42"
    for day in range(days):
        messages = 4 * (700 + (day * 37) % 13 * 45)  # $0.0075 each
        minutes = 10 * (20 + (day * 53) % 7 * 3)  # $0.014 a minute
        groups.append(Group("USD", day, 0, -messages * 3 // 4, 1, sms_member, "usage", "sms", messages))
        groups.append(Group("USD", day, 0, -minutes * 14 // 10, 1, voice_member, "usage", "voice", minutes))
    groups.append(Group("USD", 0, 0, -2_500, 1, "acme-42", "usage", "number-rental", 1))
    if days > 9:
        groups.append(Group("USD", 9, 150_000, 0, 1, "acme-42", "top-up", None, None))
        groups.append(Group("USD", 20, 0, -1_250, 1, "acme-42", "adjustment", None, None))
    # The period before: a little busier, per day, than this one.
    groups.append(Group("USD", PREVIOUS, 0, -3_822 * days, days, sms_member, "usage", "sms", 5_096 * days))
    groups.append(Group("USD", PREVIOUS, 0, -322 * days, days, voice_member, "usage", "voice", 230 * days))
    return groups


def sample_usage_contexts() -> list[dict[str, Any]]:
    out = []
    for kind, subaccounts, short in (("month", True, False), ("week", False, True), ("day", True, False)):
        period = sample_period(kind)
        groups = _usage_groups(len(local_days(period)), subaccounts)
        members = MEMBERS if subaccounts else MEMBERS[:1]
        holding = Holding("USD", 84_120, (Point(91_374, LEDGER_SOURCE),), _figures(short))
        built = usage.account_report(
            sample_report("usage", kind), ACCOUNT, period, SAMPLE_NOW, OPTIONS, members, [holding], groups
        )
        out.append(built.context)
    out.append(_empty_usage())
    return out


def _empty_usage() -> dict[str, Any]:
    period = sample_period("month")
    holding = Holding("USD", 84_120, (Point(84_120, LEDGER_SOURCE),), _figures())
    report = sample_report("usage")
    return usage.account_report(
        report, ACCOUNT, period, SAMPLE_NOW, OPTIONS, MEMBERS[:1], [holding], []
    ).context


def sample_daywise_contexts() -> list[dict[str, Any]]:
    period = sample_period("month")
    groups = [
        Group(g.currency, g.day, g.credit, g.debit, g.entries, "", g.kind, None, g.quantity)
        for g in _usage_groups(len(local_days(period)))
        if g.day >= 0
    ]
    holding = Holding("USD", 84_120, (Point(91_374, LEDGER_SOURCE),))
    report = sample_report("daywise")
    full = daywise.account_report(report, ACCOUNT, period, SAMPLE_NOW, OPTIONS, [holding], groups)
    empty_holding = Holding("USD", 84_120, (Point(84_120, LEDGER_SOURCE),))
    empty = daywise.account_report(report, ACCOUNT, period, SAMPLE_NOW, OPTIONS, [empty_holding], [])
    return [full.context, empty.context]


def _entries(period: Period) -> list[Entry]:
    """A week of entries: daily SMS and voice charges, a top-up, a refund; the voice platform
    writes no balance_after."""
    start = period.start.astimezone(UTC)
    raw: list[tuple[timedelta, str, int, str, str | None, int | None, str | None]] = []
    for day in range(7):
        at = timedelta(days=day)
        raw.append(
            (at + timedelta(hours=9, minutes=5), "acme-eu", -2_310, "usage", "sms", 3_080, f"sms-{day}")
        )
        raw.append((at + timedelta(hours=17, minutes=40), "acme-us", -364, "usage", "voice", 260, None))
    raw.append((timedelta(days=2, hours=11, minutes=12), "acme-42", 50_000, "top-up", None, None, "ch_3PkX9"))
    raw.append((timedelta(days=4, hours=14), "acme-42", 1_250, "refund", None, None, "ticket-1182"))
    raw.sort(key=lambda r: r[0])
    balance, running, out = 12_480, 0, []
    for n, (at, member, amount, kind, service, quantity, reference) in enumerate(raw, start=1):
        balance += amount
        running += amount
        after = None if service == "voice" else balance
        out.append(
            Entry(n, member, "USD", amount, kind, service, quantity, start + at, reference, after, running)
        )
    return out


def sample_transactions_contexts() -> list[dict[str, Any]]:
    period = sample_period("week")
    entries = _entries(period)
    closing = 12_480 + sum(e.amount for e in entries)
    holding = Holding("USD", closing, (Point(12_480, LEDGER_SOURCE), Point(closing, LEDGER_SOURCE)))
    report = sample_report("transactions", "week")
    full = transactions.account_report(
        report, ACCOUNT, period, SAMPLE_NOW, OPTIONS, MEMBERS, [holding], entries
    )
    quiet = Holding("USD", 12_480, (Point(12_480, LEDGER_SOURCE),) * 2)
    empty = transactions.account_report(
        report, ACCOUNT, period, SAMPLE_NOW, OPTIONS, MEMBERS[:1], [quiet], []
    )
    return [full.context, empty.context]


def sample_lows() -> list[Low]:
    """Five low balances: one used up, two with a runway, one without usage figures, one in INR."""
    fired = SAMPLE_NOW - timedelta(hours=30)
    lows = [
        Low("acme-42", "Acme Messaging Ltd", "billing@acme.example", "USD", 8_412, 4_200, {10_000}),
        Low("globex", "Globex Corp", "finance@globex.example", "USD", -37, 1_900, {0, 1_000}),
        Low("initech", "Initech", "ap@initech.example", "USD", 61_000, 15_250, {-1, 100_000}),
        Low("hooli-in", "Hooli India", "accounts@hooli.example", "INR", 45_000, None, {50_000}),
        Low("umbrella", "Umbrella <Labs>", "ops@umbrella.example", "EUR", 950, None, {1_000}),
    ]
    for low in lows:
        low.rules.update({"default-ladder"} if low.currency != "INR" else {"owner-alerts"})
        low.fired_at = fired
    return sorted(lows, key=Low.urgency)


def sample_low_balance_contexts() -> list[dict[str, Any]]:
    period = Period("now", SAMPLE_NOW, SAMPLE_NOW, "UTC", "now")
    report = sample_report("low-balance", "day")
    return [
        low_balance.report_of(report, period, SAMPLE_NOW, OPTIONS, sample_lows()).context,
        low_balance.report_of(report, period, SAMPLE_NOW, OPTIONS, []).context,
    ]


def sample_contexts(contents: str) -> list[dict[str, Any]]:
    """Sample contexts for a report template of ``contents`` (usage, daywise, transactions,
    low-balance), an empty period's among them; raises ValueError for another kind."""
    if contents not in MAKERS:
        raise ValueError(f"{contents!r} is not a report contents kind; one of {', '.join(MAKERS)}")
    return MAKERS[contents]()


# The sample contexts of each report contents kind.
MAKERS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "usage": sample_usage_contexts,
    "daywise": sample_daywise_contexts,
    "transactions": sample_transactions_contexts,
    "low-balance": sample_low_balance_contexts,
}
