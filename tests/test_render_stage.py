"""The render stage (render/stage.py), on SQLite and PostgreSQL: a decision commits its rows
queued with their template context, rendering happens after, each row once, and delivery never
sees a row before its message is written."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from balancewatch import outbox
from balancewatch.alerts import cycle
from balancewatch.config import Settings
from balancewatch.core import procinfo
from balancewatch.liveset import LiveSet
from balancewatch.outbox import OUTBOX_TABLE as OUTBOX
from balancewatch.render.packed import unpack
from balancewatch.render.stage import PARALLEL_AFTER, Stage, render_queued
from balancewatch.render.workers import RenderWorkers
from balancewatch.runtime.presence import take_back_previous_claims
from balancewatch.runtime.service import build_pipeline
from balancewatch.store import status as instance_status
from tests.conftest import Clock
from tests.helpers import account, post
from tests.helpers import outbox as outbox_rows
from tests.test_claims_liveness import finished_process

LADDER = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    template: low-balance
"""
LEASE = timedelta(minutes=5)


QueueAlerts = Callable[[int], tuple[Settings, LiveSet]]


@pytest.fixture
def queue_alerts(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    clock: Clock,
) -> QueueAlerts:
    """``count`` accounts below 100.00, each decided (one alert each) and queued, not rendered."""

    def queue(count: int) -> tuple[Settings, LiveSet]:
        settings, live = make_settings(db_url), live_from(LADDER)
        for n in range(count):
            account(engine, f"acct-{n:02}", name=f"Account {n}")
            post(engine, f"acct-{n:02}", "USD", 9_000, clock())
        cycle.poll(engine, live, settings, clock(), full=True)
        return settings, live

    return queue


@pytest.fixture
def decided(queue_alerts: QueueAlerts) -> tuple[Settings, LiveSet]:
    """Five alerts queued."""
    return queue_alerts(5)


@pytest.fixture
def backlog(queue_alerts: QueueAlerts) -> tuple[Settings, LiveSet]:
    """Forty alerts queued."""
    return queue_alerts(40)


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        query = select(OUTBOX.c.id, OUTBOX.c.status, OUTBOX.c.subject, OUTBOX.c.context, OUTBOX.c.last_error)
        return list(conn.execute(query.order_by(OUTBOX.c.id)))


def test_a_decision_queues_its_rows_and_the_stage_writes_the_messages_it_would_have_rendered(
    engine: Engine, decided: tuple[Settings, LiveSet], clock: Clock
) -> None:
    settings, live = decided
    queued = rows(engine)
    assert [(r.status, r.subject) for r in queued] == [("queued", "")] * 5
    expected = [live.templates.render("low-balance", unpack(r.context)[0]) for r in queued]
    with engine.begin() as conn:  # delivery does not see them
        assert outbox.claim(conn, "courier", clock(), 10, LEASE) == []

    stats = build_pipeline(engine, settings, live).render(clock())

    assert (stats.rendered, stats.errors) == (5, [])
    assert [(r.status, r.context, r.last_error) for r in rows(engine)] == [("pending", None, None)] * 5
    sent = outbox_rows(engine)
    assert [(s.subject, s.text) for s in sent] == [(e.subject, e.text) for e in expected]
    assert (
        sent[0].subject == "Account 0: USD balance $90.00 is below $100.00"
    )  # the shipped template, really rendered
    with engine.begin() as conn:
        claimed = outbox.claim(conn, "courier", clock(), 10, LEASE)
    assert [c.html for c in claimed] == [e.html for e in expected]


