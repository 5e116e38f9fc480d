"""What an edit of the rules would do, read from the live database without writing to it.

Each rule id in the old set or the new one is *added*, *removed*, *changed* or
*unchanged*. For a rule whose edit can move alerts (enabled, accounts,
thresholds, re-arm band, reminders) two questions are answered against the
database as it is now:

- *start*: balances for which the new rule, with the stored alert state,
  decides a notification now. Those the old rule would send now as well are
  left out and only counted (``due_anyway``): they are due whatever the edit,
  the daemon simply has not polled since.
- *stop*: fired alert state that applies under the old rule and no longer
  under the new one: the rule is removed or disabled, the account no longer
  selected, its currency no longer covered, the step no longer in the ladder,
  or the balance is above the new re-arm point.

Alert state is keyed on rule id and step amount, so a new step or a new rule
starts with none: that is exactly what makes a balance start alerting.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
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

from balancewatch.core.durations import format_duration
from balancewatch.core.money import to_major
from balancewatch.evaluate import candidates, usage
from balancewatch.evaluate.candidates import (
    ACCOUNT,
    BALANCE,
    STATE,
    THRESHOLDS,
    A,
    B,
    Key,
    P,
    S,
    account_filter,
    currency_filter,
    owner_configured,
)
from balancewatch.evaluate.decide import FIRED, Decision, StepState, Transition, decide
from balancewatch.evaluate.dynamic import Preferences, load_preferences, remind_for, steps_for
from balancewatch.evaluate.load import Subject, load_states, load_subjects
from balancewatch.rules.compiled import CompiledRule, Selector, StepSet

CHUNK = 500
DEFAULT_LIMIT = 10


class Status(StrEnum):
    added = "added"
    changed = "changed"
    removed = "removed"
    unchanged = "unchanged"


class Reason(StrEnum):
    """Why fired state stops applying."""

    rule_removed = "rule-removed"
    rule_disabled = "rule-disabled"
    not_selected = "account-not-selected"
    currency_gone = "currency-not-covered"
    step_gone = "step-gone"
    rearmed = "rearmed"


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the old and the new rule, as text a sysadmin reads."""

    field: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One balance in a list: for *start* ``why`` is the notification kind
    (alert, reminder); for *stop* it is a Reason value."""

    account_id: str
    name: str
    currency: str
    balance: int
    step: int
    why: str


@dataclass(frozen=True, slots=True)
class StopGroup:
    """How many fired states of one step stop, for one reason."""

    reason: Reason
    currency: str
    step: int
    states: int


@dataclass(frozen=True, slots=True)
class Start:
    """Balances that would be notified now because of the edit; ``first`` sorted by account."""

    accounts: int
    balances: int
    first: tuple[Entry, ...]
    due_anyway: int = 0


@dataclass(frozen=True, slots=True)
class Stop:
    """Fired state that would no longer apply; ``first`` sorted by account, currency, step."""

    accounts: int
    balances: int
    first: tuple[Entry, ...]
    groups: tuple[StopGroup, ...]

    @property
    def states(self) -> int:
        """Fired step states that stop applying: ``first`` lists the first of these."""
        return sum(g.states for g in self.groups)


NO_START = Start(0, 0, ())
NO_STOP = Stop(0, 0, (), ())


@dataclass(frozen=True, slots=True)
class RulePlan:
    """One rule id: its status, what changed, and (when the edit can move alerts) its effects.

    ``start`` and ``stop`` are None when nothing was computed because the edit
    cannot change who is alerted (unchanged, or only wording and recipients).
    """

    rule_id: str
    status: Status
    changes: tuple[Change, ...]
    start: Start | None
    stop: Stop | None


@dataclass(frozen=True, slots=True)
class Plan:
    """Every rule id of both sets, sorted by id."""

    rules: tuple[RulePlan, ...]
    now: datetime

    def count(self, status: Status) -> int:
        return sum(1 for r in self.rules if r.status is status)

    @property
    def starting(self) -> int:
        """Balances that would start alerting, summed over rules."""
        return sum(r.start.balances for r in self.rules if r.start)

    @property
    def stopping(self) -> int:
        """Balances with fired state that would stop applying, summed over rules."""
        return sum(r.stop.balances for r in self.rules if r.stop)


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that cannot write, rolled back at the end.

    PostgreSQL runs it READ ONLY at REPEATABLE READ, so every query sees the
    same snapshot; SQLite begins a plain (deferred) BEGIN and sets
    ``query_only`` on this connection while it is lent out.
    """
    options: dict[str, Any] = {"readonly": True}
    is_sqlite = engine.dialect.name == "sqlite"
    if engine.dialect.name == "postgresql":
        options |= {"postgresql_readonly": True, "isolation_level": "REPEATABLE READ"}
    with engine.connect().execution_options(**options) as conn:
        if is_sqlite:
            _sqlite_query_only(conn, on=True)
        try:
            yield conn
        finally:
            conn.rollback()
            if is_sqlite:
                _sqlite_query_only(conn, on=False)


