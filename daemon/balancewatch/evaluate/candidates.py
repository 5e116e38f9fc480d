"""Set-based SQL that finds the balances a rule must look at, without loading the rest.

Four questions per rule and currency, each answered by one indexed query:

- *fire*: balances at or below the rule's highest step whose lowest step at or
  above the balance is not fired (one state probe per low balance);
- *re-arm*: fired steps whose balance has climbed above the re-arm point;
- *remind*: fired steps whose next reminder is due;
- *unscheduled* (sweeps only): the lowest fired step of a balance with no
  reminder scheduled, as a rule that has just gained ``remind`` leaves them.

A poll restricts the first two to balances changed since the watermark; a
sweep looks at every balance.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Join,
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)

from balancewatch.core.money import MAX_MINOR
from balancewatch.rules.compiled import CompiledRule, Selector, StepSet, UsageSpec
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    ALERT_STATE_TABLE,
    BALANCE_TABLE,
    OWNER_PREFERENCE_TABLE,
    USAGE_SUMMARY_TABLE,
)

THRESHOLDS = (
    OWNER_PREFERENCE_TABLE.c.threshold_1,
    OWNER_PREFERENCE_TABLE.c.threshold_2,
    OWNER_PREFERENCE_TABLE.c.threshold_3,
)

Key = tuple[str, str]  # (account_id, currency)


def account_filter(sel: Selector) -> list[ColumnElement[bool]]:
    """Conditions on ``account`` (and the balance currency) for a selector."""
    out: list[ColumnElement[bool]] = [ACCOUNT_TABLE.c.enabled == true()]
    if sel.billing is not None:
        out.append(ACCOUNT_TABLE.c.billing == sel.billing)
    if sel.ids is not None:
        out.append(ACCOUNT_TABLE.c.id.in_(sel.ids))
    for key, values in sel.labels:
        out.append(ACCOUNT_TABLE.c.labels[key].as_string().in_(values))
    return out


def currency_filter(step_set: StepSet, sel: Selector, column: Any = None) -> list[ColumnElement[bool]]:
    """Conditions on a balance's currency (``column``, default ``balance.currency``)."""
    column = BALANCE_TABLE.c.currency if column is None else column
    if step_set.currency is not None:
        return [column == step_set.currency]
    if sel.currencies is not None:
        return [column.in_(sel.currencies)]
    return []


def _lowest_at_or_above(step_set: StepSet, amount: Any) -> ColumnElement[Any]:
    steps = step_set.steps
    if len(steps) == 1:
        return literal(steps[0].amount)
    return case(*[(amount <= s.amount, s.amount) for s in reversed(steps[1:])], else_=steps[0].amount)


def _not_fired(rule: CompiledRule, step_set: StepSet, account_id: Any, currency: Any, amount: Any) -> Any:
    # Only the lowest step at or above the balance is probed: a ladder fires
    # from the top down, so when that step is fired the ones above it are too.
    st = ALERT_STATE_TABLE.alias("st")
    return ~exists().where(
        st.c.rule_id == rule.id,
        st.c.account_id == account_id,
        st.c.currency == currency,
        st.c.step == _lowest_at_or_above(step_set, amount),
        st.c.status == "fired",
    )


def _selected(rule: CompiledRule, account_id: Any, currency: Any = None) -> Any:
    chosen = exists().where(ACCOUNT_TABLE.c.id == account_id, *account_filter(rule.selector))
    if rule.unless_owner_configured and currency is not None:
        return and_(chosen, ~owner_configured(account_id, currency))
    return chosen


def owner_configured(account_id: Any, currency: Any) -> Any:
    """The owner set thresholds of their own for this balance (and has not disabled them)."""
    return exists().where(
        OWNER_PREFERENCE_TABLE.c.account_id == account_id,
        OWNER_PREFERENCE_TABLE.c.currency == currency,
        OWNER_PREFERENCE_TABLE.c.enabled == true(),
        or_(*(t.isnot(None) for t in THRESHOLDS)),
    )


def fire_query(
    rule: CompiledRule, step_set: StepSet, since: datetime | None, *, probe_apart: bool = False
) -> Select[Any]:
    """Balances at or below the highest step whose lowest step at or above them is not fired.

    The state probe comes before the account check: in a steady state almost
    every low balance has fired already, and the probe is the cheaper filter.
    SQLite keeps that order as written. PostgreSQL flattens both into joins and
    hashes the whole ``account`` table before probing a state (1,000,000 rows
    read in every sweep that finds nothing); with ``probe_apart`` the probed
    balances are a MATERIALIZED CTE, so accounts are looked up only for the
    balances still to fire.
    """
    unfired = (
        select(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency)
        .where(*currency_filter(step_set, rule.selector))
        .where(BALANCE_TABLE.c.amount <= step_set.highest)
        .where(
            _not_fired(
                rule, step_set, BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency, BALANCE_TABLE.c.amount
            )
        )
    )
    if since is not None:
        unfired = unfired.where(BALANCE_TABLE.c.updated_at > since)
    if not probe_apart:
        return unfired.where(_selected(rule, BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency))
    kept = unfired.cte("unfired").prefix_with("MATERIALIZED")
    return select(kept.c.account_id, kept.c.currency).where(
        _selected(rule, kept.c.account_id, kept.c.currency)
    )


