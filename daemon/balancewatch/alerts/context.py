"""From an alert decision to what its template sees, and its idempotency key (the pieces every
message shares are in ``render.context``).

The template context is plain data (dicts, lists, :class:`Money`, aware
datetimes), documented in docs/templates.md. The ``sample_*`` functions build
the same shapes from realistic invented data for ``check`` and ``preview``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from balancewatch.config import EmailSettings
from balancewatch.evaluate.decide import Decision, Kind
from balancewatch.evaluate.load import Subject
from balancewatch.evaluate.services import Credit, LedgerPrice, SubaccountUsage
from balancewatch.render.context import (
    SAMPLE_NOW,
    Extras,
    balance_context,
    messages_left_context,
    money_in,
    sample_usage,
)
from balancewatch.rules.compiled import CompiledRule, Selector, Step, UsageSpec


def idem_key(rule_id: str, subject: Subject, decision: Decision) -> str:
    """Unique per (rule, account, currency, step, episode, reminder or restored): decided once, ever."""
    balance = f"{subject.account_id}/{subject.currency}"
    base = f"alert/{rule_id}/{balance}/{decision.step.state_key}/{decision.episode}"
    return f"{base}/restored" if decision.kind is Kind.restored else f"{base}/{decision.reminder}"


def topup_key(rule_id: str, subject: Subject, decision: Decision) -> str:
    """The key of the top-up request one episode of a step may make."""
    balance = f"{subject.account_id}/{subject.currency}"
    return f"topup/{rule_id}/{balance}/{decision.step.state_key}/{decision.episode}"


def variant(decision: Decision) -> str:
    """``restored``, ``reminder``, ``exhausted`` (balance at or below zero) or ``crossed``."""
    if decision.kind is Kind.restored:
        return "restored"
    if decision.kind is Kind.reminder:
        return "reminder"
    return "exhausted" if decision.step.exhausted else "crossed"


def _step_follows(step: Step) -> dict[str, Any]:
    spec: UsageSpec | None = step.usage
    return {
        "follows": "usage" if spec else "owner" if step.owner else "fixed",
        "usage_times": spec.times if spec else None,
        "runway": bool(spec and spec.runway),
        "window_days": spec.window_days if spec else None,
    }


def _credits_context(extras: Extras, decision: Decision, currency: str) -> dict[str, Any]:
    """What arrived since the step fired, for a restored notice; none for other messages."""
    shown: list[Credit] = []
    count = total = 0
    if decision.kind is Kind.restored and extras.credits is not None:
        shown, count, total = extras.credits(decision.fired_at)
    money = money_in(currency)
    return {
        "count": count,
        "total": money(total),
        "entries": [
            {
                "amount": money(c.amount),
                "kind": c.kind,
                "reference": c.reference,
                "at": c.occurred_at,
                "account_id": c.account_id,
            }
            for c in shown
        ],
    }


def _alert_block(
    rule: CompiledRule, subject: Subject, decision: Decision, now: datetime, currency: str
) -> dict[str, Any]:
    """The ``alert`` key: which message this is and the step it is about."""
    money = money_in(currency)
    return {
        "variant": variant(decision),
        "reminder": decision.kind is Kind.reminder,
        "restored": decision.kind is Kind.restored,
        "exhausted": decision.kind is not Kind.restored and (decision.step.exhausted or subject.amount <= 0),
        "reminder_number": decision.reminder,
        "episode": decision.episode,
        "step": money(decision.step.amount),
        "rearm_above": money(decision.step.rearm_above),
        "crossed": [money(s.amount) for s in decision.crossed],
        "fired_at": decision.fired_at,
        "remind_every": rule.remind,
        "next_reminder_at": now + rule.remind if rule.remind else None,
        **_step_follows(decision.step),
    }


def alert_context(
    rule: CompiledRule,
    subject: Subject,
    decision: Decision,
    now: datetime,
    *,
    default_locale: str,
    default_timezone: str,
    extras: Extras | None = None,
    email: EmailSettings | None = None,
) -> dict[str, Any]:
    """Everything an alert, reminder or restored template may use; see docs/templates.md.

    The keys every balance email has come from :func:`balance_context` (the account's locale
    and timezone made safe there, ``email`` from the ``email:`` settings given, else their
    defaults); this adds ``messages_left``, ``subaccounts``, ``credits`` and ``alert``.
    """
    extras = extras or Extras()
    context = balance_context(
        subject,
        now,
        rule.id,
        rule.description,
        extras,
        default_locale=default_locale,
        default_timezone=default_timezone,
        email=email,
    )
    currency = context["currency"]
    money = money_in(currency)
    context["messages_left"] = messages_left_context(extras, subject.amount, currency, context["locale"])
    context["subaccounts"] = [
        {"id": s.id, "name": s.name, "usage": money(s.used)} for s in extras.subaccount_usage()
    ]
    context["credits"] = _credits_context(extras, decision, currency)
    context["alert"] = _alert_block(rule, subject, decision, now, currency)
    return context


# Every shape a template sees: fixed, usage, runway and owner steps; usage known, too
# short a history, no usage; messages left and subaccounts present or absent.
SAMPLE_VARIANTS = ("crossed", "exhausted", "reminder", "runway", "usage", "owner", "no-history", "no-usage")
RESTORED_VARIANTS = ("restored", "restored-no-history", "restored-several")


def _sample_subject(
    amount: int, currency: str = "USD", locale: str = "en_US", name: str = "Acme Messaging Ltd"
) -> Subject:
    return Subject(
        "acme-42",
        currency,
        amount,
        name,
        "billing@acme.example",
        locale,
        "America/New_York",
        "prepaid",
        None,
        {"tier": "gold"},
    )


def _sample_rule() -> CompiledRule:
    return CompiledRule(
        id="default-ladder",
        description="Low-balance alerts at 250, 100 and 10 USD",
        enabled=True,
        selector=Selector(billing=None, currencies=("USD",), labels=(), ids=None),
        step_sets=(),
        remind=timedelta(days=1),
        notify_owner=True,
        recipients=(),
        template="low-balance",
    )


SAMPLE_PRICES = {"sms": Decimal("0.0075")}
# Voice seen in the ledger: $252.00 for 18,000 minutes, $0.014 a minute.
SAMPLE_LEDGER_PRICES = {"voice": LedgerPrice("voice", 25_200, 18_000)}
SAMPLE_SUBACCOUNTS = (
    SubaccountUsage("acme-eu", "Acme Europe", 84_000),
    SubaccountUsage("acme-us", "Acme US", 30_000),
)


# The step and the balance of each sample variant (the balance: 8,412 unless named); data only.
_RESTORED_STEP = Step(10_000, 11_000)
SAMPLE_STEPS = {
    "crossed": Step(10_000, 11_000),
    "exhausted": Step(0, 0, exhausted=True),
    "reminder": Step(1_000, 1_100),
    "runway": Step(12_600, 13_860, key=-1, usage=UsageSpec(-1, 30, Decimal(3), runway=True)),
    "usage": Step(4_200, 4_620, key=-1, usage=UsageSpec(-1, 30, Decimal(1))),
    "owner": Step(50_000, 55_000, owner=True),
    "no-history": Step(10_000, 11_000),
    "no-usage": Step(2_500, 2_750),
    "restored": _RESTORED_STEP,
    "restored-no-history": _RESTORED_STEP,
    "restored-several": _RESTORED_STEP,
}
SAMPLE_BALANCES = {
    "exhausted": -37,
    "reminder": 612,
    "runway": 11_950,
    "usage": 4_000,
    "owner": 45_000,
    "no-usage": 2_000,
    "restored": 25_000,
    "restored-no-history": 25_000,
    "restored-several": 25_000,
}


def sample_alert_context(
    which: str = "crossed",
    now: datetime | None = None,
    *,
    currency: str = "USD",
    locale: str = "en_US",
    name: str = "Acme Messaging Ltd",
) -> dict[str, Any]:
    """A realistic context for previews and for checking templates: one of SAMPLE_VARIANTS or
    RESTORED_VARIANTS, for an account named ``name`` holding ``currency`` (the same minor units:
    8,412 is $84.12, ¥8,412 or 8.412 KWD) in ``locale``."""
    now = now or SAMPLE_NOW
    return alert_context(
        _sample_rule(),
        _sample_subject(SAMPLE_BALANCES.get(which, 8_412), currency, locale, name),
        _sample_decision(which, now),
        now,
        default_locale="en_US",
        default_timezone="UTC",
        extras=_sample_extras(which, now),
    )


def _sample_decision(which: str, now: datetime) -> Decision:
    step = SAMPLE_STEPS.get(which, SAMPLE_STEPS["crossed"])
    kind = Kind.alert
    if which.startswith("restored"):
        kind = Kind.restored
    elif which == "reminder":
        kind = Kind.reminder
    crossed = (Step(25_000, 27_500), step) if which == "crossed" else (step,)
    fired_at = now - (timedelta(days=3) if kind is not Kind.alert else timedelta())
    return Decision(kind, step, 2, 3 if kind is Kind.reminder else 0, crossed, fired_at)


def _sample_extras(which: str, now: datetime) -> Extras:
    short = which in ("no-history", "restored-no-history")
    priced = which not in ("owner", "no-history", "no-usage", "restored-no-history")
    subaccounts: tuple[SubaccountUsage, ...] = ()
    if which in ("usage", "runway", "restored"):
        subaccounts = SAMPLE_SUBACCOUNTS
    elif which == "no-usage":
        subaccounts = tuple(replace(s, used=0) for s in SAMPLE_SUBACCOUNTS)
    return Extras(
        usage=sample_usage(now, history=not short, used=which != "no-usage"),
        subaccounts=subaccounts,
        prices=SAMPLE_PRICES if priced else {},
        ledger_prices=SAMPLE_LEDGER_PRICES if priced else {},
        credits=_sample_credits(which, now),
    )


def _sample_credits(which: str, now: datetime) -> Callable[[datetime], tuple[list[Credit], int, int]]:
    """A top-up with its reference; none (a billing system set the balance); or three credits,
    one of them to a subaccount."""
    credits = {
        "restored": [Credit("acme-42", 25_000, "top-up", "ch_3PqX81", now - timedelta(minutes=4))],
        "restored-several": [
            Credit("acme-42", 10_000, "top-up", "ch_3PqW02", now - timedelta(days=1)),
            Credit("acme-eu", 2_500, "refund", None, now - timedelta(hours=5)),
            Credit("acme-42", 12_000, "top-up", "ch_3PqX81", now - timedelta(minutes=4)),
        ],
    }.get(which, [])
    return lambda _since: (credits, len(credits), sum(c.amount for c in credits))


def sample_contexts(kind: str) -> list[dict[str, Any]]:
    """Sample contexts for a template used for ``kind`` (``alert``, ``restored``, ...)."""
    if kind == "restored":
        return [sample_alert_context(v) for v in RESTORED_VARIANTS]
    return [sample_alert_context(v) for v in SAMPLE_VARIANTS]
