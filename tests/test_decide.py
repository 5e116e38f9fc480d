"""The alert lifecycle of one balance, decided without a database: ``now`` is passed in."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from balancewatch.evaluate.decide import ARMED, FIRED, Kind, StepState, Transition, decide
from balancewatch.rules.compiled import Step

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)

# USD 250 / 100 / 10 in cents, re-arming 10% above each step.
S250 = Step(25_000, 27_500)
S100 = Step(10_000, 11_000)
S10 = Step(1_000, 1_100)
LADDER = (S250, S100, S10)
EXHAUSTED = Step(0, 0, exhausted=True)

States = dict[int, StepState]


def merged(states: Mapping[int, StepState], outcome: Transition) -> States:
    """The states a store would hold after writing ``outcome``."""
    out = dict(states)
    out.update({st.step: st for st in outcome.states})
    return out


class Balance:
    """One balance moved through time: each ``at`` is an evaluation whose states are kept."""

    def __init__(self, steps: tuple[Step, ...] = LADDER, remind: timedelta | None = None) -> None:
        self.steps = steps
        self.remind = remind
        self.states: States = {}

    def at(self, balance: int, now: datetime) -> Transition:
        outcome = decide(balance, self.steps, self.states, now, self.remind)
        self.states = merged(self.states, outcome)
        return outcome


def fired(amount: int, episode: int = 1) -> StepState:
    """A step that fired (and was sent) at T0."""
    return StepState(step=amount, status=FIRED, episode=episode, fired_at=T0, last_sent_at=T0)


# --- firing ---------------------------------------------------------------------------------


def test_nothing_happens_while_the_balance_stays_above_every_step() -> None:
    outcome = decide(30_000, LADDER, {}, T0, None)
    assert outcome.decisions == ()
    assert outcome.states == ()


def test_an_armed_step_fires_when_the_balance_falls_to_exactly_its_amount() -> None:
    outcome = decide(25_000, LADDER, {}, T0, None)
    [decision] = outcome.decisions
    assert (decision.kind, decision.step, decision.episode, decision.reminder) == (Kind.alert, S250, 1, 0)
    assert decision.crossed == (S250,)
    assert decision.fired_at == T0


def test_a_balance_one_cent_above_a_step_does_not_fire_it() -> None:
    assert decide(25_001, LADDER, {}, T0, None).decisions == ()


def test_the_fired_step_is_written_with_its_first_episode_and_send_time() -> None:
    outcome = decide(20_000, LADDER, {}, T0, None)
    assert outcome.states == (StepState(step=25_000, status=FIRED, episode=1, fired_at=T0, last_sent_at=T0),)


def test_it_sends_one_email_when_balance_jumps_over_two_steps() -> None:
    outcome = decide(9_000, LADDER, {}, T0, None)
    [decision] = outcome.decisions
    assert decision.step == S100
    assert decision.crossed == (S250, S100)


def test_the_steps_above_the_lowest_crossed_are_marked_fired_with_it() -> None:
    outcome = decide(500, LADDER, {}, T0, None)
    assert [d.step for d in outcome.decisions] == [S10]
    by_step = {st.step: st for st in outcome.states}
    assert {a: (st.status, st.episode) for a, st in by_step.items()} == {
        25_000: (FIRED, 1),
        10_000: (FIRED, 1),
        1_000: (FIRED, 1),
    }
    # Only the step the email was about records a send.
    assert by_step[25_000].last_sent_at is None
    assert by_step[1_000].last_sent_at == T0


def test_a_fired_step_does_not_fire_again_while_the_balance_stays_below() -> None:
    b = Balance()
    b.at(9_000, T0)
    outcome = b.at(8_000, T0 + timedelta(hours=1))
    assert outcome.decisions == ()
    assert outcome.states == ()


def test_a_step_crossed_while_a_lower_step_is_fired_is_marked_fired_silently() -> None:
    # The 100 step re-armed on its own (e.g. its state was reset) while 10 stayed fired.
    states = {10_000: StepState(step=10_000), 1_000: fired(1_000)}
    outcome = decide(900, LADDER, states, T0, None)
    assert outcome.decisions == ()
    by_step = {st.step: st for st in outcome.states}
    assert (by_step[25_000].status, by_step[10_000].status) == (FIRED, FIRED)
    assert 1_000 not in by_step


# --- re-arming --------------------------------------------------------------------------------


def test_a_fired_step_stays_fired_while_the_balance_is_inside_its_rearm_band() -> None:
    b = Balance()
    b.at(9_000, T0)
    assert b.at(11_000, T0 + timedelta(hours=1)).states == ()  # exactly step + 10%: not above
    assert b.at(9_500, T0 + timedelta(hours=2)).decisions == ()
    assert b.states[10_000].status == FIRED


def test_a_step_rearms_when_the_balance_climbs_above_step_plus_band() -> None:
    b = Balance()
    b.at(9_000, T0)
    later = T0 + timedelta(hours=1)
    outcome = b.at(11_001, later)
    assert outcome.decisions == ()
    assert [(st.step, st.status, st.rearmed_at) for st in outcome.states] == [(10_000, ARMED, later)]
    assert b.states[25_000].status == FIRED  # 110.01 is still below 250


def test_a_rearmed_step_fires_again_as_the_next_episode() -> None:
    b = Balance()
    b.at(9_000, T0)
    b.at(12_000, T0 + timedelta(hours=1))
    again = T0 + timedelta(hours=2)
    [decision] = b.at(9_900, again).decisions
    assert (decision.step, decision.episode, decision.fired_at) == (S100, 2, again)
    assert decision.crossed == (S100,)


def test_a_top_up_above_every_band_rearms_all_steps() -> None:
    b = Balance()
    b.at(500, T0)
    outcome = b.at(30_000, T0 + DAY)
    assert {st.step: st.status for st in outcome.states} == {25_000: ARMED, 10_000: ARMED, 1_000: ARMED}


def test_a_partial_top_up_rearms_only_the_steps_it_clears() -> None:
    b = Balance()
    b.at(500, T0)
    b.at(10_500, T0 + DAY)  # clears 10's band, not 100's
    assert {a: st.status for a, st in b.states.items()} == {25_000: FIRED, 10_000: FIRED, 1_000: ARMED}
    [decision] = b.at(800, T0 + 2 * DAY).decisions
    assert (decision.step, decision.episode) == (S10, 2)


def test_a_step_amount_absent_from_the_stored_states_starts_armed() -> None:
    # The 100 step was changed to 95: state is keyed on the amount, so 95 is fresh.
    s95 = Step(9_500, 10_450)
    states = {25_000: fired(25_000), 10_000: fired(10_000, episode=4)}
    [decision] = decide(9_000, (S250, s95, S10), states, T0, None).decisions
    assert (decision.step, decision.episode) == (s95, 1)


# --- exhausted --------------------------------------------------------------------------------


def test_the_exhausted_step_fires_at_zero() -> None:
    [decision] = decide(0, (EXHAUSTED,), {}, T0, None).decisions
    assert decision.step.exhausted
    assert decision.step.amount == 0


def test_the_exhausted_step_fires_below_zero() -> None:
    [decision] = decide(-37, (S10, EXHAUSTED), {}, T0, None).decisions
    assert decision.step == EXHAUSTED
    assert decision.crossed == (S10, EXHAUSTED)


def test_the_exhausted_step_does_not_fire_at_one_cent() -> None:
    assert decide(1, (EXHAUSTED,), {}, T0, None).decisions == ()


def test_an_exhausted_step_without_a_band_rearms_at_any_positive_balance() -> None:
    b = Balance((EXHAUSTED,))
    b.at(0, T0)
    b.at(1, T0 + DAY)
    assert b.states[0].status == ARMED


# --- reminders --------------------------------------------------------------------------------


def test_a_fresh_alert_schedules_its_first_reminder_one_interval_away() -> None:
    outcome = decide(9_000, LADDER, {}, T0, DAY)
    by_step = {st.step: st for st in outcome.states}
    assert by_step[10_000].next_reminder_at == T0 + DAY
    assert by_step[25_000].next_reminder_at is None


def test_no_reminder_is_sent_before_one_interval_has_passed() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    assert b.at(9_000, T0 + DAY - timedelta(seconds=1)).decisions == ()


def test_a_reminder_is_sent_after_each_interval_while_the_step_stays_fired_and_below() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    [first] = b.at(8_000, T0 + DAY).decisions
    [second] = b.at(7_000, T0 + 2 * DAY).decisions
    assert [(d.kind, d.step, d.episode, d.reminder) for d in (first, second)] == [
        (Kind.reminder, S100, 1, 1),
        (Kind.reminder, S100, 1, 2),
    ]
    assert second.fired_at == T0  # when the episode began, not when this reminder went out
    assert b.states[10_000].next_reminder_at == T0 + 3 * DAY


def test_no_reminders_are_sent_when_the_rule_has_none() -> None:
    b = Balance(remind=None)
    b.at(9_000, T0)
    assert b.states[10_000].next_reminder_at is None
    assert b.at(9_000, T0 + 30 * DAY).decisions == ()


def test_missed_reminders_are_not_caught_up_after_downtime() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    back = T0 + 3 * DAY + timedelta(hours=5)
    [reminder] = b.at(9_000, back).decisions
    assert reminder.reminder == 1
    assert b.states[10_000].next_reminder_at == back + DAY
    assert b.at(9_000, back + timedelta(hours=1)).decisions == ()


def test_no_reminder_while_the_balance_is_between_the_step_and_its_rearm_point() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    outcome = b.at(10_500, T0 + DAY)
    assert outcome.decisions == ()
    assert b.states[10_000].next_reminder_at == T0 + 2 * DAY
    [reminder] = b.at(9_000, T0 + 2 * DAY).decisions
    assert reminder.reminder == 1


def test_reminders_follow_the_lowest_fired_step() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    dropped = T0 + timedelta(hours=12)
    [alert] = b.at(900, dropped).decisions
    assert (alert.kind, alert.step) == (Kind.alert, S10)
    assert b.states[10_000].next_reminder_at is None
    assert b.states[1_000].next_reminder_at == dropped + DAY
    assert b.at(900, T0 + DAY).decisions == ()  # the 100 step's reminder was superseded
    [reminder] = b.at(900, dropped + DAY).decisions
    assert (reminder.step, reminder.reminder) == (S10, 1)


def test_rearming_clears_the_pending_reminder() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    b.at(30_000, T0 + timedelta(hours=1))
    assert b.states[10_000].next_reminder_at is None
    assert b.at(30_000, T0 + 2 * DAY).decisions == ()


def test_after_a_partial_top_up_reminders_move_to_the_step_still_fired_above() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    topped_up = T0 + timedelta(hours=1)
    b.at(20_000, topped_up)  # 100 re-arms; 250 is still fired and the balance below it
    assert b.at(20_000, T0 + DAY).decisions == ()
    [reminder] = b.at(20_000, topped_up + DAY).decisions
    assert (reminder.step, reminder.episode, reminder.reminder) == (S250, 1, 1)


def test_a_new_episode_counts_its_reminders_from_one() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    b.at(9_000, T0 + DAY)
    b.at(20_000, T0 + 2 * DAY)
    [alert] = b.at(9_000, T0 + 3 * DAY).decisions
    [reminder] = b.at(9_000, T0 + 4 * DAY).decisions
    assert (alert.episode, reminder.episode, reminder.reminder) == (2, 2, 1)


def test_removing_the_reminder_interval_clears_a_scheduled_reminder() -> None:
    b = Balance(remind=DAY)
    b.at(9_000, T0)
    b.remind = None
    outcome = b.at(9_000, T0 + timedelta(hours=1))
    assert [(st.step, st.next_reminder_at) for st in outcome.states] == [(10_000, None)]
    assert b.at(9_000, T0 + 2 * DAY).decisions == ()


def test_a_step_fired_before_reminders_were_configured_gets_its_first_one_an_interval_later() -> None:
    b = Balance(remind=None)
    b.at(9_000, T0)
    b.remind = DAY
    enabled = T0 + 10 * DAY
    assert b.at(9_000, enabled).decisions == ()
    assert b.states[10_000].next_reminder_at == enabled + DAY


def test_an_exhausted_balance_is_reminded_about_while_it_stays_at_zero() -> None:
    b = Balance((S10, EXHAUSTED), remind=DAY)
    b.at(0, T0)
    [reminder] = b.at(-500, T0 + DAY).decisions
    assert (reminder.kind, reminder.step, reminder.reminder) == (Kind.reminder, EXHAUSTED, 1)
