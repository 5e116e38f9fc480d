"""What every message about an account shares, whichever producer makes it: who receives it,
and the ``account``, usage, runway and money pieces of its template context (docs/templates.md).

Alerts, reports and top-up notices build these pieces here, once, so the template contract
for them is defined in one place: :func:`account_context` for ``account``, :func:`balance_context`
for the keys every email about one balance has, :func:`usage_context` for ``usage``,
:func:`messages_left_context` for ``messages_left``, :func:`money_in` and :func:`runway_days` for
amounts and days left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from babel.numbers import format_currency

from balancewatch.config import EmailSettings
from balancewatch.core.money import Money
from balancewatch.evaluate.load import Subject
from balancewatch.evaluate.services import Credit, LedgerPrice, SubaccountUsage, messages_left
from balancewatch.evaluate.usage import NONE, OK, SHORT, Figures
from balancewatch.render.filters import plain_spaces
from balancewatch.rules.compiled import CompiledRule

# The moment every invented sample context is made at.
SAMPLE_NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Extras:
    """What a chunk loaded beside the balance: usage figures and the settings they were made
    with, unit prices (configured for this currency, and seen in the ledger), the usage of
    each subaccount, the owner's and subaccounts' addresses.

    ``subaccounts`` and ``ledger_prices`` may be given as functions returning them, called
    only when a message is rendered.
    """

    usage: Figures | None = None
    recommend_days: Decimal = Decimal(1)
    preference_recipients: tuple[str, ...] = ()
    subaccount_owners: tuple[str, ...] = ()
    subaccounts: Sequence[SubaccountUsage] | Callable[[], Sequence[SubaccountUsage]] = ()
    window_days: int = 30
    min_history: timedelta = timedelta(days=3)
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    ledger_prices: Mapping[str, LedgerPrice] | Callable[[], Mapping[str, LedgerPrice]] = field(
        default_factory=dict
    )
    # For a restored notice: the credits after a moment (the step's firing), as credits_since gives.
    credits: Callable[[datetime], tuple[list[Credit], int, int]] | None = None

    def subaccount_usage(self) -> Sequence[SubaccountUsage]:
        """The usage of each subaccount, most used first."""
        return self.subaccounts() if callable(self.subaccounts) else self.subaccounts

    def seen_prices(self) -> Mapping[str, LedgerPrice]:
        """The unit prices seen in the ledger, by service."""
        return self.ledger_prices() if callable(self.ledger_prices) else self.ledger_prices


def recipients(rule: CompiledRule, subject: Subject, extras: Extras | None = None) -> tuple[str, ...]:
    """The owner, the owner's own extra addresses and the subaccounts' owners (when the rule
    names them), then the rule's addresses; without repeats."""
    extras = extras or Extras()
    out = [subject.owner_email.strip()] if rule.notify_owner else []
    if rule.notify_preferences:
        out.extend(extras.preference_recipients)
    if rule.notify_subaccount_owners:
        out.extend(extras.subaccount_owners)
    out.extend(rule.recipients)
    return tuple(dict.fromkeys(a for a in out if a))


def usage_context(
    figures: Figures | None,
    balance: int,
    currency: str,
    recommend_days: Decimal,
    *,
    window_days: int = 30,
    min_history: timedelta = timedelta(days=3),
) -> dict[str, Any]:
    """The usage block of every context: ADU with its arithmetic, runway and the recommendation.

    ``available`` is false when there is no ADU; ``status`` says why
    (``short-history``, ``no-usage``) and the numbers that exist are still given.
    ``window_days`` is the window used when there are no figures at all.
    """
    history = _days(min_history)
    if figures is None:
        return {
            "available": False,
            "status": NONE,
            "window_days": window_days,
            "days_counted": Decimal(0),
            "total": Money(0, currency),
            "adu": None,
            "first_at": None,
            "runway_days": None,
            "recommended": None,
            "recommend_days": recommend_days,
            "min_history_days": history,
        }
    adu = figures.adu if figures.status == OK else None
    runway = runway_days(balance, adu)
    recommended = (
        None if adu is None else int((Decimal(adu) * recommend_days).to_integral_value(ROUND_HALF_UP))
    )
    return {
        "available": adu is not None,
        "status": figures.status,
        "window_days": figures.window_days,
        "days_counted": figures.days_counted,
        "total": Money(figures.usage_total, currency),
        "adu": None if adu is None else Money(adu, currency),
        "first_at": figures.first_at,
        "runway_days": runway,
        "recommended": None if recommended is None else Money(recommended, currency),
        "recommend_days": recommend_days,
        "min_history_days": history,
    }


