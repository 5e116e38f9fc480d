"""Evaluation through the real pipeline, on SQLite and PostgreSQL: what is decided, when, and once.

Each test moves the ``clock`` and reads the decisions from the ``outbox`` and
``alert_state`` tables. Amounts are in cents.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, event, select
from sqlmodel import Session

from balancewatch.alerts import cycle
from balancewatch.alerts.cycle import CycleStats
from balancewatch.config import Settings
from balancewatch.core import shipped
from balancewatch.liveset import LiveSet
from balancewatch.outbox import OUTBOX_TABLE as OUTBOX
from balancewatch.outbox import requeue_refs
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store.db import get_meta, make_engine
from tests.conftest import Clock, write_rules
from tests.helpers import (
    STATE,
    account,
    all_states,
    outbox,
    post,
    set_balance,
    set_enabled,
    states,
    write_amount_only,
)

LADDER = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    template: low-balance
"""

DAY = timedelta(days=1)
MakePipeline = Callable[..., Pipeline]
MakeSettings = Callable[..., Settings]
LiveFrom = Callable[[str], LiveSet]


@pytest.fixture
def make_pipeline(
    engine: Engine, db_url: str, make_settings: MakeSettings, live_from: LiveFrom
) -> MakePipeline:
    """A pipeline over the test database running the given rules; ``env`` overrides settings."""

    def make(rules: str = LADDER, **env: str) -> Pipeline:
        return build_pipeline(engine, make_settings(db_url, **env), live_from(rules))

    return make


def reload(pipeline: Pipeline, live: LiveSet) -> None:
    """What the daemon does on SIGHUP with a changed set: swap it in and sweep next."""
    pipeline.swap(live)
    pipeline.last_sweep = None


def decided(stats: CycleStats) -> dict[str, int]:
    """Notifications decided per rule, leaving out rules that looked and decided nothing."""
    return {rule_id: n for rule_id, n in stats.decided.items() if n}


def funded(
    engine: Engine,
    clock: Clock,
    account_id: str = "acme",
    amount: int = 30_000,
    *,
    name: str = "Acme Ltd",
    labels: dict[str, str] | None = None,
) -> None:
    """An account holding ``amount`` USD cents (300.00 by default: above every step)."""
    account(engine, account_id, name=name, labels=labels)
    post(engine, account_id, "USD", amount, clock())


# --- firing at or below a step ----------------------------------------------------------------