def test_the_decision_never_renders(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, live = make_settings(db_url), live_from(LADDER)
    account(engine, "acme", name="Acme")
    post(engine, "acme", "USD", 9_000, clock())

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("rendered inside a decision")

    monkeypatch.setattr(live.templates, "render", refuse)
    stats = cycle.poll(engine, live, settings, clock(), full=True)

    assert (stats.notifications, stats.render_errors) == (1, [])
    assert [r.status for r in rows(engine)] == ["queued"]


def test_two_instances_take_different_rows_and_a_lost_lease_writes_nothing(
    engine: Engine, decided: tuple[Settings, LiveSet], clock: Clock
) -> None:
    _settings, _live = decided
    with engine.begin() as conn:
        first = outbox.take_queued(conn, "one", clock(), 3, LEASE)
    with engine.begin() as conn:
        second = outbox.take_queued(conn, "two", clock(), 10, LEASE)
    assert sorted(r.id for r in first + second) == [r.id for r in rows(engine)]
    assert not {r.id for r in first} & {r.id for r in second}

    with engine.begin() as conn:
        done = [outbox.Written(r.id, "two", "two", None) for r in second]
        assert outbox.write_rendered(conn, "two", clock(), done) == len(second) == 2

    # "one" stalls past its lease: "three" takes its rows and renders them; "one" writes nothing.
    later = clock.advance(minutes=6)
    with engine.begin() as conn:
        third = outbox.take_queued(conn, "three", later, 10, LEASE)
    assert [r.id for r in third] == [r.id for r in first]
    written = [outbox.Written(r.id, "late", "late", None) for r in first]
    with engine.begin() as conn:
        assert outbox.write_rendered(conn, "one", later, written) == 0
        assert outbox.note_not_rendered(conn, "one", [outbox.NotRendered(first[0].id, "x", None)]) == 0
    with engine.begin() as conn:
        assert outbox.write_rendered(conn, "three", later, written) == 3
    assert sorted(r.subject for r in rows(engine)) == ["late"] * 3 + ["two"] * 2


def test_a_stored_context_that_cannot_be_read_is_parked_at_once(
    engine: Engine, decided: tuple[Settings, LiveSet], clock: Clock
) -> None:
    settings, live = decided
    broken = rows(engine)[0].id
    with engine.begin() as conn:
        conn.execute(update(OUTBOX).where(OUTBOX.c.id == broken).values(context='{"v": 2}'))

    stats = build_pipeline(engine, settings, live).render(clock())

    assert (stats.rendered, stats.parked, stats.retrying) == (4, 1, 0)
    parked = rows(engine)[0]
    assert (parked.status, parked.context) == ("parked", '{"v": 2}')
    assert parked.last_error == (
        "not rendered (gave up after 1 attempt): the stored template context has version 2; "
        "this release reads 1"
    )


@pytest.mark.parametrize("gone", ["stopped", "killed"])
def test_the_rows_of_an_instance_that_stopped_or_died_mid_batch_are_rendered_at_once(
    engine: Engine, decided: tuple[Settings, LiveSet], clock: Clock, gone: str
) -> None:
    settings, live = decided
    now = clock()
    with engine.begin() as conn:
        held = outbox.take_queued(conn, "alpha", now, 10, LEASE)
        alive = {"started_at": now, "heartbeat_at": now, "process": procinfo.identity()}
        if gone == "stopped":
            alive["stopped_at"] = now
        instance_status.publish(conn, "alpha", alive)
    assert len(held) == 5
    if gone == "killed":  # alpha's process is alive: its lease is respected
        assert build_pipeline(engine, settings, live).render(clock.advance(seconds=1)).rendered == 0
        with engine.begin() as conn:
            instance_status.publish(conn, "alpha", {"process": finished_process()})

    stats = build_pipeline(engine, settings, live).render(clock.advance(seconds=1))

    assert (stats.rendered, [r.status for r in rows(engine)]) == (5, ["pending"] * 5)


def test_rows_a_pass_cut_short_left_held_are_rendered_by_the_next_pass_at_once(
    engine: Engine, decided: tuple[Settings, LiveSet], clock: Clock
) -> None:
    settings, live = decided
    pipeline = build_pipeline(engine, settings, live)
    with engine.begin() as conn:  # taken, then the database went away before they were written
        assert len(outbox.take_queued(conn, pipeline.worker, clock(), 10, LEASE)) == 5

    assert pipeline.render(clock.advance(seconds=1)).rendered == 5


def test_a_restart_under_a_fixed_name_frees_the_rows_its_earlier_run_was_rendering(
    engine: Engine, decided: tuple[Settings, LiveSet], clock: Clock
) -> None:
    settings, live = decided
    worker = build_pipeline(engine, settings, live).worker
    with engine.begin() as conn:
        assert len(outbox.take_queued(conn, worker, clock(), 10, LEASE)) == 5

    take_back_previous_claims(engine, worker, clock())

    with engine.begin() as conn:
        assert len(outbox.take_queued(conn, "another", clock(), 10, LEASE)) == 5


def test_a_large_backlog_is_rendered_by_worker_processes_into_the_same_messages(
    engine: Engine, backlog: tuple[Settings, LiveSet], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, live = backlog
    queued = rows(engine)
    expected = {r.id: live.templates.render("low-balance", unpack(r.context)[0]) for r in queued}
    with engine.begin() as conn:
        conn.execute(update(OUTBOX).where(OUTBOX.c.id == queued[-1].id).values(context="not json"))
    handed: list[int] = []
    submit = RenderWorkers.submit
    monkeypatch.setattr(
        RenderWorkers, "submit", lambda self, part: handed.append(len(part)) or submit(self, part)
    )
    stage = Stage(engine, live.templates, "renderer", LEASE, settings.delivery.retry)

    stats = render_queued(stage, clock(), batch=5, processes=2)

    assert (stats.rendered, stats.parked) == (39, 1)
    assert sum(handed) == 40 - 5 * PARALLEL_AFTER  # the first batches in this process, then the workers'
    done = {r.id: r for r in rows(engine)}
    with engine.connect() as conn:
        html = dict(conn.execute(select(OUTBOX.c.id, OUTBOX.c.html)).all())  # type: ignore[arg-type]
    broken = queued[-1].id
    assert done.pop(broken).status == "parked"
    assert {i: (r.status, r.subject, html[i]) for i, r in done.items()} == {
        i: ("pending", e.subject, e.html) for i, e in expected.items() if i != broken
    }


def test_a_worker_that_dies_leaves_its_rows_to_be_rendered_in_the_stage_s_process(
    engine: Engine, backlog: tuple[Settings, LiveSet]
) -> None:
    _settings, live = backlog
    with engine.begin() as conn:
        taken = outbox.take_queued(conn, "renderer", datetime.now(UTC), 40, LEASE)
    workers = RenderWorkers(live.templates, 2)
    try:
        first = workers.collect(workers.submit(taken[:20]))
        pool = workers._pool
        assert pool is not None
        for process in list(pool._processes.values()):  # killed between two batches (OOM, say)
            os.kill(process.pid, signal.SIGKILL)
            process.join(10)
        rest = workers.collect(workers.submit(taken[20:]))
    finally:
        workers.close()

    assert workers.broken
    written = [o.id for o in first + rest if isinstance(o, outbox.Written)]
    assert sorted(written) == sorted(r.id for r in taken)
