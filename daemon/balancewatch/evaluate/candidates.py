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

from sqlalchemy import ColumnElement, Connection, Select, and_, case, exists, func, literal, or_, select, true

from balancewatch.core.money import MAX_MINOR
from balancewatch.rules.compiled import CompiledRule, Selector, StepSet, UsageSpec
from balancewatch.store.tables import Account, AlertState, Balance, OwnerPreference, UsageSummary

A = Account.__table__.c  # type: ignore[attr-defined]
B = Balance.__table__.c  # type: ignore[attr-defined]
S = AlertState.__table__.c  # type: ignore[attr-defined]
BALANCE = Balance.__table__  # type: ignore[attr-defined]
ACCOUNT = Account.__table__  # type: ignore[attr-defined]
STATE = AlertState.__table__  # type: ignore[attr-defined]
PREFS = OwnerPreference.__table__  # type: ignore[attr-defined]
P = PREFS.c
USAGE = UsageSummary.__table__  # type: ignore[attr-defined]
U = USAGE.c
THRESHOLDS = (P.threshold_1, P.threshold_2, P.threshold_3)

Key = tuple[str, str]  # (account_id, currency)


def account_filter(sel: Selector) -> list[ColumnElement[bool]]:
    """Conditions on ``account`` (and the balance currency) for a selector."""
    out: list[ColumnElement[bool]] = [A.enabled == true()]
    if sel.billing is not None:
        out.append(A.billing == sel.billing)
    if sel.ids is not None:
        out.append(A.id.in_(sel.ids))
    for key, values in sel.labels:
        out.append(A.labels[key].as_string().in_(values))
    return out


def currency_filter(step_set: StepSet, sel: Selector, column: Any = None) -> list[ColumnElement[bool]]:
    """Conditions on a balance's currency (``column``, default ``balance.currency``)."""
    column = B.currency if column is None else column
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
    st = STATE.alias("st")
    return ~exists().where(
        st.c.rule_id == rule.id,
        st.c.account_id == account_id,
        st.c.currency == currency,
        st.c.step == _lowest_at_or_above(step_set, amount),
        st.c.status == "fired",
    )


def _selected(rule: CompiledRule, account_id: Any, currency: Any = None) -> Any:
    chosen = exists().where(A.id == account_id, *account_filter(rule.selector))
    if rule.unless_owner_configured and currency is not None:
        return and_(chosen, ~owner_configured(account_id, currency))
    return chosen


def owner_configured(account_id: Any, currency: Any) -> Any:
    """The owner set thresholds of their own for this balance (and has not disabled them)."""
    return exists().where(
        P.account_id == account_id,
        P.currency == currency,
        P.enabled == true(),
        or_(*(t.isnot(None) for t in THRESHOLDS)),
    )


def fire_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Balances at or below the highest step whose lowest step at or above them is not fired.

    The state probe comes before the account check: in a steady state almost
    every low balance has fired already, and the probe is the cheaper filter.
    """
    query = (
        select(B.account_id, B.currency)
        .where(*currency_filter(step_set, rule.selector))
        .where(B.amount <= step_set.highest)
        .where(_not_fired(rule, step_set, B.account_id, B.currency, B.amount))
        .where(_selected(rule, B.account_id, B.currency))
    )
    return query.where(B.updated_at > since) if since is not None else query


def poll_query(rule: CompiledRule, step_set: StepSet, since: datetime) -> Select[Any]:
    """One pass over the balances changed after ``since``, answering *fire* and *re-arm*.

    The changed rows are a MATERIALIZED CTE so both SQLite and PostgreSQL drive
    the query from the ``updated_at`` index; flattened, SQLite prefers the
    currency index and reads every low balance instead.
    """
    changed = (
        select(B.account_id, B.currency, B.amount).where(B.updated_at > since).cte("changed")
    ).prefix_with("MATERIALIZED")
    c = changed.c
    st = STATE.alias("rs")
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


def rearm_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Fired steps whose balance has climbed above their re-arm point."""
    rearm_above = case({s.amount: s.rearm_above for s in step_set.steps}, value=S.step)
    query = (
        select(S.account_id, S.currency)
        .select_from(STATE.join(BALANCE, and_(B.account_id == S.account_id, B.currency == S.currency)))
        .where(S.rule_id == rule.id, S.status == "fired")
        .where(S.step.in_([s.amount for s in step_set.steps]))
        .where(B.amount > rearm_above)
        .where(*currency_filter(step_set, rule.selector))
    )
    return query.where(B.updated_at > since) if since is not None else query