def test_a_debit_to_exactly_a_step_sends_one_alert_for_that_step(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    assert decided(pipeline.evaluate(clock())) == {}

    post(engine, "acme", "USD", -5_000, clock.advance(minutes=1))
    stats = pipeline.evaluate(clock.advance(minutes=1))

    assert decided(stats) == {"ladder": 1}
    [sent] = outbox(engine)
    assert (sent.kind, sent.account_id, sent.currency, sent.step) == ("alert", "acme", "USD", 25_000)
    assert sent.idem_key == "alert/ladder/acme/USD/25000/1/0"
    assert sent.recipients == ("acme@owner.example",)
    assert sent.subject == "Acme Ltd: USD balance $250.00 has reached $250.00"


def test_it_sends_one_email_when_balance_jumps_over_two_steps(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    pipeline.evaluate(clock())

    post(engine, "acme", "USD", -21_000, clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))

    [sent] = outbox(engine)
    assert (sent.step, sent.idem_key) == (10_000, "alert/ladder/acme/USD/10000/1/0")
    assert sent.subject == "Acme Ltd: USD balance $90.00 is below $100.00"
    assert (
        "It passed 2 thresholds at once ($250.00, $100.00); this is the only email about them." in sent.text
    )
    assert {step: (st.status, st.episode) for step, st in states(engine, "ladder", "acme").items()} == {
        25_000: ("fired", 1),
        10_000: ("fired", 1),
    }


def test_further_usage_below_a_fired_step_sends_nothing_more(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    for _ in range(3):
        post(engine, "acme", "USD", -1_000, clock.advance(minutes=1))
        assert decided(pipeline.evaluate(clock.advance(minutes=1))) == {}

    assert [s.step for s in outbox(engine)] == [10_000]


def test_a_drop_to_the_bottom_step_sends_one_email_for_it(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    pipeline.evaluate(clock())

    post(engine, "acme", "USD", -29_500, clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))

    assert [(s.step, s.subject) for s in outbox(engine)] == [
        (1_000, "Acme Ltd: USD balance $5.00 is below $10.00")
    ]
    assert {step: st.status for step, st in states(engine, "ladder", "acme").items()} == {
        25_000: "fired",
        10_000: "fired",
        1_000: "fired",
    }


# --- re-arming ----------------------------------------------------------------------------------


def test_a_step_fires_again_only_after_the_balance_climbs_above_the_percentage_band(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()  # rearm defaults to 10%: the 100 step re-arms above 110.00
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "USD", 11_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    set_balance(engine, "acme", "USD", 9_500, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    assert len(outbox(engine)) == 1

    set_balance(engine, "acme", "USD", 11_001, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    assert states(engine, "ladder", "acme")[10_000].status == "armed"
    set_balance(engine, "acme", "USD", 9_500, clock.advance(minutes=5))
    pipeline.evaluate(clock())

    assert [s.idem_key for s in outbox(engine)] == [
        "alert/ladder/acme/USD/10000/1/0",
        "alert/ladder/acme/USD/10000/2/0",
    ]


def test_an_absolute_rearm_band_is_counted_in_the_rule_currency(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(LADDER.replace("template:", "rearm: 5\n    template:"))
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "USD", 10_500, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    set_balance(engine, "acme", "USD", 9_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    assert len(outbox(engine)) == 1

    set_balance(engine, "acme", "USD", 10_501, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    set_balance(engine, "acme", "USD", 9_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    assert [(s.step, s.idem_key.rsplit("/", 2)[-2]) for s in outbox(engine)] == [(10_000, "1"), (10_000, "2")]


# --- reminders -----------------------------------------------------------------------------------

REMINDING = LADDER.replace("template:", "remind: 24h\n    template:")


def test_a_reminder_is_sent_after_each_interval_while_the_balance_stays_low(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(REMINDING)
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    assert decided(pipeline.evaluate(clock.advance(hours=23, minutes=59))) == {}
    assert decided(pipeline.evaluate(clock.advance(minutes=1))) == {"ladder": 1}
    assert decided(pipeline.evaluate(clock.advance(hours=24))) == {"ladder": 1}

    rows = outbox(engine)
    assert [(s.kind, s.idem_key) for s in rows] == [
        ("alert", "alert/ladder/acme/USD/10000/1/0"),
        ("reminder", "alert/ladder/acme/USD/10000/1/1"),
        ("reminder", "alert/ladder/acme/USD/10000/1/2"),
    ]
    assert rows[1].subject == "Reminder: Acme Ltd: USD balance $90.00 is below $100.00"
    assert "this is reminder 2." in rows[2].text


def test_missed_reminders_are_not_caught_up_after_downtime(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(REMINDING)
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    back = clock.advance(days=3, hours=5)  # the daemon was down for three reminder intervals
    assert decided(pipeline.evaluate(back)) == {"ladder": 1}
    assert decided(pipeline.evaluate(clock.advance(hours=1))) == {}
    assert states(engine, "ladder", "acme")[10_000].next_reminder_at == back + DAY

    clock.now = back + DAY
    assert decided(pipeline.evaluate(clock())) == {"ladder": 1}
    assert [s.idem_key.rsplit("/", 1)[-1] for s in outbox(engine)] == ["0", "1", "2"]


def test_a_rule_without_remind_sends_no_reminders(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    for _ in range(3):
        assert decided(pipeline.evaluate(clock.advance(days=1))) == {}

    assert [s.kind for s in outbox(engine)] == ["alert"]
    assert states(engine, "ladder", "acme")[10_000].next_reminder_at is None


def test_reminders_added_to_a_rule_reach_a_balance_already_low_that_no_longer_moves(
    engine: Engine, make_pipeline: MakePipeline, live_from: LiveFrom, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    reloaded = clock.advance(days=2)
    reload(pipeline, live_from(REMINDING))
    assert decided(pipeline.evaluate(reloaded)) == {}
    assert decided(pipeline.evaluate(clock.advance(hours=23))) == {}
    assert decided(pipeline.evaluate(clock.advance(hours=1))) == {"ladder": 1}

    assert [s.idem_key for s in outbox(engine)] == [
        "alert/ladder/acme/USD/10000/1/0",
        "alert/ladder/acme/USD/10000/1/1",
    ]


def test_a_sweep_does_not_look_again_at_a_low_balance_whose_reminder_is_scheduled(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(REMINDING)
    funded(engine, clock)
    post(engine, "acme", "USD", -29_500, clock())  # every step fired; reminders follow the lowest
    pipeline.evaluate(clock())

    sweep = pipeline.evaluate(clock.advance(hours=1))

    assert (sweep.full, sweep.candidates, decided(sweep)) == (True, 0, {})
    assert {step: st.next_reminder_at for step, st in states(engine, "ladder", "acme").items()} == {
        25_000: None,
        10_000: None,
        1_000: clock() - timedelta(hours=1) + DAY,
    }


# --- disabling and editing rules ----------------------------------------------------------------

DISABLED = LADDER.replace("template:", "enabled: false\n    template:")


def test_a_disabled_rule_sends_nothing_and_keeps_its_state(
    engine: Engine, make_pipeline: MakePipeline, live_from: LiveFrom, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())
    before = all_states(engine)

    reload(pipeline, live_from(DISABLED))
    post(engine, "acme", "USD", -8_500, clock.advance(minutes=5))  # 5.00: below the 10 step
    stats = pipeline.evaluate(clock())

    assert decided(stats) == {}
    assert len(outbox(engine)) == 1
    assert all_states(engine) == before


def test_a_re_enabled_rule_does_not_fire_again_for_a_step_fired_before_disabling(
    engine: Engine, make_pipeline: MakePipeline, live_from: LiveFrom, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())
    reload(pipeline, live_from(DISABLED))
    post(engine, "acme", "USD", -4_000, clock.advance(minutes=5))  # 50.00: still below 100
    pipeline.evaluate(clock())

    reload(pipeline, live_from(LADDER))
    assert decided(pipeline.evaluate(clock.advance(minutes=5))) == {}

    post(engine, "acme", "USD", -4_500, clock.advance(minutes=5))  # 5.00: the next step, same settings
    assert decided(pipeline.evaluate(clock())) == {"ladder": 1}
    assert [(s.step, s.recipients) for s in outbox(engine)] == [
        (10_000, ("acme@owner.example",)),
        (1_000, ("acme@owner.example",)),
    ]
    assert states(engine, "ladder", "acme")[10_000].episode == 1


def test_a_re_enabled_rule_alerts_once_for_a_step_crossed_while_it_was_disabled(
    engine: Engine, make_pipeline: MakePipeline, live_from: LiveFrom, clock: Clock
) -> None:
    pipeline = make_pipeline(DISABLED)
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    assert decided(pipeline.evaluate(clock())) == {}

    reload(pipeline, live_from(LADDER))
    assert decided(pipeline.evaluate(clock.advance(hours=1))) == {"ladder": 1}
    assert decided(pipeline.evaluate(clock.advance(hours=1))) == {}
    assert [s.step for s in outbox(engine)] == [10_000]


def test_a_changed_threshold_under_the_same_rule_id_starts_fresh_state(
    engine: Engine, make_pipeline: MakePipeline, live_from: LiveFrom, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    reload(pipeline, live_from(LADDER.replace("[250, 100, 10]", "[250, 95, 10]")))
    assert decided(pipeline.evaluate(clock.advance(minutes=5))) == {"ladder": 1}

    assert [(s.step, s.idem_key, s.subject) for s in outbox(engine)][1:] == [
        (9_500, "alert/ladder/acme/USD/9500/1/0", "Acme Ltd: USD balance $90.00 is below $95.00")
    ]
    stored = states(engine, "ladder", "acme")
    assert (stored[9_500].status, stored[9_500].episode) == ("fired", 1)
    assert (stored[10_000].status, stored[10_000].episode) == ("fired", 1)  # kept, no longer consulted


def test_editing_one_step_does_not_refire_the_steps_left_unchanged(
    engine: Engine, make_pipeline: MakePipeline, live_from: LiveFrom, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    pipeline.evaluate(clock())

    reload(pipeline, live_from(LADDER.replace("[250, 100, 10]", "[250, 100, 5]")))
    assert decided(pipeline.evaluate(clock.advance(minutes=5))) == {}
    assert len(outbox(engine)) == 1


# --- polls and sweeps ----------------------------------------------------------------------------


def test_a_billing_system_that_bumps_updated_at_is_picked_up_by_the_next_poll(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(sweep_interval="1h")
    account(engine, "acme", name="Acme Ltd")
    set_balance(engine, "acme", "USD", 30_000, clock())
    assert pipeline.evaluate(clock()).full

    set_balance(engine, "acme", "USD", 9_000, clock.advance(minutes=5))
    stats = pipeline.evaluate(clock.advance(seconds=30))

    assert (stats.full, stats.candidates, decided(stats)) == (False, 1, {"ladder": 1})
    assert [s.subject for s in outbox(engine)] == ["Acme Ltd: USD balance $90.00 is below $100.00"]


def test_a_billing_system_that_does_not_bump_updated_at_is_picked_up_by_the_next_sweep(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(sweep_interval="1h")
    funded(engine, clock)
    pipeline.evaluate(clock())
    pipeline.evaluate(clock.advance(minutes=10))

    write_amount_only(engine, "acme", "USD", 9_000)
    poll = pipeline.evaluate(clock.advance(minutes=10))
    assert (poll.full, poll.candidates, decided(poll)) == (False, 0, {})
    assert outbox(engine) == []

    sweep = pipeline.evaluate(clock.advance(minutes=40))
    assert (sweep.full, decided(sweep)) == (True, {"ladder": 1})
    assert [s.step for s in outbox(engine)] == [10_000]


def test_a_poll_looks_back_over_the_overlap_for_changes_committed_late(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(sweep_interval="1h", poll_overlap="2m")
    funded(engine, clock)
    pipeline.evaluate(clock())
    last_poll = clock.advance(minutes=10)
    pipeline.evaluate(last_poll)

    # Stamped a minute before the last poll, committed after it.
    set_balance(engine, "acme", "USD", 9_000, last_poll - timedelta(minutes=1))
    stats = pipeline.evaluate(clock.advance(seconds=30))

    assert (stats.full, decided(stats)) == (False, {"ladder": 1})


def test_a_poll_does_not_look_at_changes_stamped_before_the_overlap(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(sweep_interval="1h", poll_overlap="2m")
    funded(engine, clock)
    pipeline.evaluate(clock())
    last_poll = clock.advance(minutes=10)
    pipeline.evaluate(last_poll)

    set_balance(engine, "acme", "USD", 9_000, last_poll - timedelta(minutes=3))
    stats = pipeline.evaluate(clock.advance(seconds=30))

    assert (stats.full, stats.candidates, decided(stats)) == (False, 0, {})


# --- which accounts a rule watches -----------------------------------------------------------------


def low(
    engine: Engine,
    clock: Clock,
    account_id: str,
    *,
    billing: str = "prepaid",
    labels: dict[str, str] | None = None,
) -> None:
    """An account whose USD balance is 90.00: below the 100 step."""
    account(engine, account_id, billing=billing, labels=labels)
    post(engine, account_id, "USD", 9_000, clock())


def decided_pairs(engine: Engine) -> set[tuple[str, str]]:
    return {(s.rule_id, s.account_id) for s in outbox(engine)}


def test_postpaid_accounts_are_watched_only_by_rules_that_select_them(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        """
alerts:
  - {id: default, accounts: {currency: USD}, below: [100]}
  - {id: postpaid, accounts: {billing: postpaid, currency: USD}, below: [100]}
  - {id: any, accounts: {billing: any, currency: USD}, below: [100]}
  - {id: named, accounts: {ids: [post], currency: USD}, below: [100]}
"""
    )
    low(engine, clock, "pre")
    low(engine, clock, "post", billing="postpaid")

    pipeline.evaluate(clock())

    assert decided_pairs(engine) == {
        ("default", "pre"),
        ("postpaid", "post"),
        ("any", "pre"),
        ("any", "post"),
        ("named", "post"),
    }


def test_label_selectors_match_only_accounts_carrying_every_label(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        """
alerts:
  - {id: gold, accounts: {currency: USD, labels: {tier: [gold, platinum]}}, below: [100]}
  - {id: gold-us, accounts: {currency: USD, labels: {tier: gold, region: us}}, below: [100]}
"""
    )
    low(engine, clock, "golden", labels={"tier": "gold", "region": "eu"})
    low(engine, clock, "platinum", labels={"tier": "platinum"})
    low(engine, clock, "silver", labels={"tier": "silver", "region": "us"})
    low(engine, clock, "plain")

    pipeline.evaluate(clock())

    assert decided_pairs(engine) == {("gold", "golden"), ("gold", "platinum")}


def test_disabled_accounts_are_skipped_until_enabled_again(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    low(engine, clock, "on")
    low(engine, clock, "off")
    set_enabled(engine, "off", False)

    pipeline.evaluate(clock())
    assert decided_pairs(engine) == {("ladder", "on")}
    assert states(engine, "ladder", "off") == {}

    set_enabled(engine, "off", True)
    pipeline.evaluate(clock.advance(minutes=15))  # a sweep
    assert decided_pairs(engine) == {("ladder", "on"), ("ladder", "off")}


def test_each_currency_of_a_per_currency_ladder_is_evaluated_on_its_own_balance(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        """
alerts:
  - id: ladders
    below:
      USD: [250, 100, 10]
      INR: [20000, 8000, 800]
"""
    )
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 50_000, clock())  # $500: below 800 if read as rupees
    post(engine, "acme", "INR", 2_500_000, clock())  # ₹25,000: above every INR step
    assert decided(pipeline.evaluate(clock())) == {}

    post(engine, "acme", "INR", -1_800_000, clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))
    post(engine, "acme", "USD", -41_000, clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))

    assert [(s.currency, s.step, s.subject) for s in outbox(engine)] == [
        ("INR", 800_000, "Acme Ltd: INR balance ₹7,000.00 is below ₹8,000.00"),
        ("USD", 10_000, "Acme Ltd: USD balance $90.00 is below $100.00"),
    ]
    assert set(states(engine, "ladders", "acme", "INR")) == {2_000_000, 800_000}
    assert set(states(engine, "ladders", "acme", "USD")) == {25_000, 10_000}


def test_exhausted_fires_at_zero_and_the_template_says_the_balance_is_used_up(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        """
alerts:
  - {id: exhausted, accounts: {currency: USD}, exhausted: true, rearm: 0%}
"""
    )
    funded(engine, clock, amount=500)
    post(engine, "acme", "USD", -499, clock())
    assert decided(pipeline.evaluate(clock())) == {}

    post(engine, "acme", "USD", -1, clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))

    [sent] = outbox(engine)
    assert (sent.step, sent.idem_key) == (0, "alert/exhausted/acme/USD/0/1/0")
    assert sent.subject == "Acme Ltd: your USD balance is used up ($0.00)"
    assert "Services that draw on this balance stop until credit is added." in sent.text


def test_a_drop_below_zero_past_a_ladder_sends_only_the_exhausted_email(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(LADDER.replace("template:", "exhausted: true\n    template:"))
    funded(engine, clock)
    pipeline.evaluate(clock())

    post(engine, "acme", "USD", -30_300, clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))

    assert [(s.step, s.subject) for s in outbox(engine)] == [
        (0, "Acme Ltd: your USD balance is used up (-$3.00)")
    ]


def test_a_subaccounts_usage_moves_its_parents_balance_and_the_parent_is_alerted(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    account(engine, "acme-sms", name="Acme SMS", parent_id="acme")
    pipeline.evaluate(clock())

    assert post(engine, "acme-sms", "USD", -21_000, clock.advance(minutes=1)) == 9_000
    pipeline.evaluate(clock.advance(minutes=1))

    [sent] = outbox(engine)
    assert (sent.account_id, sent.recipients) == ("acme", ("acme@owner.example",))
    assert sent.subject == "Acme Ltd: USD balance $90.00 is below $100.00"
    assert states(engine, "ladder", "acme-sms") == {}


# --- decided once ---------------------------------------------------------------------------------


def test_evaluating_the_same_moment_twice_decides_each_crossing_once(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())

    first = pipeline.evaluate(clock())
    second = pipeline.evaluate(clock())
    sweep = cycle.poll(engine, pipeline.live, pipeline.settings, clock(), full=True)

    assert (decided(first), decided(second), decided(sweep)) == ({"ladder": 1}, {}, {})
    assert [s.idem_key for s in outbox(engine)] == ["alert/ladder/acme/USD/10000/1/0"]


def test_two_pipelines_on_one_database_decide_each_crossing_once(
    engine: Engine, db_url: str, make_pipeline: MakePipeline, clock: Clock
) -> None:
    one = make_pipeline(REMINDING)
    other_engine = make_engine(db_url)
    try:
        other = build_pipeline(other_engine, one.settings, one.live)
        funded(engine, clock)
        post(engine, "acme", "USD", -21_000, clock())

        assert decided(one.evaluate(clock())) == {"ladder": 1}
        assert decided(other.evaluate(clock())) == {}
        clock.advance(days=1)
        assert decided(other.evaluate(clock())) == {"ladder": 1}
        assert decided(one.evaluate(clock())) == {}
    finally:
        other_engine.dispose()

    assert [s.kind for s in outbox(engine)] == ["alert", "reminder"]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_instances_writing_the_first_poll_watermark_at_once_both_finish(
    engine: Engine, db_url: str, make_pipeline: MakePipeline, clock: Clock
) -> None:
    # SQLite takes its write lock before reading the watermark; PostgreSQL lets both read "none".
    one = make_pipeline()
    other_engine = make_engine(db_url)
    other = build_pipeline(other_engine, one.settings, one.live)
    funded(engine, clock)
    post(engine, "acme", "USD", -21_000, clock())
    meanwhile: list[CycleStats] = []

    @event.listens_for(other_engine, "before_cursor_execute")
    def one_writes_its_watermark_first(*args: object) -> None:
        statement = str(args[2])
        watermark = cycle.WATERMARK in str(args[3])
        if statement.startswith("INSERT INTO balancewatch_meta") and watermark and not meanwhile:
            meanwhile.append(one.evaluate(clock()))

    try:
        stats = other.evaluate(clock())
    finally:
        other_engine.dispose()

    assert [decided(m) for m in meanwhile] == [{}]
    assert decided(stats) == {"ladder": 1}
    assert len(outbox(engine)) == 1
    with Session(engine) as session:
        assert get_meta(session, cycle.WATERMARK) == clock().isoformat()


TWO_RULES = """
alerts:
  - {id: first, accounts: {currency: USD}, below: [250, 100, 10], remind: 1h}
  - {id: second, accounts: {currency: USD}, below: [100], exhausted: true}
"""


def test_two_pipelines_running_at_once_decide_each_crossing_once(
    engine: Engine, db_url: str, make_settings: MakeSettings, live_from: LiveFrom, clock: Clock
) -> None:
    settings, live = make_settings(db_url), live_from(TWO_RULES)
    accounts = [f"acct-{i:03}" for i in range(150)]
    for i, account_id in enumerate(accounts):
        funded(engine, clock, account_id, amount=-100 if i % 3 == 0 else 9_000, name=account_id)

    def run_both(now: datetime, *, full: bool) -> list[CycleStats]:
        """Two pipelines, each with its own engine, evaluating ``now`` at the same time."""
        engines = [make_engine(db_url) for _ in range(2)]
        pipelines = [build_pipeline(e, settings, live) for e in engines]
        for p in pipelines:
            p.last_sweep = None if full else now
        start = threading.Barrier(2, timeout=30)
        results: list[CycleStats] = []
        errors: list[BaseException] = []

        def work(p: Pipeline) -> None:
            try:
                start.wait()
                results.append(p.evaluate(now))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(p,)) for p in pipelines]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not any(t.is_alive() for t in threads), "an evaluation did not finish in 120 s"
        finally:
            for e in engines:
                e.dispose()
        assert errors == []
        return results

    alerts = run_both(clock(), full=True)  # the first evaluation ever, on both at once
    reminders = run_both(clock.advance(hours=1), full=False)

    rows = outbox(engine)
    assert Counter(s.idem_key for s in rows).most_common(1)[0][1] == 1
    # `first` alerts every account and reminds each once; `second` alerts every account,
    # for its exhausted step where the balance is below zero.
    assert Counter((s.rule_id, s.kind) for s in rows) == {
        ("first", "alert"): 150,
        ("second", "alert"): 150,
        ("first", "reminder"): 150,
    }
    assert Counter(s.step for s in rows if s.rule_id == "second") == {10_000: 100, 0: 50}
    assert sum(s.notifications for s in alerts) == 300
    assert sum(s.notifications for s in reminders) == 150


# --- a template failing for one account ----------------------------------------------------------


@pytest.fixture
def tiered_live(tmp_path: Path, rules_dir: Path) -> LiveSet:
    """The ladder with a template that needs the account's ``tier`` label: it fails without one."""
    templates = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    (templates / "tiered").mkdir()
    (templates / "tiered" / "subject.txt").write_text(
        "{{ account.labels.tier | upper }}: {{ account.name }} below {{ alert.step | money }}"
    )
    (templates / "tiered" / "body.txt").write_text("Your {{ account.labels.tier }} plan is low.\n")
    write_rules(rules_dir, LADDER.replace("template: low-balance", "template: tiered"))
    return load_set(rules_dir, templates)


def queued_rows(engine: Engine) -> list[tuple[str, str, str | None]]:
    """(account, status, last error) of every outbox row, in the order decided."""
    with engine.connect() as conn:
        query = select(OUTBOX.c.account_id, OUTBOX.c.status, OUTBOX.c.last_error).order_by(OUTBOX.c.id)
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def fix_tiered(pipeline: Pipeline, tiered_live: LiveSet, rules_dir: Path) -> None:
    """The template made robust (a tier when the account has none) and the set reloaded."""
    (tiered_live.templates.directory / "tiered" / "subject.txt").write_text(
        "{{ account.labels.tier | default('standard') | upper }}: {{ account.name }} below "
        "{{ alert.step | money }}"
    )
    (tiered_live.templates.directory / "tiered" / "body.txt").write_text(
        "Your {{ account.labels.tier | default('standard') }} plan is low.\n"
    )
    pipeline.swap(load_set(rules_dir, tiered_live.templates.directory))


def test_a_template_failing_for_one_account_keeps_its_decision_queued_until_the_template_is_fixed(
    engine: Engine,
    db_url: str,
    make_settings: MakeSettings,
    tiered_live: LiveSet,
    rules_dir: Path,
    clock: Clock,
) -> None:
    pipeline = build_pipeline(engine, make_settings(db_url), tiered_live)
    funded(engine, clock, "gold", name="Gold Co", labels={"tier": "gold"})
    funded(engine, clock, "plain", name="Plain Co")
    pipeline.evaluate(clock())

    post(engine, "gold", "USD", -21_000, clock.advance(minutes=1))
    post(engine, "plain", "USD", -21_000, clock())
    failed = pipeline.evaluate(clock())

    # Both are decided, once: the decision stands whatever its template does.
    assert decided(failed) == {"ladder": 2}
    [problem] = failed.render_errors
    assert "tiered/subject.txt:1" in problem
    assert states(engine, "ladder", "plain")[10_000].episode == 1
    [(gold, sent_status, _), (plain, status, error)] = queued_rows(engine)
    assert (gold, sent_status, plain, status) == ("gold", "pending", "plain", "queued")
    assert error is not None and error.startswith("not rendered yet: ") and "tiered/subject.txt:1" in error
    assert [s.subject for s in outbox(engine, "gold")] == ["GOLD: Gold Co below $100.00"]

    # Before its retry is due (about 30 s on) it is left alone; once the template is fixed and
    # reloaded it is rendered at once, and nothing is decided again.
    assert pipeline.evaluate(clock.advance(seconds=5)).render_errors == []
    fix_tiered(pipeline, tiered_live, rules_dir)
    retried = pipeline.evaluate(clock.advance(seconds=1))

    assert (decided(retried), retried.render_errors) == ({}, [])
    assert [s.subject for s in outbox(engine, "plain")] == ["STANDARD: Plain Co below $100.00"]
    assert queued_rows(engine)[1] == ("plain", "pending", None)


def test_a_message_that_never_renders_is_parked_and_outbox_retry_queues_it_again(
    engine: Engine,
    db_url: str,
    make_settings: MakeSettings,
    tiered_live: LiveSet,
    rules_dir: Path,
    clock: Clock,
) -> None:
    pipeline = build_pipeline(engine, make_settings(db_url), tiered_live)
    funded(engine, clock, "plain", name="Plain Co")
    post(engine, "plain", "USD", -21_000, clock())
    assert len(pipeline.evaluate(clock()).render_errors) == 1

    errors = 1
    for _hour in range(60):  # delivery.retry: 30 s doubling to an hour; given up after two days
        errors += len(pipeline.evaluate(clock.advance(hours=1)).render_errors)
    [(_, status, error)] = queued_rows(engine)

    assert status == "parked"
    assert error is not None and error.startswith(f"not rendered (gave up after {errors} attempts): ")
    assert 8 <= errors <= 60

    fix_tiered(pipeline, tiered_live, rules_dir)
    with engine.begin() as conn:
        [requeued], left = requeue_refs(conn, ["1"], clock())
    assert (requeued.recipients, left) == (("plain@owner.example",), [])
    assert queued_rows(engine)[0][1] == "queued"
    assert pipeline.evaluate(clock.advance(seconds=1)).render_errors == []
    assert [(s.subject, s.step) for s in outbox(engine)] == [("STANDARD: Plain Co below $100.00", 10_000)]
    assert queued_rows(engine)[0][1] == "pending"


def test_a_balance_whose_state_was_deleted_by_hand_is_skipped_and_the_rest_of_its_chunk_decided(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    funded(engine, clock, "acme")
    funded(engine, clock, "globex", name="Globex")
    post(engine, "acme", "USD", -21_000, clock.advance(minutes=1))
    assert decided(make_pipeline().evaluate(clock.advance(minutes=1))) == {"ladder": 1}
    with engine.begin() as conn:
        conn.execute(delete(STATE).where(STATE.c.account_id == "acme"))
    post(engine, "globex", "USD", -21_000, clock.advance(minutes=1))

    sweep = make_pipeline().evaluate(clock.advance(minutes=1))  # a new pipeline starts with a sweep

    assert sweep.full
    assert decided(sweep) == {"ladder": 1}
    assert sweep.skipped == 1
    assert [s.account_id for s in outbox(engine)] == ["acme", "globex"]


def test_a_stop_during_a_sweep_ends_it_between_chunks_without_moving_the_watermark(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cycle, "CHUNK", 1)
    pipeline = make_pipeline()
    for name in ("acme", "globex", "initech"):
        funded(engine, clock, name, name=name.capitalize())
        post(engine, name, "USD", -21_000, clock())

    @event.listens_for(engine, "after_cursor_execute")
    def stop_after_the_first_decision(*args: object) -> None:
        if str(args[2]).startswith("INSERT INTO outbox"):
            pipeline.stopping.set()

    interrupted = pipeline.evaluate(clock.advance(minutes=1))
    event.remove(engine, "after_cursor_execute", stop_after_the_first_decision)
    with Session(engine) as session:
        watermark = get_meta(session, cycle.WATERMARK)
    pipeline.stopping.clear()
    resumed = pipeline.evaluate(clock.advance(minutes=1))

    assert interrupted.interrupted and decided(interrupted) == {"ladder": 1}
    assert watermark is None
    assert resumed.full and decided(resumed) == {"ladder": 2}
    assert sorted(s.account_id for s in outbox(engine)) == ["acme", "globex", "initech"]


INHIBITED = """
alerts:
  - {id: ladder, accounts: {currency: USD}, below: [100, 10], inhibited_by: [zero]}
  - {id: zero, exhausted: true, rearm: 0%}
"""


def test_a_rule_silenced_by_another_fired_one_moves_its_state_without_an_email(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(INHIBITED)
    funded(engine, clock, amount=5_000)
    assert decided(pipeline.evaluate(clock.advance(minutes=1))) == {"ladder": 1}
    post(engine, "acme", "USD", -5_000, clock.advance(minutes=1))

    stats = pipeline.evaluate(clock.advance(minutes=1))

    assert decided(stats) == {"zero": 1}
    assert stats.inhibited == {"ladder": 1}
    assert states(engine, "ladder", "acme")[1_000].status == "fired"
    assert [s.rule_id for s in outbox(engine)] == ["ladder", "zero"]
