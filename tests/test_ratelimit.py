"""A channel's rate limit: evenly spaced sends, no limit at 0, and a shutdown ends a wait.

A fake clock and a fake sleep that moves it: no test sleeps for real to synchronise.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from balancewatch.deliver.ratelimit import RateLimit


class FakeTime:
    """A clock and a sleep that advances it, recording each sleep asked for."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: threading.Event | None = None  # set this event during the next sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float, stopping: threading.Event | None) -> bool:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep.set()
            return True
        self.now += seconds
        return False


def limit(rate: str, fake: FakeTime) -> RateLimit:
    return RateLimit(Decimal(rate), clock=fake.clock, sleep=fake.sleep)


def test_five_waits_at_two_a_second_take_two_seconds() -> None:
    fake = FakeTime()
    limiter = limit("2", fake)
    passed = []
    for _ in range(5):
        assert limiter.wait() is True
        passed.append(fake.now - 1000.0)
    assert passed == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert fake.sleeps == [0.5] * 4


def test_the_first_passes_at_once_and_time_already_gone_is_not_waited_again() -> None:
    fake = FakeTime()
    limiter = limit("0.5", fake)  # one every 2 s
    assert limiter.wait() and fake.sleeps == []
    fake.now += 5  # the next send comes late: no wait
    assert limiter.wait() and fake.sleeps == []
    fake.now += 0.5
    assert limiter.wait()
    assert fake.sleeps == [pytest.approx(1.5)]


def test_no_burst_after_a_quiet_spell() -> None:
    fake = FakeTime()
    limiter = limit("10", fake)
    limiter.wait()
    fake.now += 60
    for _ in range(3):
        limiter.wait()
    assert fake.sleeps == [pytest.approx(0.1)] * 2


def test_rate_0_never_sleeps() -> None:
    fake = FakeTime()
    limiter = limit("0", fake)
    assert all(limiter.wait() for _ in range(1000))
    assert fake.sleeps == []


def test_a_set_stopping_ends_a_wait() -> None:
    fake = FakeTime()
    limiter = limit("1", fake)
    stopping = threading.Event()
    assert limiter.wait(stopping) is True
    fake.on_sleep = stopping  # the shutdown comes while the next one waits
    assert limiter.wait(stopping) is False
    assert fake.sleeps == [1.0]


def test_stopping_set_before_the_wait_returns_at_once() -> None:
    fake = FakeTime()
    stopping = threading.Event()
    stopping.set()
    assert limit("1", fake).wait(stopping) is False
    assert limit("0", fake).wait(stopping) is False
    assert fake.sleeps == []


def test_a_sleep_that_ends_early_is_resumed_for_what_is_left() -> None:
    fake = FakeTime()
    asked: list[float] = []

    def short_sleep(seconds: float, stopping: threading.Event | None) -> bool:
        asked.append(seconds)
        fake.now += 0.25  # woken early, as by a signal
        return False

    limiter = RateLimit(Decimal(1), clock=fake.clock, sleep=short_sleep)
    limiter.wait()
    assert limiter.wait() is True
    assert asked == [1.0, 0.75, 0.5, 0.25]


def test_callers_on_several_threads_each_get_a_slot_of_their_own() -> None:
    fake = FakeTime()  # the clock stands still: only the slots reserved are compared
    lock = threading.Lock()
    asked: list[float] = []

    def sleep(seconds: float, stopping: threading.Event | None) -> bool:
        with lock:
            asked.append(seconds)
        return True  # as if stopping: the caller leaves, its slot stays taken

    limiter = RateLimit(Decimal(4), clock=fake.clock, sleep=sleep)
    outcomes: list[bool] = []
    callers = [threading.Thread(target=lambda: outcomes.append(limiter.wait())) for _ in range(5)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=10)
    assert sorted(outcomes) == [False] * 4 + [True]
    assert sorted(asked) == [0.25, 0.5, 0.75, 1.0]


def test_the_real_sleep_ends_when_stopping_is_set_from_another_thread() -> None:
    limiter = RateLimit(Decimal("0.001"))  # one every 1000 s
    stopping = threading.Event()
    assert limiter.wait(stopping)
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(limiter.wait(stopping)))
    waiter.start()
    stopping.set()
    waiter.join(timeout=10)
    assert outcome == [False]


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="0 \\(no limit\\) or more"):
        RateLimit(Decimal(-1))