def _sqlite_query_only(conn: Connection, *, on: bool) -> None:
    # On the driver connection, outside any transaction: the pooled connection
    # must be writable again once it goes back to the pool.
    conn.connection.driver_connection.execute(f"PRAGMA query_only = {int(on)}")  # type: ignore[union-attr]


def compare(
    conn: Connection,
    old: Sequence[CompiledRule],
    new: Sequence[CompiledRule],
    now: datetime,
    limit: int = DEFAULT_LIMIT,
) -> Plan:
    """The plan for replacing ``old`` with ``new``, read through ``conn`` (which it never writes)."""
    old_by_id = {r.id: r for r in old}
    new_by_id = {r.id: r for r in new}
    ids = sorted(old_by_id.keys() | new_by_id.keys())
    return Plan(tuple(rule_plan(conn, old_by_id.get(i), new_by_id.get(i), now, limit) for i in ids), now)


def rule_plan(
    conn: Connection, old: CompiledRule | None, new: CompiledRule | None, now: datetime, limit: int
) -> RulePlan:
    """The plan for one rule id; ``old`` or ``new`` is None where the id is absent."""
    rule = new or old
    assert rule is not None, "a rule id comes from one of the two sets"
    changes = differences(old, new)
    status = _status(old, new, changes)
    if status is Status.unchanged or not moves_alerts(old, new):
        return RulePlan(rule.id, status, changes, None, None)
    return RulePlan(
        rule.id, status, changes, starts(conn, old, new, now, limit), stops(conn, old, new, limit)
    )


def _status(old: CompiledRule | None, new: CompiledRule | None, changes: tuple[Change, ...]) -> Status:
    if old is None:
        return Status.added
    if new is None:
        return Status.removed
    return Status.changed if changes else Status.unchanged


# --- start ---------------------------------------------------------------------------------------


