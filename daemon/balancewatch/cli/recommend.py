"""``balancewatch recommend ACCOUNT``: the recommended alert threshold per currency, and its arithmetic.

The threshold is ``usage.recommend_days`` days of average daily usage (ADU),
computed now from the ledger exactly as the emails state it: the usage of the
paying account and its subaccounts over ``usage.window_days``, divided by the
days counted (the window, or the days since the first ledger entry when that
is later). Without enough history or without usage there is no
recommendation, and the output says why. A subaccount draws on its main
account's balance: the main account's recommendation is shown.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session, select

from balancewatch.cli.common import CommandError, Ctx
from balancewatch.config import Settings
from balancewatch.core.money import Money, format_money
from balancewatch.core.times import parse_instant
from balancewatch.evaluate import usage
from balancewatch.render.context import usage_context
from balancewatch.store.platform_data import account_locale
from balancewatch.store.tables import Account, Balance

DESCRIPTION = """\
Print the recommended alert threshold of an account for each currency of its
balance: usage.recommend_days days of its average daily usage, with the
arithmetic (the window, the total usage, the days counted, the first ledger
entry, the average), or why there is none yet. Computed now from the ledger;
amounts in the account's locale.

  balancewatch recommend acme
  balancewatch recommend acme --json
  balancewatch recommend acme --at 2026-03-01T00:00:00Z     as of an earlier time