def poll_query(rule: CompiledRule, step_set: StepSet, since: datetime) -> Select[Any]:
    """One pass over the balances changed after ``since``, answering *fire* and *re-arm*.

    The changed rows are a MATERIALIZED CTE so both SQLite and PostgreSQL drive
    the query from the ``updated_at`` index; flattened, SQLite prefers the
    currency index and reads every low balance instead.
    """
    changed = (
        select(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency, BALANCE_TABLE.c.amount)
        .where(BALANCE_TABLE.c.updated_at > since)
        .cte("changed")
    ).prefix_with("MATERIALIZED")
    c = changed.c
    st = ALERT_STATE_TABLE.alias("rs")
    rearm_above = case({s.amount: s.rearm_above for s in step_set.steps}, value=st.c.step)
    rearm = exists().where(
        st.c.rule_id == rule.id,
        st.c.account_id == c.account_id,
        st.c.currency == c.currency,
        st.c.status == "fired",
        st.c.step.in_([s.amount for s in step_set.steps]),
        c.amount > rearm_above,
    )
    fire = and_(
        c.amount <= step_set.highest,
        _not_fired(rule, step_set, c.account_id, c.currency, c.amount),
        _selected(rule, c.account_id, c.currency),
    )
    return (
        select(c.account_id, c.currency)
        .where(*currency_filter(step_set, rule.selector, c.currency))
        .where(or_(fire, rearm))
    )


def _states_with_balances() -> Join:
    """``alert_state`` joined to the balance each of its rows is about."""
    return ALERT_STATE_TABLE.join(
        BALANCE_TABLE,
        and_(
            BALANCE_TABLE.c.account_id == ALERT_STATE_TABLE.c.account_id,
            BALANCE_TABLE.c.currency == ALERT_STATE_TABLE.c.currency,
        ),
    )


