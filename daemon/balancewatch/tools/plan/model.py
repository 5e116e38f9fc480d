"""What a plan is made of: statuses, reasons, changes, starts and stops per rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

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
