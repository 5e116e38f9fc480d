"""Low balances, for operators: every balance below one of its alert steps right now.

A balance is low when a rule's step is fired for it and the balance is at or
below that step; a step that follows usage (stored under a negative key, its
amount moving with usage) counts while it is fired. Each balance appears once,
with the lowest such fixed step (``step``), the share of that step the balance
still holds (``step_left_percent``), the rules, its average daily usage
(``usage.window_days``) and runway (balance / ADU in days, rounded down to a
tenth).

Most urgent first, in an order that compares balances of different currencies
by ratios only, never by their amounts (₹1,371 is not "lower" than $239.17):
used-up balances first; then balances with a fixed step, by the fraction of
the step left (balance ÷ step), smallest first; then balances whose only fired
steps follow usage (their amount is not stored), by runway. Ties go to the
shorter runway, a balance without one after, then to the account id and
currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, or_, select

from balancewatch.config import Settings
from balancewatch.core.money import Money
from balancewatch.evaluate.candidates import account_filter
from balancewatch.evaluate.usage import OK
from balancewatch.render.context import runway_days
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents.context import base_context
from balancewatch.reports.contents.numbers import major_text
from balancewatch.reports.contents.options import Options
from balancewatch.rules.reports import CompiledReport
from balancewatch.store.tables import ACCOUNT_TABLE, ALERT_STATE_TABLE, BALANCE_TABLE, USAGE_SUMMARY_TABLE

CSV_HEADER = (
    "rank",
    "account_id",
    "account_name",
    "owner_email",
    "currency",
    "balance",
    "adu",
    "runway_days",
    "step",
    "step_left_percent",
    "rules",
    "fired_at",
)


@dataclass
class Low:
    """One low balance and what is known about it."""

    account_id: str
    name: str
    owner_email: str
    currency: str
    balance: int
    adu: int | None
    steps: set[int] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)
    fired_at: datetime | None = None

    @property
    def runway(self) -> Decimal | None:
        """Days the balance lasts at its ADU, rounded down to a tenth; None without an ADU."""
        return runway_days(self.balance, self.adu)

    @property
    def step(self) -> int | None:
        """The lowest fired fixed step (minor units); None when only steps that follow usage fired."""
        return min((s for s in self.steps if s >= 0), default=None)

    @property
    def step_left(self) -> Fraction | None:
        """The fraction of :attr:`step` the balance still holds, from 0 (used up, or a step of
        0 reached) to 1 (at the step); None without a fixed step. A ratio: the same measure in
        every currency."""
        step = self.step
        if step is None:
            return None
        return Fraction(max(self.balance, 0), step) if step > 0 else Fraction(0)

    @property
    def step_left_percent(self) -> Decimal | None:
        """:attr:`step_left` in percent, rounded down to a whole number (so 99.9 % reads 99)."""
        left = self.step_left
        return None if left is None else Decimal(int(left * 100))

    def urgency(self) -> tuple[Any, ...]:
        """The sort key (see the module docstring): used up first, then by the fraction of the
        step left, then balances with usage steps only; ties by runway, account id, currency.
        Amounts are compared only as ratios, so currencies never rank against each other."""
        runway = (0, Fraction(max(self.balance, 0), self.adu)) if self.adu else (1, Fraction(0))
        left = self.step_left
        if self.balance <= 0:
            group = (0, Fraction(0))
        elif left is not None:
            group = (1, left)
        else:
            group = (2, Fraction(0))
        return (*group, *runway, self.account_id, self.currency)


def build(
    conn: Connection,
    report: CompiledReport,
    accounts: Sequence[AccountInfo],
    period: Period,
    now: datetime,
    settings: Settings,
    *,
    rule_ids: Sequence[str] | None = None,
) -> Iterator[Built]:
    """One Built for the operators (``account`` None) over every balance of an account matching
    the report's selector that is low now (``accounts`` is not consulted). ``rule_ids``: the rules
    of the live set whose fired steps count (None: every fired step). One query."""
    options = Options.of(settings)
    yield report_of(report, period, now, options, find(conn, report, options.window_days, rule_ids))


def find(
    conn: Connection, report: CompiledReport, window_days: int, rule_ids: Sequence[str] | None
) -> list[Low]:
    """Every low balance of an account the report's selector matches, most urgent first."""
    account, balance = ACCOUNT_TABLE.c, BALANCE_TABLE.c
    state, summary = ALERT_STATE_TABLE.c, USAGE_SUMMARY_TABLE.c
    fired = and_(
        state.account_id == balance.account_id,
        state.currency == balance.currency,
        state.status == "fired",
        or_(state.step < 0, balance.amount <= state.step),
    )
    if rule_ids is not None:
        fired = and_(fired, state.rule_id.in_(list(rule_ids)))
    summarised = and_(
        summary.account_id == balance.account_id,
        summary.currency == balance.currency,
        summary.window_days == window_days,
    )
    query = (
        select(
            balance.account_id,
            balance.currency,
            balance.amount,
            account.name,
            account.owner_email,
            state.rule_id,
            state.step,
            state.fired_at,
            summary.adu,
            summary.status,
        )
        .select_from(
            BALANCE_TABLE.join(ACCOUNT_TABLE, account.id == balance.account_id)
            .join(ALERT_STATE_TABLE, fired)
            .outerjoin(USAGE_SUMMARY_TABLE, summarised)
        )
        .where(*account_filter(report.selector))
        .order_by(balance.account_id, balance.currency)
    )
    if report.selector.currencies is not None:
        query = query.where(balance.currency.in_(report.selector.currencies))
    return sorted(_collect(conn.execute(query)), key=Low.urgency)


