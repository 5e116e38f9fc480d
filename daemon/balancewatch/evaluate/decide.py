"""The alert lifecycle of one balance under one rule: pure, with ``now`` passed in.

For each step of a ladder the state is *armed* or *fired*:

- an armed step whose balance is at or below it fires; when one change
  crosses several steps, ONE notification goes out, for the lowest, and the
  steps above it are marked fired with it;
- a step crossed while a lower step is already fired is marked fired
  silently: the owner already knows the balance is lower still;
- a fired step re-arms when the balance climbs above ``step.rearm_above``
  (the step plus the re-arm band);
- with a reminder interval, the lowest fired step reminds once per interval
  while the balance stays at or below it; missed reminders (a daemon that
  was down) are not caught up, the next one is simply due now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from balancewatch.rules.compiled import Step

ARMED, FIRED = "armed", "fired"


class Kind(StrEnum):
    alert = "alert"
    reminder = "reminder"
    restored = "restored"


@dataclass(frozen=True, slots=True)
class StepState:
    """Stored state of one step (under its state key); ``episode`` counts how often it has fired."""

    step: int
    status: str = ARMED
    episode: int = 0
    reminders_sent: int = 0
    fired_at: datetime | None = None
    last_sent_at: datetime | None = None
    next_reminder_at: datetime | None = None
    rearmed_at: datetime | None = None

    @property
    def fired(self) -> bool:
        return self.status == FIRED


@dataclass(frozen=True, slots=True)
class Decision:
    """A notification to send: the step it is about, and what makes it unique."""

    kind: Kind
    step: Step
    episode: int
    reminder: int  # 0 for the alert itself, 1.. for reminders
    crossed: tuple[Step, ...]  # every step this change crossed, highest first
    fired_at: datetime


@dataclass(frozen=True, slots=True)
class Transition:
    """What to send and which step states to write; unchanged states are left out."""

    decisions: tuple[Decision, ...]
    states: tuple[StepState, ...]


def decide(
    balance: int,
    steps: Sequence[Step],
    states: Mapping[int, StepState],
    now: datetime,
    remind: timedelta | None,
    *,
    restored: bool = False,
) -> Transition:
    """Decide what ``balance`` means for ``steps`` (highest amount first) given their ``states``
    (by state key). With ``restored``, a balance that climbs back above every step that had
    fired gets one *restored* notification, about the lowest of them."""
    before = {s.state_key: states.get(s.state_key, StepState(step=s.state_key)) for s in steps}
    after = dict(before)
    was_fired = [s for s in steps if before[s.state_key].fired]
    for s in steps:
        st = after[s.state_key]
        if st.fired and balance > s.rearm_above:
            after[s.state_key] = replace(st, status=ARMED, next_reminder_at=None, rearmed_at=now)

    decisions: list[Decision] = []
    crossed = [s for s in steps if balance <= s.amount and not after[s.state_key].fired]
    if crossed:
        decisions.extend(_fire(crossed, steps, after, now))
    elif restored and was_fired and not any(st.fired for st in after.values()):
        lowest = was_fired[-1]
        episode = before[lowest.state_key].episode
        # fired_at: when the alert this notice answers went out (the template says so).
        fired_at = before[lowest.state_key].fired_at or now
        decisions.append(Decision(Kind.restored, lowest, episode, 0, tuple(was_fired), fired_at))
    if remind is not None:
        alerted = any(d.kind is Kind.alert for d in decisions)
        decisions.extend(_remind(balance, steps, after, now, remind, fired_now=alerted))
    else:
        for key, st in after.items():
            if st.next_reminder_at is not None:
                after[key] = replace(st, next_reminder_at=None)
    changed = tuple(st for key, st in after.items() if st != before[key])
    return Transition(decisions=tuple(decisions), states=changed)


def _fire(
    crossed: list[Step], steps: Sequence[Step], after: dict[int, StepState], now: datetime
) -> list[Decision]:
    lowest = crossed[-1]
    already_lower = any(after[s.state_key].fired and s.amount < lowest.amount for s in steps)
    for s in crossed:
        st = after[s.state_key]
        after[s.state_key] = replace(
            st, status=FIRED, episode=st.episode + 1, reminders_sent=0, fired_at=now, next_reminder_at=None
        )
    if already_lower:
        return []
    fired = after[lowest.state_key]
    after[lowest.state_key] = replace(fired, last_sent_at=now)
    return [Decision(Kind.alert, lowest, fired.episode, 0, tuple(crossed), now)]


def _remind(
    balance: int,
    steps: Sequence[Step],
    after: dict[int, StepState],
    now: datetime,
    interval: timedelta,
    *,
    fired_now: bool,
) -> list[Decision]:
    fired = [s for s in steps if after[s.state_key].fired]
    if not fired:
        return []
    active = fired[-1]
    for s in fired[:-1]:
        if after[s.state_key].next_reminder_at is not None:
            after[s.state_key] = replace(after[s.state_key], next_reminder_at=None)
    st = after[active.state_key]
    if fired_now or st.next_reminder_at is None:
        # A fresh alert, or a step that has just become the lowest one fired:
        # the first reminder is one full interval away.
        after[active.state_key] = replace(st, next_reminder_at=now + interval)
        return []
    if st.next_reminder_at > now:
        return []
    if balance > active.amount:
        # Between the step and its re-arm point: not low enough to remind about.
        after[active.state_key] = replace(st, next_reminder_at=now + interval)
        return []
    number = st.reminders_sent + 1
    after[active.state_key] = replace(
        st, reminders_sent=number, last_sent_at=now, next_reminder_at=now + interval
    )
    return [Decision(Kind.reminder, active, st.episode, number, (active,), st.fired_at or now)]
