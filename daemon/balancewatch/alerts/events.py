"""What a webhook receiver is told about an alert decision (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime

from balancewatch.evaluate.decide import Decision, Kind
from balancewatch.evaluate.load import Subject
from balancewatch.render.context import Extras, runway_days
from balancewatch.render.fanout import Event, amount
from balancewatch.rules.compiled import CompiledRule

BELOW, EXHAUSTED, REMINDER, RESTORED = (
    "balance.below",
    "balance.exhausted",
    "balance.reminder",
    "balance.restored",
)


def event_type(decision: Decision) -> str:
    """``balance.restored``, ``balance.reminder``, ``balance.exhausted`` (at or below zero) or
    ``balance.below``."""
    if decision.kind is Kind.restored:
        return RESTORED
    if decision.kind is Kind.reminder:
        return REMINDER
    return EXHAUSTED if decision.step.exhausted else BELOW


def alert_event(
    rule: CompiledRule, subject: Subject, decision: Decision, extras: Extras, now: datetime
) -> Event:
    """The event of ``decision`` about ``subject``'s balance: the balance, the step, the rule,
    the episode, and the average daily usage and runway where known."""
    currency = subject.currency
    figures = extras.usage
    adu = figures.adu if figures is not None else None
    runway = runway_days(subject.amount, adu)
    step = decision.step
    data = {
        "account": {"id": subject.account_id, "name": subject.name, "parent_id": subject.parent_id},
        "currency": currency,
        "balance": amount(subject.amount, currency),
        "step": {
            **(amount(step.amount, currency) or {}),
            "exhausted": step.exhausted,
            "follows": "usage" if step.usage else "owner" if step.owner else "fixed",
        },
        "rule": rule.id,
        "episode": decision.episode,
        "reminder": decision.reminder,
        "fired_at": decision.fired_at.isoformat(),
        "average_daily_usage": amount(adu, currency),
        "runway_days": None if runway is None else str(runway),
    }
    return Event(event_type(decision), now, data)