"""


def register(commands: Any) -> None:
    cmd = commands.add_parser(
        "recommend",
        help="the recommended alert threshold of an account, with its arithmetic",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("account", metavar="ACCOUNT")
    cmd.add_argument("--json", action="store_true", help="exact amounts as JSON")
    cmd.add_argument("--at", metavar="TIME", help="ISO 8601 time to compute as of (default: now)")
    cmd.set_defaults(handler=cmd_recommend)


@dataclass(frozen=True)
class Recommendation:
    """One currency's recommendation: the figures, the email's usage block made of them, the balance."""

    currency: str
    balance: int
    figures: usage.Figures
    block: dict[str, Any]  # messages.usage_context: recommended, adu, runway_days, ...

    def reason(self, now: datetime, min_history: timedelta) -> str | None:
        """Why there is no recommendation, or None when there is one."""
        f = self.figures
        needed = _days(min_history)
        if f.status == usage.SHORT:
            if f.first_at is None:
                return f"not enough history: no ledger entry yet; {needed} days needed"
            return (
                f"not enough history: {_days(now - f.first_at)} days since the first entry; {needed} needed"
            )
        if f.status == usage.NONE:
            return f"no usage in the last {f.window_days} days"
        return None


def cmd_recommend(ctx: Ctx) -> int:
    a = ctx.args
    try:
        now = parse_instant(a.at) if a.at else ctx.now()
    except ValueError as exc:
        raise CommandError(f"--at: {exc}") from None
    settings = ctx.settings
    with Session(ctx.read_engine) as session:
        account = session.get(Account, a.account)
        if account is None:
            raise CommandError(f"no account {a.account!r}")
        payer = session.get(Account, account.parent_id) if account.parent_id else account
        if payer is None:
            raise CommandError(f"{account.id} draws on {account.parent_id!r}, which does not exist")
        balances = list(session.exec(select(Balance).where(Balance.account_id == payer.id)).all())
        recommendations = [
            _recommend(session, settings, payer.id, b.currency, b.amount, now)
            for b in sorted(balances, key=lambda b: b.currency)
        ]
    locale = account_locale(account.locale, settings.defaults.locale, account.id)
    if a.json:
        ctx.emit_json(_as_json(account, payer, recommendations, settings, now))
    else:
        ctx.say(_as_text(account, payer, recommendations, settings, now, locale))
    return 0


def _recommend(
    session: Session, settings: Settings, payer: str, currency: str, balance: int, now: datetime
) -> Recommendation:
    s = settings.usage
    figures = usage.figures(session.connection(), payer, currency, now, s.window_days, s.min_history)
    block = usage_context(
        figures, balance, currency, s.recommend_days, window_days=s.window_days, min_history=s.min_history
    )
    return Recommendation(currency, balance, figures, block)


def _as_text(
    account: Account,
    payer: Account,
    recommendations: list[Recommendation],
    settings: Settings,
    now: datetime,
    locale: str,
) -> str:
    def money(value: Money | None) -> str:
        return "" if value is None else format_money(value.minor, value.currency, locale)

    lines = []
    if payer.id != account.id:
        lines += [
            f"{account.id} ({account.name}) is a subaccount: it draws on {payer.id}'s balance, so this "
            f"is {payer.id}'s recommendation (the usage of {payer.id} and its subaccounts together).",
            "",
        ]
    days = settings.usage.recommend_days
    lines.append(
        f"{payer.id} ({payer.name}): recommended alert thresholds, {_plural(days, 'day')} of average "
        f"usage, as of {_when(now)}"
    )
    if not recommendations:
        lines.append(f"{payer.id} has no balance yet: nothing to recommend.")
    for r in recommendations:
        f, b = r.figures, r.block
        reason = r.reason(now, settings.usage.min_history)
        lines.append("")
        if reason:
            lines.append(f"{r.currency}: no recommendation: {reason}")
        else:
            lines.append(f"{r.currency}: recommended alert at {money(b['recommended'])}")
        start = now - timedelta(days=f.window_days)
        lines.append(f"  window:       the last {f.window_days} days, {_when(start)} to {_when(now)}")
        lines.append(f"  total usage:  {money(b['total'])}")
        lines.append(f"  days counted: {_number(f.days_counted)}")
        lines.append(f"  first entry:  {_when(f.first_at) if f.first_at else 'none'}")
        if not reason:
            lines.append(
                f"  average:      {money(b['total'])} ÷ {_plural(f.days_counted, 'day')} = "
                f"{money(b['adu'])} a day"
            )
            lines.append(
                f"  recommended:  {money(b['adu'])} × {_plural(days, 'day')} = {money(b['recommended'])}"
            )
        runway = f", about {_plural(b['runway_days'], 'day')} at that rate" if b["runway_days"] else ""
        lines.append(f"  balance:      {format_money(r.balance, r.currency, locale)}{runway}")
    return "\n".join(lines)


def _as_json(
    account: Account,
    payer: Account,
    recommendations: list[Recommendation],
    settings: Settings,
    now: datetime,
) -> dict[str, Any]:
    def money(value: Money | None) -> str | None:
        return None if value is None else str(value.major)

    def minor(value: Money | None) -> int | None:
        return None if value is None else value.minor

    out = []
    for r in recommendations:
        f, b = r.figures, r.block
        out.append(
            {
                "currency": r.currency,
                "status": f.status,
                "reason": r.reason(now, settings.usage.min_history),
                "recommended": money(b["recommended"]),
                "recommended_minor": minor(b["recommended"]),
                "window_days": f.window_days,
                "window_start": (now - timedelta(days=f.window_days)).isoformat(),
                "window_end": now.isoformat(),
                "usage_total": money(b["total"]),
                "usage_total_minor": minor(b["total"]),
                "days_counted": str(f.days_counted),
                "first_at": f.first_at.isoformat() if f.first_at else None,
                "adu": money(b["adu"]),
                "adu_minor": minor(b["adu"]),
                "balance": str(Money(r.balance, r.currency).major),
                "balance_minor": r.balance,
                "runway_days": None if b["runway_days"] is None else str(b["runway_days"]),
            }
        )
    return {
        "account": account.id,
        "paying_account": payer.id,
        "subaccount": payer.id != account.id,
        "at": now.isoformat(),
        "recommend_days": str(settings.usage.recommend_days),
        "min_history_days": str(_days(settings.usage.min_history)),
        "currencies": out,
    }


def _days(span: timedelta) -> Decimal:
    return _decimal(Decimal(span.total_seconds()) / 86400)


def _decimal(value: Decimal) -> Decimal:
    """To 0.01, without trailing zeros: 2.50 -> 2.5, 30.00 -> 30."""
    exact = value.quantize(Decimal("0.01")).normalize()
    return exact.quantize(Decimal(1)) if exact == exact.to_integral_value() else exact


def _number(value: Decimal) -> str:
    return str(_decimal(value))


def _plural(value: Decimal, unit: str) -> str:
    return f"{_number(value)} {unit}{'' if value == 1 else 's'}"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
