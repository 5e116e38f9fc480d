"""Step states written and read back by key, on both databases: PostgreSQL reads and writes a
chunk's states through arrays (one statement each), SQLite through lists of values."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from balancewatch.evaluate.decide import StepState
from balancewatch.evaluate.load import load_states, write_states

NOW = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)


def test_states_of_mixed_currencies_come_back_for_exactly_the_keys_asked(engine: Engine) -> None:
    fired = StepState(25_000, "fired", 2, 1, NOW, NOW, None, None)
    armed = StepState(1_000, "armed", 1, 0, None, None, NOW, NOW)
    with engine.begin() as conn:
        write_states(conn, "ladder", [(("acme", "USD"), fired), (("acme", "EUR"), armed)])
        write_states(conn, "ladder", [(("other", "USD"), fired)])
        write_states(conn, "another-rule", [(("acme", "USD"), armed)])

    with engine.connect() as conn:
        states = load_states(conn, "ladder", [("acme", "USD"), ("acme", "EUR"), ("nobody", "USD")])

    assert states == {("acme", "USD"): {25_000: fired}, ("acme", "EUR"): {1_000: armed}}


def test_a_state_given_twice_in_one_write_keeps_the_last(engine: Engine) -> None:
    first = StepState(10_000, "fired", 1, 0, NOW, NOW, None, None)
    then = StepState(10_000, "armed", 1, 0, NOW, NOW, None, NOW)
    with engine.begin() as conn:
        write_states(conn, "ladder", [(("acme", "USD"), first), (("acme", "USD"), then)])

    with engine.connect() as conn:
        assert load_states(conn, "ladder", [("acme", "USD")]) == {("acme", "USD"): {10_000: then}}


def test_a_write_updates_every_column_of_a_stored_state(engine: Engine) -> None:
    with engine.begin() as conn:
        write_states(conn, "ladder", [(("acme", "USD"), StepState(25_000))])
        changed = StepState(25_000, "fired", 3, 2, NOW, NOW, NOW, NOW)
        write_states(conn, "ladder", [(("acme", "USD"), changed)])

    with engine.connect() as conn:
        assert load_states(conn, "ladder", [("acme", "USD")]) == {("acme", "USD"): {25_000: changed}}
