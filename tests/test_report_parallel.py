"""A large fire built and rendered in worker processes (``reports.parallel``): the same reports as
in one process, each sent once when two instances run it at once, and nothing lost when a worker
dies or the template is refused.

Every test that touches storage runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from balancewatch.config import Settings
from balancewatch.core.problems import Problem
from balancewatch.liveset import LiveSet
from balancewatch.reports import parallel, runner
from balancewatch.reports.sending import ReportStats
from balancewatch.store.db import make_engine
from tests.reportkit import REPORT_TEMPLATES, account, cursor, messages, runs, usage, write_reports

FIRE = datetime(2026, 3, 14, 8, 0, tzinfo=UTC)
DAILY = """
reports:
  - id: daily-usage
    schedule: daily at 08:00
    timezone: UTC
    contents: usage
    attach_csv: true
    empty: send
"""
NAMES = [f"acct-{i:03d}" for i in range(40)]


@pytest.fixture(autouse=True)
def small_batches_go_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 5)


def setup(
    db_url: str, make_settings: Callable[..., Settings], rules_dir: Path
) -> tuple[LiveSet, Settings, Any]:
    live = write_reports(rules_dir, DAILY)
    settings = make_settings(db_url, templates_dir=str(REPORT_TEMPLATES), reports__batch_size="10")
    engine = make_engine(db_url)
    for i, name in enumerate(NAMES):
        account(engine, name)
        if i % 3:
            usage(engine, name, FIRE - timedelta(hours=12), amount=100 + i)
    runner.run_due(engine, live, settings, FIRE - timedelta(minutes=10), "start", processes=0)
    return live, settings, engine


def test_workers_build_the_reports_one_process_would(
    db_url: str, make_settings: Callable[..., Settings], rules_dir: Path
) -> None:
    live, settings, engine = setup(db_url, make_settings, rules_dir)
    stats = runner.run_due(engine, live, settings, FIRE, "one", processes=2)
    assert stats.sent == {"daily-usage": 40} and stats.failed == {}
    assert stats.seconds["build"] > 0 and stats.seconds["render"] > 0  # measured in the workers
    sent = messages(engine)
    assert [m.account_id for m in sent] == NAMES  # recorded in account order
    report = live.reports[0]
    for m in sent[:: len(sent) // 4]:
        (alone,) = runner.would_send(engine, live, settings, report, FIRE, m.account_id)
        assert alone.message is not None
        assert (m.subject, m.text, m.html) == (alone.message.subject, alone.message.text, alone.message.html)
        assert m.attachments == [asdict(a) for a in alone.message.attachments] != []
    assert {r.status for r in runs(engine)} == {"sent"}
    assert cursor(engine, "daily-usage", "UTC").pending_fire is None
    engine.dispose()


def test_two_instances_with_workers_split_a_fire_and_send_each_report_once(
    db_url: str, make_settings: Callable[..., Settings], rules_dir: Path
) -> None:
    live, settings, engine = setup(db_url, make_settings, rules_dir)
    barrier = threading.Barrier(2)
    results: dict[str, ReportStats] = {}
    errors: list[BaseException] = []

    def serve(worker: str) -> None:
        own = make_engine(db_url)
        try:
            barrier.wait(timeout=10)
            results[worker] = runner.run_due(own, live, settings, FIRE, worker, processes=2)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=serve, args=(w,)) for w in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert sorted(m.account_id for m in messages(engine)) == NAMES  # each once, none missing
    assert sum(s.sent["daily-usage"] for s in results.values()) == 40
    by = Counter(r.claimed_by for r in runs(engine))
    assert sum(by.values()) == 40 and {r.status for r in runs(engine)} == {"sent"}
    assert set(by) <= {"one", "two"}
    engine.dispose()


def test_a_batch_whose_worker_died_is_built_in_this_process(
    db_url: str, make_settings: Callable[..., Settings], rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, settings, engine = setup(db_url, make_settings, rules_dir)

    def broken(self: parallel.ReportWorkers, *args: Any) -> Future[parallel.Chunk]:
        future: Future[parallel.Chunk] = Future()
        future.set_exception(BrokenProcessPool("a worker was killed"))
        return future

    monkeypatch.setattr(parallel.ReportWorkers, "submit", broken)
    stats = runner.run_due(engine, live, settings, FIRE, "one", processes=2)
    assert stats.sent == {"daily-usage": 40}
    assert sorted(m.account_id for m in messages(engine)) == NAMES
    engine.dispose()


def test_a_template_refused_in_a_worker_leaves_its_batch_for_the_next_run(
    db_url: str, make_settings: Callable[..., Settings], rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live, settings, engine = setup(db_url, make_settings, rules_dir)
    refused = Problem("daily-usage/body.txt", 3, "", "rendering took longer than 2s")

    def suspended(self: parallel.ReportWorkers, *args: Any) -> Future[parallel.Chunk]:
        future: Future[parallel.Chunk] = Future()
        future.set_result(parallel.Chunk([], refused))
        return future

    with monkeypatch.context() as m:
        m.setattr(parallel.ReportWorkers, "submit", suspended)
        stats = runner.run_due(engine, live, settings, FIRE, "one", processes=2)
    assert stats.sent == {} and messages(engine) == []
    assert {r.status for r in runs(engine)} == {"claimed"}  # leases ended: anyone takes them over
    assert cursor(engine, "daily-usage", "UTC").pending_fire == FIRE
    later = runner.run_due(engine, live, settings, FIRE + timedelta(minutes=1), "two", processes=2)
    assert later.sent == {"daily-usage": 40}
    assert sorted(m.account_id for m in messages(engine)) == NAMES
    assert {(r.status, r.claimed_by) for r in runs(engine)} == {("sent", "two")}
    engine.dispose()
