"""Claims tied to liveness: what an instance that stopped or died was sending is taken over by
the next instance to look, at once, not after the lease; a live instance's claims are never taken.

Unit-level on both backends with the test's clock; then real daemon processes killed with SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.core import procinfo
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Daemon, Pipeline, build_pipeline
from balancewatch.store import status as instance_status
from balancewatch.store.status import STALE_AFTER
from balancewatch.store.tables import ReportRun
from tests.conftest import Clock
from tests.smtpserver import SmtpServer
from tests.test_daemon import DEADLINE, Cli, add_funded_account, cli, wait_until  # noqa: F401
from tests.test_delivery import NO_RULES, add_messages, outbox_rows

LEASE = timedelta(minutes=5)


@pytest.fixture
def pipeline(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> Pipeline:
    settings = make_settings(db_url, **smtp_server.env(), instance="beta")
    return build_pipeline(engine, settings, live_from(NO_RULES))


def claimed_by_alpha(engine: Engine, now: datetime, **status: object) -> list[outbox.Claimed]:
    """Rows claimed by instance "alpha", whose status row holds ``status``."""
    add_messages(engine, now, ["owner@acme.example"], ["ops@acme.example"])
    with engine.begin() as conn:
        instance_status.publish(
            conn, "alpha", {"started_at": now, "heartbeat_at": now, "process": procinfo.identity(), **status}
        )
        return outbox.claim(conn, "alpha", now, 10, LEASE)


def finished_process() -> str:
    """The identity a process of this machine had; it has ended."""
    child = subprocess.Popen(["sleep", "60"])
    identity = procinfo.identity().rsplit("/", 2)[0] + f"/{child.pid}/{procinfo._start_ticks(child.pid)}"
    child.kill()
    child.wait()
    return identity


def test_the_rows_of_a_stopped_instance_are_taken_over_at_once(
    engine: Engine, clock: Clock, pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    claimed_by_alpha(engine, clock(), stopped_at=clock())
    assert pipeline.deliver(clock.advance(seconds=1)).outcomes == {"sent": 2}
    assert len(smtp_server.wait_for(2)) == 2
    assert {r.claimed_by for r in outbox_rows(engine).values()} == {"beta"}


def test_the_rows_of_an_instance_whose_process_died_on_this_machine_are_taken_over_at_once(
    engine: Engine, clock: Clock, pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    claimed_by_alpha(engine, clock(), process=finished_process())
    assert pipeline.deliver(clock.advance(seconds=1)).outcomes == {"sent": 2}
    assert {r.status for r in outbox_rows(engine).values()} == {"sent"}


def test_the_rows_of_a_live_instance_wait_for_its_lease(
    engine: Engine, clock: Clock, pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    claimed_by_alpha(engine, clock())  # this very process: alive
    pipeline.beating_since = clock()
    assert pipeline.deliver(clock.advance(seconds=20)).claimed == 0
    assert pipeline.deliver(clock.advance(minutes=6)).outcomes == {"sent": 2}


def test_a_silent_heartbeat_counts_only_once_this_instance_has_itself_been_beating_that_long(
    engine: Engine, clock: Clock, pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    # Another machine's instance: its process cannot be checked from here.
    claimed_by_alpha(engine, clock(), process="another-boot/pid:[1]/4242/99")
    pipeline.beating_since = None  # say the database was just down for everyone
    assert pipeline.deliver(clock.advance(seconds=STALE_AFTER.total_seconds() + 1)).claimed == 0
    pipeline.beating_since = clock()
    assert pipeline.deliver(clock.advance(seconds=STALE_AFTER.total_seconds() / 2)).claimed == 0
    assert pipeline.deliver(clock.advance(seconds=STALE_AFTER.total_seconds() / 2)).outcomes == {"sent": 2}


def test_an_instance_with_a_fresh_heartbeat_keeps_its_rows_however_long_this_one_has_been_beating(
    engine: Engine, clock: Clock, pipeline: Pipeline
) -> None:
    claimed_by_alpha(engine, clock(), process="another-boot/pid:[1]/4242/99")
    pipeline.beating_since = clock() - timedelta(hours=1)
    with engine.begin() as conn:
        instance_status.publish(conn, "alpha", {"heartbeat_at": clock.advance(minutes=2)})
    assert pipeline.deliver(clock.advance(seconds=10)).claimed == 0


def test_claims_without_a_status_row_run_out_with_their_lease(
    engine: Engine, clock: Clock, pipeline: Pipeline
) -> None:
    add_messages(engine, clock(), ["owner@acme.example"])
    with engine.begin() as conn:
        outbox.claim(conn, "send-test-somewhere", clock(), 10, LEASE)
    pipeline.beating_since = clock() - timedelta(hours=1)
    assert pipeline.deliver(clock.advance(minutes=4)).claimed == 0
    assert pipeline.deliver(clock.advance(minutes=2)).outcomes == {"sent": 1}


def test_a_process_is_gone_only_when_this_machine_can_tell() -> None:
    assert procinfo.gone(procinfo.identity()) is False
    assert procinfo.gone(finished_process()) is True
    assert procinfo.gone("another-boot/pid:[1]/4242/99") is False
    assert procinfo.gone("") is False
    assert procinfo.gone("garbage") is False
    reused = procinfo.identity().rsplit("/", 1)[0] + "/1"  # this pid, another start time
    assert procinfo.gone(reused) is True


@pytest.mark.parametrize("instance", ["", "billing-1"], ids=["default name", "fixed name"])
def test_a_daemon_killed_while_sending_is_taken_over_by_the_next_one_at_once(
    instance: str,
    cli: Cli,  # noqa: F811
    smtp_server: SmtpServer,
    engine: Engine,
) -> None:
    add_funded_account(engine, "acme", "Acme Ltd", "owner@acme.example", 90)
    smtp_server.hold()
    settings = {"instance": instance} if instance else {}
    first = cli.start(**settings)
    smtp_server.wait_holding(timeout=DEADLINE)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=DEADLINE)
    [row] = outbox_rows(engine).values()
    assert row.status == "sending"  # the lease (5 minutes) has not run out
    smtp_server.release()

    started = time.monotonic()
    cli.start(**settings)
    wait_until(lambda: [r.status for r in outbox_rows(engine).values()] == ["sent"], "the row sent")
    assert time.monotonic() - started < 15  # not the five minutes of the lease
    mails = [m for m in smtp_server.received if m.rcpt_tos == ("owner@acme.example",)]
    assert 1 <= len(mails) <= 2  # a second copy only of the message in flight at the kill
    assert len({m.message["Message-ID"] for m in mails}) == 1


def test_report_claims_of_a_stopped_instance_are_due_again_at_the_next_heartbeat(
    engine: Engine, clock: Clock, pipeline: Pipeline
) -> None:
    with engine.begin() as conn:
        instance_status.publish(
            conn, "alpha", {"started_at": clock(), "heartbeat_at": clock(), "stopped_at": clock()}
        )
        for holder in ("alpha", "gamma"):
            conn.execute(
                insert(ReportRun.__table__),  # type: ignore[attr-defined]
                {
                    "report_id": "monthly-usage",
                    "account_id": f"acme-{holder}",
                    "period_key": "2026-02",
                    "timezone": "UTC",
                    "fire_at": clock(),
                    "status": "claimed",
                    "claimed_by": holder,
                    "lease_until": clock() + timedelta(minutes=10),
                    "claimed_at": clock(),
                },
            )
    daemon = Daemon(pipeline, clock=clock)
    daemon.job("heartbeat", daemon.heartbeat_job)()
    with engine.connect() as conn:
        leases = dict(conn.execute(select(ReportRun.claimed_by, ReportRun.lease_until)).all())  # type: ignore[call-overload]
    assert leases == {"alpha": clock(), "gamma": clock() + timedelta(minutes=10)}  # gamma: no status row


def test_a_daemon_started_under_the_name_of_a_live_instance_leaves_its_messages_to_it(
    engine: Engine, clock: Clock, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        process = procinfo.identity().rsplit("/", 2)[0] + f"/{other.pid}/{procinfo._start_ticks(other.pid)}"
        add_messages(engine, clock(), ["owner@acme.example"])
        with engine.begin() as conn:
            instance_status.publish(
                conn, "beta", {"started_at": clock(), "heartbeat_at": clock(), "process": process}
            )
            outbox.claim(conn, "beta", clock(), 10, LEASE)
        daemon = Daemon(pipeline, clock=clock)
        assert daemon._live_namesake(clock()) == process
        other.kill()
        other.wait()
        assert daemon._live_namesake(clock()) is None  # an earlier run, now gone: its work is ours
    finally:
        other.kill()
        other.wait()