class _Tally:
    """Counts every entry, keeps the first ``limit`` by (account, currency)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.accounts: set[str] = set()
        self.balances = 0
        self.first: list[Entry] = []

    def add(self, entry: Entry) -> None:
        self.accounts.add(entry.account_id)
        self.balances += 1
        self.first.append(entry)
        if len(self.first) > 2 * self.limit + CHUNK:
            self.first = _sorted(self.first)[: self.limit]

    def entries(self) -> tuple[Entry, ...]:
        return tuple(_sorted(self.first)[: self.limit])


def _sorted(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.account_id, e.currency, -e.step))


def starts(
    conn: Connection, old: CompiledRule | None, new: CompiledRule | None, now: datetime, limit: int
) -> Start:
    """Balances ``new`` would notify now that ``old`` would not, with the stored state."""
    if new is None or not new.enabled:
        return NO_START
    tally, due_anyway = _Tally(limit), 0
    for step_set in new.step_sets:
        # The keys the next full sweep would look at under the new rule; only the
        # balances among them are loaded, a chunk at a time.
        keys = candidates.find(conn, new, step_set, now, None)
        for chunk in candidates.chunks(keys, CHUNK):
            subjects = load_subjects(conn, new, step_set, chunk, lock=False)
            states = load_states(conn, new.id, [s.key for s in subjects])
            per_balance = _PerBalance.load(conn, [s.key for s in subjects], _windows(old, new))
            due = _due(subjects, step_set, new, states, now, per_balance)
            already = _due_under(conn, old, due, states, now, per_balance)
            for key, (subject, decisions) in due.items():
                if _signature(decisions) <= already.get(key, frozenset()):
                    due_anyway += 1
                    continue
                d = decisions[0]
                tally.add(
                    Entry(
                        subject.account_id,
                        subject.name,
                        subject.currency,
                        subject.amount,
                        d.step.amount,
                        d.kind.value,
                    )
                )
    return Start(len(tally.accounts), tally.balances, tally.entries(), due_anyway)


Due = dict[Key, tuple[Subject, tuple[Decision, ...]]]
States = dict[Key, dict[int, StepState]]


@dataclass(frozen=True)
class _PerBalance:
    """What steps that follow usage or the owner need, for a chunk of balances."""

    adu: dict[tuple[str, str, int], int]
    prefs: dict[Key, Preferences]

    @classmethod
    def load(cls, conn: Connection, keys: Sequence[Key], windows: set[int]) -> _PerBalance:
        return cls(usage.stored(conn, keys, windows), load_preferences(conn, keys))

    def decide(
        self, rule: CompiledRule, step_set: StepSet, s: Subject, states: States, now: datetime
    ) -> Transition:
        prefs = self.prefs.get(s.key)
        steps = steps_for(rule, step_set, s, self.adu, prefs) if step_set.dynamic else step_set.steps
        remind = remind_for(rule, step_set, prefs)
        return decide(s.amount, steps, states.get(s.key, {}), now, remind, restored=rule.restored)


def _windows(*rules: CompiledRule | None) -> set[int]:
    return {u.window_days for r in rules if r is not None for ss in r.step_sets for u in ss.usage}


def _due(
    subjects: Sequence[Subject],
    step_set: StepSet,
    rule: CompiledRule,
    states: States,
    now: datetime,
    per_balance: _PerBalance,
) -> Due:
    out: Due = {}
    for s in subjects:
        outcome = per_balance.decide(rule, step_set, s, states, now)
        if outcome.decisions:
            out[s.key] = (s, outcome.decisions)
    return out


def _due_under(
    conn: Connection,
    old: CompiledRule | None,
    due: Due,
    states: States,
    now: datetime,
    per_balance: _PerBalance,
) -> dict[Key, frozenset[tuple[str, int]]]:
    """What ``old`` would send now for the balances in ``due``, by the same stored state."""
    if old is None or not old.enabled or not due:
        return {}
    out: dict[Key, frozenset[tuple[str, int]]] = {}
    for currency in sorted({key[1] for key in due}):
        step_set = step_set_for(old, currency)
        if step_set is None:
            continue
        keys = [key for key in due if key[1] == currency]
        # load_subjects applies the old selector in SQL: balances it did not watch drop out.
        for s in load_subjects(conn, old, step_set, keys, lock=False):
            out[s.key] = _signature(per_balance.decide(old, step_set, s, states, now).decisions)
    return out


def _signature(decisions: Sequence[Decision]) -> frozenset[tuple[str, int]]:
    return frozenset((d.kind.value, d.step.amount) for d in decisions)


def step_set_for(rule: CompiledRule, currency: str) -> StepSet | None:
    """The step set of ``rule`` that watches balances in ``currency``, if any."""
    for step_set in rule.step_sets:
        if step_set.currency == currency:
            return step_set
        if step_set.currency is None and (
            rule.selector.currencies is None or currency in rule.selector.currencies
        ):
            return step_set
    return None


# --- stop ----------------------------------------------------------------------------------------


def stops(conn: Connection, old: CompiledRule | None, new: CompiledRule | None, limit: int) -> Stop:
    """Fired state that applies under ``old`` and would not under ``new``, counted in SQL."""
    if old is None or not old.enabled:
        return NO_STOP
    where: list[ColumnElement[bool]] = [S.rule_id == old.id, S.status == FIRED, _applies(old)]
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
                and_(B.amount > _rearm_above(new), ~_truth(B.amount > _rearm_above(old))),
            )
        )
    rows = (
        select(S.account_id, A.name, S.currency, B.amount, S.step, reason.label("reason"))
        .select_from(
            STATE.join(BALANCE, and_(B.account_id == S.account_id, B.currency == S.currency)).join(
                ACCOUNT, A.id == S.account_id
            )
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
        return and_(chosen, ~owner_configured(S.account_id, S.currency))
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
    found: list[ColumnElement[bool]] = [S.step.in_(keys)]
    if step_set.owner:
        found.append(
            exists().where(
                P.account_id == S.account_id,
                P.currency == S.currency,
                P.enabled == true(),
                or_(*(t == S.step for t in THRESHOLDS)),
            )
        )
    return or_(*found)


def _applies(rule: CompiledRule) -> ColumnElement[bool]:
    return and_(_selected(rule), _in_ladder(rule))


def _rearm_above(rule: CompiledRule) -> ColumnElement[Any]:
    """The re-arm point of the state row's step under ``rule``; NULL where it has no such step."""
    whens = [
        (and_(true(), *currency_filter(ss, rule.selector), S.step == s.amount), s.rearm_above)
        for ss in rule.step_sets
        for s in ss.steps
    ]
    return case(*whens, else_=None) if whens else literal(None)


