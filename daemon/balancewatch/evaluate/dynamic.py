"""Steps known per balance only: multiples of average daily usage, the owner's own thresholds.

A chunk loads what these need in one query each (stored ADU, owner
preferences); ``steps_for`` then builds one balance's full ladder, highest
first, for ``decide``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Connection, true

from balancewatch.evaluate.candidates import Key
from balancewatch.evaluate.load import Subject, rows_for_keys
from balancewatch.rules.compiled import CompiledRule, Step, StepSet
from balancewatch.store.tables import OWNER_PREFERENCE_TABLE

OWNER_REMINDER = timedelta(days=1)  # "a daily notification while below" when the rule names none


@dataclass(frozen=True, slots=True)
class Preferences:
    """An owner's enabled preferences for one balance."""

    thresholds: tuple[int, ...]  # highest first
    recipients: tuple[str, ...]
    remind: bool


def load_preferences(conn: Connection, keys: Sequence[Key]) -> dict[Key, Preferences]:
    """Enabled owner preferences for ``keys``; disabled ones are kept in the table, not used."""
    if not keys:
        return {}
    query = rows_for_keys(conn, OWNER_PREFERENCE_TABLE, keys, OWNER_PREFERENCE_TABLE.c.enabled == true())
    out = {}
    for r in conn.execute(query):
        values = (r.threshold_1, r.threshold_2, r.threshold_3)
        thresholds = tuple(sorted({v for v in values if v is not None}, reverse=True))
        out[(r.account_id, r.currency)] = Preferences(thresholds, tuple(r.recipients or ()), bool(r.remind))
    return out


def usage_amount(adu: int, times: Decimal) -> int:
    """``times`` the average daily usage, in whole minor units."""
    return int((Decimal(adu) * times).to_integral_value(ROUND_HALF_UP))


def steps_for(
    rule: CompiledRule,
    step_set: StepSet,
    subject: Subject,
    adu: Mapping[tuple[str, str, int], int],
    prefs: Preferences | None,
) -> tuple[Step, ...]:
    """Every step of ``step_set`` for this balance, highest first; a usage step without an ADU
    (not enough history, no usage) and owner steps without preferences are left out."""
    steps = list(step_set.steps)
    currency = subject.currency
    for spec in step_set.usage:
        value = adu.get((subject.account_id, currency, spec.window_days))
        if value is None or value <= 0:
            continue
        amount = usage_amount(value, spec.times)
        steps.append(Step(amount, rule.rearm_above(amount, currency), key=spec.key, usage=spec))
    if step_set.owner and prefs is not None:
        steps.extend(Step(t, rule.rearm_above(t, currency), owner=True) for t in prefs.thresholds)
    unique = {s.state_key: s for s in steps}
    return tuple(sorted(unique.values(), key=lambda s: -s.amount))


def remind_for(rule: CompiledRule, step_set: StepSet, prefs: Preferences | None) -> timedelta | None:
    """The reminder interval for this balance: the rule's; for the owner's own thresholds, only
    when the owner asked for reminders (daily unless the rule says otherwise)."""
    if not step_set.owner:
        return rule.remind
    if prefs is None or not prefs.remind:
        return None
    return rule.remind or OWNER_REMINDER
