"""A run asked for while the job runs is kept: the job goes round once more, not at its next tick."""

from __future__ import annotations

import threading

import pytest

from balancewatch.runtime.rerun import Reruns

WAIT = 10.0  # bounded waits: a broken rerun fails, it does not hang


Started = tuple[threading.Thread, list[int], threading.Event, threading.Event]


def _blocking_job(reruns: Reruns, stopping: threading.Event) -> Started:
    """A job whose first round waits for ``release``; ``rounds`` counts the rounds run."""
    rounds: list[int] = []
    inside, release = threading.Event(), threading.Event()

    def work() -> None:
        rounds.append(len(rounds) + 1)
        if len(rounds) == 1:
            inside.set()
            assert release.wait(WAIT)

    thread = threading.Thread(target=reruns.run, args=("deliver", work, stopping))
    thread.start()
    assert inside.wait(WAIT)
    return thread, rounds, inside, release


def test_a_request_while_the_job_runs_makes_it_run_once_more() -> None:
    reruns, stopping = Reruns(), threading.Event()
    thread, rounds, _, release = _blocking_job(reruns, stopping)
    assert reruns.request("deliver") is True
    assert reruns.request("deliver") is True  # folded into the same extra round
    release.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert rounds == [1, 2]
    assert reruns.request("deliver") is False  # ended: the caller schedules it


def test_a_job_that_is_not_running_is_left_to_the_scheduler() -> None:
    reruns = Reruns()
    assert reruns.request("deliver") is False
    ran: list[str] = []
    reruns.run("deliver", lambda: ran.append("once"), threading.Event())
    assert ran == ["once"]  # the earlier request was not remembered for a job that was idle


def test_no_extra_round_once_stopping() -> None:
    reruns, stopping = Reruns(), threading.Event()
    thread, rounds, _, release = _blocking_job(reruns, stopping)
    assert reruns.request("deliver") is True
    stopping.set()
    release.set()
    thread.join(WAIT)
    assert rounds == [1]


def test_other_jobs_are_not_affected() -> None:
    reruns, stopping = Reruns(), threading.Event()
    thread, rounds, _, release = _blocking_job(reruns, stopping)
    assert reruns.request("topup") is False
    release.set()
    thread.join(WAIT)
    assert rounds == [1]


def test_a_failing_round_ends_the_runs_and_forgets_the_request() -> None:
    reruns = Reruns()
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        assert reruns.request("deliver") is True
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        reruns.run("deliver", work, threading.Event())
    assert calls == [1]
    assert reruns.request("deliver") is False
