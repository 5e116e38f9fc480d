"""Which balances would start alerting under the new rules: the decisions they would make that
the old rules would not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
)

from balancewatch.evaluate import candidates, usage
from balancewatch.evaluate.candidates import (
    Key,
)
from balancewatch.evaluate.decide import Decision, StepState, Transition, decide
from balancewatch.evaluate.dynamic import Preferences, load_preferences, remind_for, steps_for
from balancewatch.evaluate.load import Subject, load_states, load_subjects
from balancewatch.rules.compiled import CompiledRule, StepSet
from balancewatch.tools.plan.model import CHUNK, NO_START, Entry, Start

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
    conn: Connection,
    old: CompiledRule | None,
    new: CompiledRule | None,
    now: datetime,
    limit: int,
    min_history: timedelta,
) -> Start:
    """Balances ``new`` would notify now that ``old`` would not, with the stored state.

    Usage steps follow the figures the daemon would use: the stored summary, and for a balance
    new since the last refresh the figures computed now (``min_history`` as configured)."""
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
            per_balance = _PerBalance.load(
                conn, [s.key for s in subjects], _windows(old, new), now, min_history
            )
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
    def load(
        cls, conn: Connection, keys: Sequence[Key], windows: set[int], now: datetime, min_history: timedelta
    ) -> _PerBalance:
        by_window = usage.current(conn, keys, windows, now, min_history)
        return cls(usage.adu_of(by_window), load_preferences(conn, keys))

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