def rearm_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Fired steps whose balance has climbed above their re-arm point."""
    rearm_above = case({s.amount: s.rearm_above for s in step_set.steps}, value=ALERT_STATE_TABLE.c.step)
    query = (
        select(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency)
        .select_from(_states_with_balances())
        .where(ALERT_STATE_TABLE.c.rule_id == rule.id, ALERT_STATE_TABLE.c.status == "fired")
        .where(ALERT_STATE_TABLE.c.step.in_([s.amount for s in step_set.steps]))
        .where(BALANCE_TABLE.c.amount > rearm_above)
        .where(*currency_filter(step_set, rule.selector))
    )
    return query.where(BALANCE_TABLE.c.updated_at > since) if since is not None else query


def remind_query(rule: CompiledRule, step_set: StepSet, now: datetime) -> Select[Any]:
    """Fired steps whose next reminder is due."""
    query = (
        select(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency)
        .select_from(_states_with_balances())
        .where(ALERT_STATE_TABLE.c.next_reminder_at <= now, ALERT_STATE_TABLE.c.rule_id == rule.id)
        .where(*currency_filter(step_set, rule.selector))
    )
    # Steps that follow usage or the owner have keys known per balance only.
    return (
        query
        if step_set.dynamic
        else query.where(ALERT_STATE_TABLE.c.step.in_([s.amount for s in step_set.steps]))
    )


def unscheduled_query(rule: CompiledRule, step_set: StepSet) -> Select[Any]:
    """Lowest fired steps with no reminder scheduled (for dynamic rules: any fired step without one)."""
    query = (
        select(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency)
        .select_from(_states_with_balances())
        .where(
            ALERT_STATE_TABLE.c.rule_id == rule.id,
            ALERT_STATE_TABLE.c.status == "fired",
            ALERT_STATE_TABLE.c.next_reminder_at.is_(None),
        )
        .where(*currency_filter(step_set, rule.selector))
    )
    if step_set.dynamic:
        return query.distinct()
    amounts = [s.amount for s in step_set.steps]
    lower = ALERT_STATE_TABLE.alias("lower")
    lower_fired = exists().where(
        lower.c.rule_id == ALERT_STATE_TABLE.c.rule_id,
        lower.c.account_id == ALERT_STATE_TABLE.c.account_id,
        lower.c.currency == ALERT_STATE_TABLE.c.currency,
        lower.c.status == "fired",
        lower.c.step.in_(amounts),
        lower.c.step < ALERT_STATE_TABLE.c.step,
    )
    return query.where(ALERT_STATE_TABLE.c.step.in_(amounts), ~lower_fired)


def _fired_at(rule: CompiledRule, key: Any) -> Any:
    st = ALERT_STATE_TABLE.alias("fs")
    return exists().where(
        st.c.rule_id == rule.id,
        st.c.account_id == BALANCE_TABLE.c.account_id,
        st.c.currency == BALANCE_TABLE.c.currency,
        st.c.step == key,
        st.c.status == "fired",
    )


def _usage_bound(spec: UsageSpec) -> Any:
    """The highest balance a usage step may fire at, from the stored ADU (+1: the amount is rounded
    in Python). One index probe per balance: a summary row without an ADU gives a bound nothing is
    below; no row at all (the balance is new since the last refresh) gives one every balance is
    below, so the balance is evaluated and its figures computed on the spot."""
    stored = (
        select(func.coalesce(USAGE_SUMMARY_TABLE.c.adu * float(spec.times) + 1, -MAX_MINOR))
        .where(
            USAGE_SUMMARY_TABLE.c.account_id == BALANCE_TABLE.c.account_id,
            USAGE_SUMMARY_TABLE.c.currency == BALANCE_TABLE.c.currency,
            USAGE_SUMMARY_TABLE.c.window_days == spec.window_days,
        )
        .scalar_subquery()
    )
    return func.coalesce(stored, MAX_MINOR)


def dynamic_fire_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Balances at or below any step of a rule whose steps follow usage or the owner, that step
    not fired. A superset for usage steps (the amount is rounded in Python)."""
    crossing = [and_(BALANCE_TABLE.c.amount <= s.amount, ~_fired_at(rule, s.amount)) for s in step_set.steps]
    crossing += [
        and_(BALANCE_TABLE.c.amount <= _usage_bound(u), ~_fired_at(rule, u.key)) for u in step_set.usage
    ]
    query = select(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency).where(
        *currency_filter(step_set, rule.selector)
    )
    if step_set.owner:
        query = query.select_from(
            BALANCE_TABLE.join(
                OWNER_PREFERENCE_TABLE,
                and_(
                    OWNER_PREFERENCE_TABLE.c.account_id == BALANCE_TABLE.c.account_id,
                    OWNER_PREFERENCE_TABLE.c.currency == BALANCE_TABLE.c.currency,
                    OWNER_PREFERENCE_TABLE.c.enabled == true(),
                ),
            )
        )
        crossing += [and_(BALANCE_TABLE.c.amount <= t, ~_fired_at(rule, t)) for t in THRESHOLDS]
    query = query.where(or_(*crossing), _selected(rule, BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency))
    return query.where(BALANCE_TABLE.c.updated_at > since) if since is not None else query


def dynamic_rearm_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Fired steps that may re-arm: above their amount (fixed and owner steps are kept under
    their amount), or any fired usage step (its amount moves; Python decides)."""
    query = (
        select(ALERT_STATE_TABLE.c.account_id, ALERT_STATE_TABLE.c.currency)
        .select_from(_states_with_balances())
        .where(ALERT_STATE_TABLE.c.rule_id == rule.id, ALERT_STATE_TABLE.c.status == "fired")
        .where(
            or_(
                and_(ALERT_STATE_TABLE.c.step >= 0, BALANCE_TABLE.c.amount > ALERT_STATE_TABLE.c.step),
                ALERT_STATE_TABLE.c.step < 0,
            )
        )
        .where(*currency_filter(step_set, rule.selector))
        .distinct()
    )
    return query.where(BALANCE_TABLE.c.updated_at > since) if since is not None else query


def find(
    conn: Connection, rule: CompiledRule, step_set: StepSet, now: datetime, since: datetime | None
) -> list[Key]:
    """Every (account, currency) that ``rule`` must evaluate now, sorted."""
    keys: set[Key] = set()
    if step_set.dynamic:
        queries = [dynamic_fire_query(rule, step_set, since), dynamic_rearm_query(rule, step_set, since)]
    elif since is not None:
        queries = [poll_query(rule, step_set, since)]
    else:
        postgres = conn.dialect.name == "postgresql"
        queries = [fire_query(rule, step_set, None, probe_apart=postgres), rearm_query(rule, step_set, None)]
    if rule.remind is not None or step_set.owner:  # owners may ask for a daily reminder themselves
        queries.append(remind_query(rule, step_set, now))
        if since is None:
            # Polls skip this: a balance that stays put only needs it once, and a
            # reload, which is how a rule gains ``remind``, is followed by a sweep.
            queries.append(unscheduled_query(rule, step_set))
    for query in queries:
        keys.update((r[0], r[1]) for r in conn.execute(query))
    return sorted(keys)


def chunks(keys: list[Key], size: int) -> Iterable[list[Key]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]