# --- what changed --------------------------------------------------------------------------------


def moves_alerts(old: CompiledRule | None, new: CompiledRule | None) -> bool:
    """Whether replacing ``old`` with ``new`` can change who is alerted or when.

    Description, recipients and template change what is sent, not whether.
    """
    if old is None or new is None:
        present = old or new
        return present is not None and present.enabled
    if not (old.enabled or new.enabled):
        return False
    return (old.enabled, old.selector, old.step_sets, old.remind) != (
        new.enabled,
        new.selector,
        new.step_sets,
        new.remind,
    )


def differences(old: CompiledRule | None, new: CompiledRule | None) -> tuple[Change, ...]:
    """What differs between two versions of one rule; empty when either is absent."""
    if old is None or new is None:
        return ()
    pairs = [
        ("enabled", _yes_no(old.enabled), _yes_no(new.enabled)),
        ("accounts", describe_selector(old.selector), describe_selector(new.selector)),
        *_ladder_changes(old, new),
        ("rearm", _band(old), _band(new)),
        ("remind", _remind(old), _remind(new)),
        ("notify", _notify(old), _notify(new)),
        ("template", old.template, new.template),
        ("inhibited_by", ", ".join(old.inhibited_by) or "none", ", ".join(new.inhibited_by) or "none"),
        ("description", old.description, new.description),
    ]
    return tuple(Change(f, o, n) for f, o, n in pairs if o != n)


def describe_selector(sel: Selector) -> str:
    """The selector as one line: ``billing=prepaid currency=USD labels.tier=pro|enterprise``."""
    parts = [f"billing={sel.billing or 'any'}"]
    if sel.currencies is not None:
        parts.append(f"currency={','.join(sel.currencies)}")
    parts.extend(f"labels.{key}={'|'.join(values)}" for key, values in sel.labels)
    if sel.ids is not None:
        parts.append(f"ids={','.join(sel.ids)}")
    return " ".join(parts)


def _ladder_changes(old: CompiledRule, new: CompiledRule) -> list[tuple[str, str, str]]:
    old_sets = {ss.currency: ss for ss in old.step_sets}
    new_sets = {ss.currency: ss for ss in new.step_sets}
    currencies = sorted(old_sets.keys() | new_sets.keys(), key=lambda c: (c is None, c or ""))
    return [
        (f"below {c or 'any currency'}", _ladder(old_sets.get(c)), _ladder(new_sets.get(c)))
        for c in currencies
    ]


def _ladder(step_set: StepSet | None) -> str:
    if step_set is None:
        return "none"
    return "/".join(major(s.amount, step_set.currency) for s in step_set.steps)


def major(minor: int, currency: str | None) -> str:
    """Minor units as a plain major-unit number: ``25000`` USD is ``250``, ``1250`` is ``12.50``."""
    if currency is None:
        return str(minor)
    value = to_major(minor, currency)
    return str(int(value)) if value == value.to_integral_value() else str(value)


def _band(rule: CompiledRule) -> str:
    if rule.model is not None:
        band = rule.model.rearm
        return f"{band.percent}%" if band.percent is not None else f"{band.amount}"
    # Without the source model: the re-arm points themselves.
    return "; ".join(
        f"{ss.currency or 'any'} " + "/".join(major(s.rearm_above, ss.currency) for s in ss.steps)
        for ss in rule.step_sets
    )


def _remind(rule: CompiledRule) -> str:
    return format_duration(rule.remind) if rule.remind is not None else "none"


def _notify(rule: CompiledRule) -> str:
    return ", ".join([*(["owner"] if rule.notify_owner else []), *rule.recipients])


def _yes_no(value: bool) -> str:
    return "true" if value else "false"
