"""A database that goes away in the middle of a delivery: nothing accepted is sent again by
this process, nothing waits out a lease, and the log says so once, not once a second.

The database is a private PostgreSQL cluster the test stops and starts (never the shared
server); the SMTP server is real, on loopback.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.outage import FailureLog
from balancewatch.runtime.service import Daemon, Pipeline, build_pipeline
from balancewatch.store.db import make_engine, upgrade
from tests.conftest import IN_CI, Clock
from tests.pgcluster import PgCluster
from tests.smtpserver import SmtpServer
from tests.test_delivery import NO_RULES, add_messages, outbox_rows

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    try:
        server = PgCluster()
    except (RuntimeError, OSError) as exc:
        if IN_CI:
            pytest.fail(f"cannot start a private PostgreSQL cluster: {exc}")
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc}")
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def private_db(cluster: PgCluster) -> Iterator[Engine]:
    """A fresh database in the private cluster, with the schema in place."""
    cluster.start_if_stopped()
    name = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(cluster.url, pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(cluster.url.rsplit("/", 1)[0] + f"/{name}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pipeline(
    private_db: Engine,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> Pipeline:
    url = private_db.url.render_as_string(hide_password=False)
    return build_pipeline(private_db, make_settings(url, **smtp_server.env()), live_from(NO_RULES))


def database_stops_while_the_server_takes_the_first_message(
    pipeline: Pipeline, cluster: PgCluster, smtp_server: SmtpServer, clock: Clock
) -> None:
    """Deliver a batch; stop the database while the server holds its first message, then let
    the server accept it: recording that fails, and the delivery raises OperationalError."""
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            pipeline.deliver(clock(), clock)
        except BaseException as exc:
            errors.append(exc)

    smtp_server.hold()
    thread = threading.Thread(target=deliver)
    thread.start()
    smtp_server.wait_holding(1)
    cluster.stop()
    smtp_server.release()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [OperationalError]


def test_a_database_outage_after_the_server_accepted_a_message_neither_resends_it_nor_holds_back_the_rest(
    cluster: PgCluster, private_db: Engine, pipeline: Pipeline, clock: Clock, smtp_server: SmtpServer
) -> None:
    engine = private_db
    keys = add_messages(engine, clock(), *([f"owner{i}@acme.example"] for i in range(4)))
    database_stops_while_the_server_takes_the_first_message(pipeline, cluster, smtp_server, clock)
    [accepted] = smtp_server.wait_for(1)
    assert pipeline.courier.unrecorded

    with pytest.raises(OperationalError):  # still down: nothing is claimed, nothing re-sent
        pipeline.deliver(clock.advance(seconds=5), clock)
    assert len(smtp_server.received) == 1

    cluster.start()
    stats = pipeline.deliver(clock.advance(seconds=5), clock)  # at once, not a lease later
    assert stats.outcomes == {"sent": 4, "released": 3}
    mails = smtp_server.wait_for(4)
    assert sorted(m.rcpt_tos for m in mails) == [(f"owner{i}@acme.example",) for i in range(4)]
    assert mails[0] is accepted
    rows = outbox_rows(engine)
    assert [(rows[k].status, rows[k].attempts) for k in keys] == [("sent", 1)] * 4
    assert not pipeline.courier.unrecorded


def test_a_database_outage_is_one_warning_then_one_a_minute_and_its_end_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seconds = [0.0]
    failures = FailureLog(clock=lambda: seconds[0])
    down = OperationalError("SELECT 1", {}, Exception("connection refused\nDETAIL: more"))
    caplog.set_level(logging.INFO)
    for _ in range(150):  # five jobs failing every second for 30 s, then 120 s more
        for job in ("evaluate", "deliver", "topup", "reports", "heartbeat"):
            failures.failed(job, down)
        seconds[0] += 1
    failures.succeeded("deliver")
    failures.succeeded("evaluate")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "database unreachable (evaluate: Exception: connection refused); every job waits and retries, "
        "nothing is lost",
        "database still unreachable after 1m (Exception: connection refused)",
        "database still unreachable after 2m (Exception: connection refused)",
        "database reachable again after 2m30s; carrying on where the jobs left off",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_failing_job_logs_its_traceback_once_then_a_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    seconds = [0.0]
    failures = FailureLog(clock=lambda: seconds[0])
    caplog.set_level(logging.INFO)
    for _ in range(90):
        failures.failed("reports", ValueError("bad data"))
        seconds[0] += 1
    failures.succeeded("reports")
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False]
    assert [r.getMessage() for r in caplog.records[1:]] == [
        "reports still failing (61 times so far): ValueError: bad data",
        "reports works again after 90 failures",
    ]


def test_a_stop_after_the_database_returns_records_what_was_accepted_instead_of_handing_it_back(
    cluster: PgCluster, private_db: Engine, pipeline: Pipeline, clock: Clock, smtp_server: SmtpServer
) -> None:
    engine = private_db
    keys = add_messages(engine, clock(), *([f"owner{i}@acme.example"] for i in range(3)))
    database_stops_while_the_server_takes_the_first_message(pipeline, cluster, smtp_server, clock)
    cluster.start()

    Daemon(pipeline, clock=clock)._hand_back()  # SIGTERM before the next delivery run
    rows = outbox_rows(engine)
    assert [(rows[k].status, rows[k].claimed_by) for k in keys] == [
        ("sent", pipeline.worker),
        ("pending", None),
        ("pending", None),
    ]
    assert len(smtp_server.received) == 1
