"""Which balances would stop alerting: the fired steps the new rules no longer cover, found in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    desc,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)

from balancewatch.evaluate.candidates import (
    THRESHOLDS,
    account_filter,
    currency_filter,
    owner_configured,
)
from balancewatch.evaluate.decide import FIRED
from balancewatch.rules.compiled import CompiledRule, StepSet
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    ALERT_STATE_TABLE,
    BALANCE_TABLE,
    OWNER_PREFERENCE_TABLE,
)
from balancewatch.tools.plan.model import NO_STOP, Entry, Reason, Stop, StopGroup

# --- stop ----------------------------------------------------------------------------------------


# The columns of the tables a stop is found in, by name.
account = ACCOUNT_TABLE.c
balance = BALANCE_TABLE.c
state = ALERT_STATE_TABLE.c
preference = OWNER_PREFERENCE_TABLE.c


def stops(conn: Connection, old: CompiledRule | None, new: CompiledRule | None, limit: int) -> Stop:
    """Fired state that applies under ``old`` and would not under ``new``, counted in SQL."""
    if old is None or not old.enabled:
        return NO_STOP
    where: list[ColumnElement[bool]] = [state.rule_id == old.id, state.status == FIRED, _applies(old)]
    reason: ColumnElement[Any]
    if new is None:
        reason = literal(Reason.rule_removed.value)
    elif not new.enabled:
        reason = literal(Reason.rule_disabled.value)
    else:
        reason = case(
            (~_truth(_selected(new)), Reason.not_selected.value),
            (~_truth(_covered(new)), Reason.currency_gone.value),
            (~_truth(_in_ladder(new)), Reason.step_gone.value),
            else_=Reason.rearmed.value,
        )
        where.append(
            or_(
                ~_truth(_applies(new)),
                # Re-armed by the new band only: the old one would re-arm it anyway.
                and_(balance.amount > _rearm_above(new), ~_truth(balance.amount > _rearm_above(old))),
            )
        )
    rows = (
        select(
            state.account_id, account.name, state.currency, balance.amount, state.step, reason.label("reason")
        )
        .select_from(
            ALERT_STATE_TABLE.join(
                BALANCE_TABLE,
                and_(balance.account_id == state.account_id, balance.currency == state.currency),
            ).join(ACCOUNT_TABLE, account.id == state.account_id)
        )
        .where(*where)
        .subquery()
    )
    r = rows.c
    balances = conn.execute(
        select(func.count()).select_from(select(r.account_id, r.currency).distinct().subquery())
    ).scalar_one()
    if not balances:
        return NO_STOP
    accounts = conn.execute(select(func.count(r.account_id.distinct()))).scalar_one()
    groups = conn.execute(
        select(r.reason, r.currency, r.step, func.count())
        .group_by(r.reason, r.currency, r.step)
        .order_by(r.reason, r.currency, desc(r.step))
    ).all()
    first = conn.execute(select(rows).order_by(r.account_id, r.currency, desc(r.step)).limit(limit)).all()
    return Stop(
        accounts,
        balances,
        tuple(Entry(f.account_id, f.name, f.currency, f.amount, f.step, f.reason) for f in first),
        tuple(StopGroup(Reason(g[0]), g[1], g[2], g[3]) for g in groups),
    )


def _truth(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    # NULL-safe: a label missing from an account makes its condition NULL, and
    # NOT NULL is NULL, which would hide the row from "no longer selected".
    return case((condition, true()), else_=false())


def _selected(rule: CompiledRule) -> ColumnElement[bool]:
    chosen = and_(true(), *account_filter(rule.selector))
    if rule.unless_owner_configured:
        return and_(chosen, ~owner_configured(state.account_id, state.currency))
    return chosen


def _covered(rule: CompiledRule) -> ColumnElement[bool]:
    return or_(false(), *(and_(true(), *currency_filter(ss, rule.selector)) for ss in rule.step_sets))


def _in_ladder(rule: CompiledRule) -> ColumnElement[bool]:
    return or_(
        false(), *(and_(true(), *currency_filter(ss, rule.selector), _step_of(ss)) for ss in rule.step_sets)
    )


def _step_of(step_set: StepSet) -> ColumnElement[bool]:
    """The state row's step is one of ``step_set``: a fixed amount, a usage key, or one of the
    owner's enabled thresholds."""
    keys = [s.amount for s in step_set.steps] + [u.key for u in step_set.usage]
    found: list[ColumnElement[bool]] = [state.step.in_(keys)]
    if step_set.owner:
        found.append(
            exists().where(
                preference.account_id == state.account_id,
                preference.currency == state.currency,
                preference.enabled == true(),
                or_(*(t == state.step for t in THRESHOLDS)),
            )
        )
    return or_(*found)


def _applies(rule: CompiledRule) -> ColumnElement[bool]:
    return and_(_selected(rule), _in_ladder(rule))


def _rearm_above(rule: CompiledRule) -> ColumnElement[Any]:
    """The re-arm point of the state row's step under ``rule``; NULL where it has no such step."""
    whens = [
        (and_(true(), *currency_filter(ss, rule.selector), state.step == s.amount), s.rearm_above)
        for ss in rule.step_sets
        for s in ss.steps
    ]
    return case(*whens, else_=None) if whens else literal(None)
