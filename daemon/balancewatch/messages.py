"""From a decision to what a template sees, who receives it, and its idempotency key.

The template context is plain data (dicts, lists, :class:`Money`, aware
datetimes), documented in docs/templates.md. ``sample_alert_context`` builds
the same shape from realistic invented data for ``check`` and ``preview``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from balancewatch.evaluate.decide import Decision, Kind
from balancewatch.evaluate.load import Subject
from balancewatch.money import Money
from balancewatch.rules.compiled import CompiledRule, Step


def idem_key(rule_id: str, subject: Subject, decision: Decision) -> str:
    """Unique per (rule, account, currency, step, episode, reminder): decided once, ever."""
    return (
        f"alert/{rule_id}/{subject.account_id}/{subject.currency}/{decision.step.amount}"
        f"/{decision.episode}/{decision.reminder}"
    )


def recipients(rule: CompiledRule, subject: Subject) -> tuple[str, ...]:
    """The owner (when the rule says ``owner``) and the rule's addresses, without repeats."""
    out = [subject.owner_email.strip()] if rule.notify_owner else []
    out.extend(rule.recipients)
    return tuple(dict.fromkeys(a for a in out if a))


def variant(decision: Decision) -> str:
    """``reminder``, ``exhausted`` (balance at or below zero) or ``crossed``."""
    if decision.kind is Kind.reminder:
        return "reminder"
    return "exhausted" if decision.step.exhausted else "crossed"


def alert_context(
    rule: CompiledRule,
    subject: Subject,
    decision: Decision,
    now: datetime,
    *,
    default_locale: str,
    default_timezone: str,
) -> dict[str, Any]:
    """Everything an alert template may use; see docs/templates.md."""
    currency = subject.currency

    def money(minor: int) -> Money:
        return Money(minor, currency)

    next_reminder = now + rule.remind if rule.remind else None
    return {
        "locale": subject.locale or default_locale,
        "timezone": subject.timezone or default_timezone,
        "now": now,
        "account": {
            "id": subject.account_id,
            "name": subject.name,
            "owner_email": subject.owner_email,
            "billing": subject.billing,
            "parent_id": subject.parent_id,
            "labels": dict(subject.labels),
        },
        "currency": currency,
        "balance": money(subject.amount),
        "rule": {"id": rule.id, "description": rule.description},
        "alert": {
            "variant": variant(decision),
            "reminder": decision.kind is Kind.reminder,
            "exhausted": decision.step.exhausted or subject.amount <= 0,
            "reminder_number": decision.reminder,
            "episode": decision.episode,
            "step": money(decision.step.amount),
            "rearm_above": money(decision.step.rearm_above),
            "crossed": [money(s.amount) for s in decision.crossed],
            "fired_at": decision.fired_at,
            "remind_every": rule.remind,
            "next_reminder_at": next_reminder,
        },
    }


def sample_alert_context(which: str = "crossed", now: datetime | None = None) -> dict[str, Any]:
    """A realistic context for previews and for checking templates: ``crossed``,
    ``exhausted`` or ``reminder``."""
    now = now or datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    steps = {
        "crossed": Step(10_000, 11_000),
        "exhausted": Step(0, 0, exhausted=True),
        "reminder": Step(1_000, 1_100),
    }
    step = steps.get(which, steps["crossed"])
    amount = {"crossed": 8_412, "exhausted": -37, "reminder": 612}.get(which, 8_412)
    kind = Kind.reminder if which == "reminder" else Kind.alert
    crossed = (Step(25_000, 27_500), step) if which == "crossed" else (step,)
    decision = Decision(
        kind,
        step,
        2,
        3 if kind is Kind.reminder else 0,
        crossed,
        now - (timedelta(days=3) if kind is Kind.reminder else timedelta()),
    )
    subject = Subject(
        "acme-42",
        "USD",
        amount,
        "Acme Messaging Ltd",
        "billing@acme.example",
        "en_US",
        "America/New_York",
        "prepaid",
        None,
        {"tier": "gold"},
    )
    rule = CompiledRule(
        id="default-ladder",
        description="Plivo-style ladder: 250, 100 and 10 USD",
        enabled=True,
        selector=None,  # type: ignore[arg-type]
        step_sets=(),
        remind=timedelta(days=1),
        notify_owner=True,
        recipients=(),
        template="low-balance",
    )
    return alert_context(rule, subject, decision, now, default_locale="en_US", default_timezone="UTC")


SAMPLE_VARIANTS = ("crossed", "exhausted", "reminder")