def _collect(rows: Iterable[Any]) -> Iterator[Low]:
    current: Low | None = None
    for r in rows:
        if current is None or (current.account_id, current.currency) != (r.account_id, r.currency):
            if current is not None:
                yield current
            adu = int(r.adu) if r.adu is not None and r.status == OK else None
            current = Low(r.account_id, r.name, r.owner_email, r.currency, int(r.amount), adu)
        current.steps.add(int(r.step))
        current.rules.add(r.rule_id)
        if r.fired_at is not None and (current.fired_at is None or r.fired_at < current.fired_at):
            current.fired_at = r.fired_at
    if current is not None:
        yield current


def report_of(
    report: CompiledReport, period: Period, now: datetime, options: Options, lows: Sequence[Low]
) -> Built:
    """The operators' report of ``lows`` (already in order)."""
    context = base_context(report, None, period, now, options.default_locale, email=options.email)
    zone = ZoneInfo(period.timezone)
    balances: list[dict[str, Any]] = []
    rows: list[tuple[str, ...]] = []
    for rank, low in enumerate(lows, start=1):
        step = low.step
        balances.append(
            {
                "rank": rank,
                "account": {"id": low.account_id, "name": low.name, "owner_email": low.owner_email},
                "currency": low.currency,
                "balance": Money(low.balance, low.currency),
                "adu": None if low.adu is None else Money(low.adu, low.currency),
                "runway_days": low.runway,
                "step": None if step is None else Money(step, low.currency),
                "step_left_percent": low.step_left_percent,
                "follows_usage": any(s < 0 for s in low.steps),
                "exhausted": low.balance <= 0,
                "rules": sorted(low.rules),
                "fired_at": low.fired_at,
            }
        )
        rows.append(
            (
                str(rank),
                low.account_id,
                low.name,
                low.owner_email,
                low.currency,
                major_text(low.balance, low.currency),
                "" if low.adu is None else major_text(low.adu, low.currency),
                "" if low.runway is None else str(low.runway),
                "" if step is None else major_text(step, low.currency),
                "" if low.step_left_percent is None else str(low.step_left_percent),
                " ".join(sorted(low.rules)),
                "" if low.fired_at is None else low.fired_at.astimezone(zone).isoformat(timespec="seconds"),
            )
        )
    context["balances"] = balances
    context["count"] = len(balances)
    context["accounts_count"] = len({low.account_id for low in lows})
    context["exhausted_count"] = sum(1 for b in balances if b["exhausted"])
    context["window_days"] = options.window_days
    context["empty"] = not balances
    return Built(None, context, CSV_HEADER, rows, not balances)