def runway_days(balance: int, adu: int | None) -> Decimal | None:
    """How many days ``balance`` lasts at ``adu`` a day, rounded down to a tenth (a balance below
    zero lasts 0 days); None without an average (``adu`` None or 0)."""
    if not adu:
        return None
    return (Decimal(max(balance, 0)) / adu).quantize(Decimal("0.1"), ROUND_DOWN)


def money_in(currency: str) -> Callable[[int], Money]:
    """The amounts of one context section: minor units to :class:`Money` in ``currency``."""

    def money(minor: int) -> Money:
        return Money(minor, currency)

    return money


def account_context(
    account_id: str, name: str, owner_email: str, labels: Mapping[str, str], **platform: str | None
) -> dict[str, Any]:
    """The ``account`` of a context: ``id``, ``name``, ``owner_email``, then the platform's fields
    the message carries (an email about one balance: ``billing`` and ``parent_id``; a report:
    none), then ``labels`` (a copy)."""
    return {"id": account_id, "name": name, "owner_email": owner_email, **platform, "labels": dict(labels)}


def email_context(email: EmailSettings | None = None) -> dict[str, str]:
    """The ``email`` key every message's context has: the ``email:`` settings, what the operator
    wants recipients to see about who sends it (``product_name``, ``footer``; "" when not set)."""
    email = email or EmailSettings()
    return {"product_name": email.product_name, "footer": email.footer}


def balance_context(
    subject: Subject,
    now: datetime,
    rule_id: str,
    rule_description: str,
    extras: Extras,
    *,
    default_locale: str,
    default_timezone: str,
    email: EmailSettings | None = None,
) -> dict[str, Any]:
    """The keys every email about one balance has (alerts, restored notices, top-up failures):
    ``locale``, ``timezone``, ``now``, ``email``, ``account``, ``currency``, ``balance``, ``rule``
    and ``usage``.

    ``locale`` and ``timezone`` are the account's when Babel and zoneinfo know them, else the
    defaults (with a warning once per account): a value the billing platform wrote never keeps
    the email from rendering. ``rule`` is there for templates that want it; the shipped ones
    show recipients no rule id or description. ``email`` is :func:`email_context` of ``email``
    (the defaults when None).
    """
    currency = subject.checked_currency()
    return {
        # The platform's values made safe here, once: every filter of the template formats with these.
        "locale": subject.locale_or(default_locale),
        "timezone": subject.timezone_or(default_timezone),
        "now": now,
        "email": email_context(email),
        "account": account_context(
            subject.account_id,
            subject.name,
            subject.owner_email,
            subject.labels,
            billing=subject.billing,
            parent_id=subject.parent_id,
        ),
        "currency": currency,
        "balance": Money(subject.amount, currency),
        "rule": {"id": rule_id, "description": rule_description},
        "usage": usage_context(
            extras.usage,
            subject.amount,
            currency,
            extras.recommend_days,
            window_days=extras.window_days,
            min_history=extras.min_history,
        ),
    }


def _days(span: timedelta) -> Decimal:
    return (Decimal(span.total_seconds()) / 86400).quantize(Decimal("0.01")).normalize()


@lru_cache(maxsize=4096)
def format_price(price: Decimal, currency: str, locale: str) -> str:
    """A unit price in ``locale`` with every decimal it has: ``$0.0075``, ``₹0.25``; spaced as
    the ``money`` filter spaces amounts (no narrow no-break space)."""
    return plain_spaces(format_currency(price, currency, locale=locale, decimal_quantization=False))


def messages_left_context(extras: Extras, balance: int, currency: str, locale: str) -> list[dict[str, Any]]:
    """The ``messages_left`` list of a context: one entry per service with a unit price, by service."""
    return [
        {
            "service": m.service,
            "count": m.count,
            "unit_price": m.unit_price,
            "unit_price_text": format_price(m.unit_price, currency, locale),
            "currency": m.currency,
            "source": m.source,
            "cost": None if m.cost is None else Money(m.cost, currency),
            "quantity": m.quantity,
        }
        for m in messages_left(balance, currency, extras.prices, extras.seen_prices())
    ]


def sample_usage(now: datetime = SAMPLE_NOW, *, history: bool = True, used: bool = True) -> Figures:
    """Invented usage: $1,260.00 over 30 days, $42.00 a day; or three hours of history;
    or 90 days of history without usage in the window."""
    if not history:
        return Figures("acme-42", "USD", 30, 1_250, Decimal("0.13"), now - timedelta(hours=3), None, SHORT)
    if not used:
        return Figures("acme-42", "USD", 30, 0, Decimal(30), now - timedelta(days=90), None, NONE)
    return Figures("acme-42", "USD", 30, 126_000, Decimal(30), now - timedelta(days=90), 4_200, OK)