def remind_query(rule: CompiledRule, step_set: StepSet, now: datetime) -> Select[Any]:
    """Fired steps whose next reminder is due."""
    query = (
        select(S.account_id, S.currency)
        .select_from(STATE.join(BALANCE, and_(B.account_id == S.account_id, B.currency == S.currency)))
        .where(S.next_reminder_at <= now, S.rule_id == rule.id)
        .where(*currency_filter(step_set, rule.selector))
    )
    # Steps that follow usage or the owner have keys known per balance only.
    return query if step_set.dynamic else query.where(S.step.in_([s.amount for s in step_set.steps]))


def unscheduled_query(rule: CompiledRule, step_set: StepSet) -> Select[Any]:
    """Lowest fired steps with no reminder scheduled (for dynamic rules: any fired step without one)."""
    query = (
        select(S.account_id, S.currency)
        .select_from(STATE.join(BALANCE, and_(B.account_id == S.account_id, B.currency == S.currency)))
        .where(S.rule_id == rule.id, S.status == "fired", S.next_reminder_at.is_(None))
        .where(*currency_filter(step_set, rule.selector))
    )
    if step_set.dynamic:
        return query.distinct()
    amounts = [s.amount for s in step_set.steps]
    lower = STATE.alias("lower")
    lower_fired = exists().where(
        lower.c.rule_id == S.rule_id,
        lower.c.account_id == S.account_id,
        lower.c.currency == S.currency,
        lower.c.status == "fired",
        lower.c.step.in_(amounts),
        lower.c.step < S.step,
    )
    return query.where(S.step.in_(amounts), ~lower_fired)


def _fired_at(rule: CompiledRule, key: Any) -> Any:
    st = STATE.alias("fs")
    return exists().where(
        st.c.rule_id == rule.id,
        st.c.account_id == B.account_id,
        st.c.currency == B.currency,
        st.c.step == key,
        st.c.status == "fired",
    )


def _usage_bound(spec: UsageSpec) -> Any:
    """The highest balance a usage step may fire at, from the stored ADU (+1: the amount is rounded
    in Python). One index probe per balance: a summary row without an ADU gives a bound nothing is
    below; no row at all (the balance is new since the last refresh) gives one every balance is
    below, so the balance is evaluated and its figures computed on the spot."""
    stored = (
        select(func.coalesce(U.adu * float(spec.times) + 1, -MAX_MINOR))
        .where(U.account_id == B.account_id, U.currency == B.currency, U.window_days == spec.window_days)
        .scalar_subquery()
    )
    return func.coalesce(stored, MAX_MINOR)


def dynamic_fire_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Balances at or below any step of a rule whose steps follow usage or the owner, that step
    not fired. A superset for usage steps (the amount is rounded in Python)."""
    crossing = [and_(B.amount <= s.amount, ~_fired_at(rule, s.amount)) for s in step_set.steps]
    crossing += [and_(B.amount <= _usage_bound(u), ~_fired_at(rule, u.key)) for u in step_set.usage]
    query = select(B.account_id, B.currency).where(*currency_filter(step_set, rule.selector))
    if step_set.owner:
        query = query.select_from(
            BALANCE.join(
                PREFS, and_(P.account_id == B.account_id, P.currency == B.currency, P.enabled == true())
            )
        )
        crossing += [and_(B.amount <= t, ~_fired_at(rule, t)) for t in THRESHOLDS]
    query = query.where(or_(*crossing), _selected(rule, B.account_id, B.currency))
    return query.where(B.updated_at > since) if since is not None else query


def dynamic_rearm_query(rule: CompiledRule, step_set: StepSet, since: datetime | None) -> Select[Any]:
    """Fired steps that may re-arm: above their amount (fixed and owner steps are kept under
    their amount), or any fired usage step (its amount moves; Python decides)."""
    query = (
        select(S.account_id, S.currency)
        .select_from(STATE.join(BALANCE, and_(B.account_id == S.account_id, B.currency == S.currency)))
        .where(S.rule_id == rule.id, S.status == "fired")
        .where(or_(and_(S.step >= 0, B.amount > S.step), S.step < 0))
        .where(*currency_filter(step_set, rule.selector))
        .distinct()
    )
    return query.where(B.updated_at > since) if since is not None else query


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
        queries = [fire_query(rule, step_set, None), rearm_query(rule, step_set, None)]
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
