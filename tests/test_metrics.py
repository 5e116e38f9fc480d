"""Prometheus metrics and the health endpoints: the real HTTP server on loopback, scraped with
urllib and parsed with prometheus_client's parser, while the real pipeline pieces run.

Storage-backed tests run on SQLite and PostgreSQL. The database that does not answer is a
real TCP listener that accepts and never speaks; no test sleeps to synchronise.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from balancewatch import outbox
from balancewatch.alerts import cycle
from balancewatch.config import Settings
from balancewatch.core import shipped
from balancewatch.core.metrics import Metrics, Readiness
from balancewatch.deliver.registry import make_transport
from balancewatch.deliver.worker import Courier
from balancewatch.liveset import LiveSet
from balancewatch.reports.runner import run_due
from balancewatch.runtime.httpserve import ListenError, MetricsServer, parse_listen, serve
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.outboxgauges import OutboxCollector, register
from balancewatch.runtime.reload import Reloader
from balancewatch.runtime.service import build_pipeline
from balancewatch.store.db import make_engine
from balancewatch.topup.hook import make_hook
from balancewatch.topup.worker import run_topups
from tests.conftest import T0, Clock, write_rules
from tests.helpers import account, post
from tests.reportkit import write_reports
from tests.smtpserver import SmtpServer
from tests.test_topup import HookServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

LADDER = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    remind: 1h
    template: low-balance
"""
TOPUP = """
alerts:
  - id: auto-recharge
    accounts: {currency: USD}
    below: [50]
    topup: {amount: 200}
"""
DAILY = """
reports:
  - id: daily-usage
    schedule: daily at 08:00
    timezone: UTC
    contents: usage
    empty: send
"""
SENDER = "Balance alerts <alerts@platform.example>"


# --- helpers --------------------------------------------------------------------------------------


def get(url: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    """Status, body and headers of one request (an HTTP error status is an answer, not a failure)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def scrape(server: MetricsServer) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    status, body, headers = get(f"{server.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series has not appeared yet (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    running = serve("127.0.0.1:0", metrics, lambda: Readiness(True))
    yield running
    running.close()


def add_messages(engine: Engine, now: datetime, *recipients: str, prefix: str = "alert/m") -> None:
    """One outbox row per recipient, created at ``now``, as a decision records it."""
    messages = [
        outbox.NewMessage(f"{prefix}/{i}", "alert", SENDER, (to,), f"Message {i}", "Text.\n", None)
        for i, to in enumerate(recipients)
    ]
    with engine.begin() as conn:
        outbox.add(conn, messages, now, "platform.example")


class SilentDatabase:
    """A TCP port that accepts connections and never answers: a database that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()  # the client waiting on it gets an error and its thread ends


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the endpoints --------------------------------------------------------------------------------


def test_the_endpoints_answer_as_prometheus_does(metrics: Metrics) -> None:
    state = {"ready": Readiness(False, "rules not loaded yet")}
    running = serve("127.0.0.1:0", metrics, lambda: state["ready"])
    try:
        assert running.address[0] == "127.0.0.1" and running.address[1] > 0
        assert get(f"{running.url}/-/healthy")[:2] == (200, "OK\n")
        assert get(f"{running.url}/-/ready")[:2] == (503, "rules not loaded yet\n")
        state["ready"] = Readiness(True)
        assert get(f"{running.url}/-/ready")[:2] == (200, "OK\n")

        status, body, headers = get(f"{running.url}/-/ready", "HEAD")
        assert (status, body, headers["Content-Length"]) == (200, "", "3")
        assert get(f"{running.url}/metrics", "HEAD")[:2] == (200, "")
        status, body, _ = get(f"{running.url}/nothing-here")
        assert status == 404 and "/metrics" in body
        status, _, headers = get(f"{running.url}/metrics", "POST")
        assert (status, headers["Allow"]) == (405, "GET, HEAD")

        samples = scrape(running)
        build = [labels for name, labels in samples if name == "balancewatch_build_info"]
        assert len(build) == 1 and dict(build[0])["version"] and dict(build[0])["python"]
        assert "process_start_time_seconds" in names(samples)
    finally:
        running.close()
    with pytest.raises(OSError):  # the port is released
        urllib.request.urlopen(f"{running.url}/-/healthy", timeout=2)


def test_a_readiness_check_that_raises_is_not_ready_and_says_why(metrics: Metrics) -> None:
    def broken() -> Readiness:
        raise RuntimeError("scheduler gone")

    running = serve("127.0.0.1:0", metrics, broken)
    try:
        status, body, _ = get(f"{running.url}/-/ready")
        assert status == 503 and "scheduler gone" in body and body[-1] == "\n" and body.count("\n") == 1
    finally:
        running.close()


def test_each_daemon_has_its_own_registry() -> None:
    one, two = Metrics(process=False), Metrics(process=False)
    one.balances_evaluated(5)
    a = serve("127.0.0.1:0", one, lambda: Readiness(True))
    b = serve("127.0.0.1:0", two, lambda: Readiness(True))
    try:
        assert value(scrape(a), "balancewatch_balances_evaluated_total") == 5
        assert value(scrape(b), "balancewatch_balances_evaluated_total") == 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:9464", ("::1", 9464)), (":9464", ("0.0.0.0", 9464))],
)
def test_listen_is_host_and_port(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "localhost", "host:port", "::1:9464", "127.0.0.1:70000"])
def test_a_malformed_listen_is_one_line_naming_the_setting(listen: str) -> None:
    with pytest.raises(ListenError) as caught:
        parse_listen(listen)
    message = str(caught.value)
    assert message.startswith("metrics.listen: ") and "\n" not in message and "e.g." in message


def test_a_port_in_use_is_one_line_naming_the_setting(server: MetricsServer, metrics: Metrics) -> None:
    listen = f"127.0.0.1:{server.address[1]}"
    with pytest.raises(ListenError) as caught:
        serve(listen, metrics, lambda: Readiness(True))
    assert str(caught.value).startswith(f"metrics.listen: cannot listen on {listen}: ")
    assert "\n" not in str(caught.value)


# --- evaluation -----------------------------------------------------------------------------------


def test_polls_count_balances_and_notifications_by_rule_and_kind(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    clock: Clock,
    metrics: Metrics,
    server: MetricsServer,
) -> None:
    settings, live = make_settings(db_url), live_from(LADDER)
    account(engine, "acme")
    post(engine, "acme", "USD", 30_000, clock())
    looked = 0
    before = time.time()
    looked += cycle.poll(engine, live, settings, clock(), metrics=metrics).candidates  # a first sweep
    post(engine, "acme", "USD", -21_000, clock.advance(minutes=1))  # $90: one alert, for $100
    looked += cycle.poll(engine, live, settings, clock.advance(minutes=1), metrics=metrics).candidates
    stats = cycle.poll(engine, live, settings, clock.advance(hours=2), full=True, metrics=metrics)
    looked += stats.candidates

    samples = scrape(server)
    assert looked >= 2  # the balance once low, by the poll and by the sweep
    assert value(samples, "balancewatch_balances_evaluated_total") == looked
    assert value(samples, "balancewatch_notifications_decided_total", rule="ladder", kind="alert") == 1
    assert value(samples, "balancewatch_notifications_decided_total", rule="ladder", kind="reminder") == 1
    assert value(samples, "balancewatch_poll_duration_seconds_count", kind="sweep") == 2
    assert value(samples, "balancewatch_poll_duration_seconds_count", kind="poll") == 1
    for kind in ("poll", "sweep"):
        last = value(samples, "balancewatch_last_poll_success_timestamp_seconds", kind=kind)
        assert before <= last <= time.time()
        assert value(samples, "balancewatch_poll_failures_total", kind=kind) == 0


def test_a_poll_that_fails_is_counted_and_keeps_the_last_success(
    make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet], metrics: Metrics
) -> None:
    url = f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    down = make_engine(url)
    with pytest.raises(Exception, match=r"onnection refused|could not connect"):
        cycle.poll(down, live_from(LADDER), make_settings(url), T0, metrics=metrics)
    running = serve("127.0.0.1:0", metrics, lambda: Readiness(True))
    try:
        samples = scrape(running)
    finally:
        running.close()
    assert value(samples, "balancewatch_poll_failures_total", kind="poll") == 1
    assert value(samples, "balancewatch_poll_duration_seconds_count", kind="poll") == 1
    assert ("balancewatch_last_poll_success_timestamp_seconds", frozenset({("kind", "poll")})) not in samples


# --- delivery -------------------------------------------------------------------------------------


def test_delivery_counts_attempts_and_failures_by_class_and_the_outbox_by_status(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    smtp_server: SmtpServer,
    clock: Clock,
    metrics: Metrics,
    server: MetricsServer,
) -> None:
    settings = make_settings(db_url, **smtp_server.env(), smtp__timeout="5s")
    courier = Courier(engine, make_transport(settings), settings, "w1", metrics=metrics)
    register(metrics, engine, "smtp", cache=0)
    smtp_server.refuse["gone@acme.example"] = "550 5.1.1 no such user"
    smtp_server.refuse["grey@acme.example"] = "451 4.7.1 greylisted, try again later"
    add_messages(engine, clock(), "owner@acme.example", "gone@acme.example", "grey@acme.example")

    assert courier.deliver_batch(clock()).outcomes == {"sent": 1, "parked": 1, "retry": 1}
    samples = scrape(server)
    assert value(samples, "balancewatch_delivery_attempts_total", transport="smtp") == 3
    failures = {
        c: value(samples, "balancewatch_delivery_failures_total", transport="smtp", **{"class": c})
        for c in ("permanent", "temporary", "connection")
    }
    assert failures == {"permanent": 1, "temporary": 1, "connection": 0}
    rows = {
        s: value(samples, "balancewatch_outbox_messages", status=s, channel="email", transport="smtp")
        for s in ("pending", "sending", "sent", "parked")
    }
    assert rows == {"pending": 1, "sending": 0, "sent": 1, "parked": 1}
    assert value(samples, "balancewatch_database_up") == 1

    smtp_server.stop()
    add_messages(engine, clock(), "a@acme.example", "b@acme.example", prefix="alert/later")
    courier.deliver_batch(clock.advance(hours=1))  # the greylisted one is due again too: 3 rows
    samples = scrape(server)
    assert value(samples, "balancewatch_delivery_attempts_total", transport="smtp") == 6
    assert (
        value(samples, "balancewatch_delivery_failures_total", transport="smtp", **{"class": "connection"})
        == 3
    )


# --- the outbox gauges ----------------------------------------------------------------------------


def test_the_outbox_gauges_count_rows_by_status_and_age_the_oldest_undone(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], clock: Clock, metrics: Metrics
) -> None:
    settings = make_settings(db_url)
    add_messages(engine, T0, "a@acme.example", "b@acme.example", prefix="alert/early")
    Courier(engine, make_transport(settings), settings, "w1").deliver_batch(T0)  # files: both sent
    add_messages(engine, T0 + timedelta(hours=1), "c@acme.example", prefix="alert/c")
    add_messages(engine, T0 + timedelta(hours=2), "d@acme.example", prefix="alert/d")
    with engine.begin() as conn:  # another instance is sending the older one now
        [claimed] = outbox.claim(conn, "w2", T0 + timedelta(hours=2), 1, timedelta(minutes=5))
    assert claimed.idem_key == "alert/c/0"
    now = T0 + timedelta(hours=2, minutes=5)
    metrics.register(OutboxCollector(engine, "files", cache=0, now=lambda: now))
    running = serve("127.0.0.1:0", metrics, lambda: Readiness(True))
    try:
        samples = scrape(running)
    finally:
        running.close()
    rows = {
        s: value(samples, "balancewatch_outbox_messages", status=s, channel="email", transport="files")
        for s in ("pending", "sending", "sent", "parked")
    }
    assert rows == {"pending": 1, "sending": 1, "sent": 2, "parked": 0}
    assert (
        value(samples, "balancewatch_outbox_oldest_pending_age_seconds", channel="email", transport="files")
        == 3900
    )
    assert value(samples, "balancewatch_database_up") == 1


def test_an_empty_outbox_has_no_age(engine: Engine, metrics: Metrics) -> None:
    collector = OutboxCollector(engine, "smtp", cache=0, now=lambda: T0)
    reading = collector.reading()
    assert (reading.up, reading.by_status, reading.oldest_undone) == (True, {}, None)
    metrics.register(collector)
    running = serve("127.0.0.1:0", metrics, lambda: Readiness(True))
    try:
        samples = scrape(running)
    finally:
        running.close()
    assert (
        value(samples, "balancewatch_outbox_oldest_pending_age_seconds", channel="email", transport="smtp")
        == 0
    )
    assert (
        value(samples, "balancewatch_outbox_messages", status="pending", channel="email", transport="smtp")
        == 0
    )


def test_a_reading_is_reused_within_the_cache_time(engine: Engine) -> None:
    collector = OutboxCollector(engine, "smtp", cache=3600)
    assert collector.reading().by_status == {}
    add_messages(engine, T0, "a@acme.example")
    assert collector.reading().by_status == {}  # cached: the new row is not read yet
    assert OutboxCollector(engine, "smtp", cache=0).reading().by_status == {"pending": 1}


def test_a_database_that_hangs_gives_a_fast_scrape_with_database_up_0(metrics: Metrics) -> None:
    silent = SilentDatabase()
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{silent.port}/none")
    try:
        metrics.register(OutboxCollector(engine, "smtp", timeout=0.5, cache=0))
        running = serve("127.0.0.1:0", metrics, lambda: Readiness(True))
        try:
            for _ in range(2):  # the second scrape does not wait again for the query still hanging
                started = time.monotonic()
                samples = scrape(running)
                took = time.monotonic() - started
                assert took < 3, took
                assert value(samples, "balancewatch_database_up") == 0
                assert "balancewatch_outbox_messages" not in names(samples)
                assert "balancewatch_build_info" in names(samples)  # the rest is reported
        finally:
            running.close()
    finally:
        silent.close()
        engine.dispose()


def test_a_database_that_refuses_gives_database_up_0() -> None:
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    reading = OutboxCollector(engine, "smtp", timeout=10, cache=0).reading()
    assert reading.up is False and reading.by_status == {}


# --- reports, top-ups and reloads -----------------------------------------------------------------


def test_reports_count_claims_won_and_messages_sent(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    rules_dir: Path,
    metrics: Metrics,
    server: MetricsServer,
) -> None:
    fire = T0.replace(day=14, hour=8)
    live = write_reports(rules_dir, DAILY)
    settings = make_settings(db_url)
    run_due(engine, live, settings, fire - timedelta(minutes=10), "one", metrics=metrics)
    for name in ("a", "b", "c"):
        account(engine, name)
    assert run_due(engine, live, settings, fire, "one", metrics=metrics).sent == {"daily-usage": 3}
    run_due(engine, live, settings, fire + timedelta(seconds=1), "two", metrics=metrics)  # nothing left
    samples = scrape(server)
    assert value(samples, "balancewatch_report_claims_total", report="daily-usage") == 3
    assert value(samples, "balancewatch_reports_sent_total", report="daily-usage") == 3


def test_top_up_requests_are_counted_by_outcome(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    clock: Clock,
    metrics: Metrics,
    server: MetricsServer,
) -> None:
    hook = HookServer()
    hook.start()
    try:
        settings, live = make_settings(db_url, topup__hook__url=hook.url), live_from(TOPUP)
        account(engine, "acme")
        post(engine, "acme", "USD", 30_000, clock())
        post(engine, "acme", "USD", -26_000, clock.advance(minutes=1))  # $40: below the $50 minimum
        cycle.poll(engine, live, settings, clock(), metrics=metrics)
        run_topups(engine, live, settings, make_hook(settings), clock(), metrics=metrics)
        post(engine, "acme", "USD", 20_000, clock.advance(minutes=1))  # the platform charged the card
        run_topups(engine, live, settings, make_hook(settings), clock.advance(seconds=5), metrics=metrics)
    finally:
        hook.stop()
    samples = scrape(server)
    outcomes = {
        o: value(samples, "balancewatch_topup_requests_total", outcome=o)
        for o in ("created", "requested", "arrived", "failed")
    }
    assert outcomes == {"created": 1, "requested": 1, "arrived": 1, "failed": 0}
    assert len(hook.calls) == 1


def test_reloads_count_attempts_and_failures_and_name_the_live_set(
    rules_dir: Path, clock: Clock, metrics: Metrics, server: MetricsServer
) -> None:
    write_rules(rules_dir, LADDER)
    live = load_set(rules_dir, shipped.templates_dir())
    reloader = Reloader(
        rules_dir, shipped.templates_dir(), live, lambda _live: None, clock=clock, metrics=metrics
    )
    samples = scrape(server)
    assert value(samples, "balancewatch_last_reload_successful") == 1
    assert value(samples, "balancewatch_rule_set_info", digest=live.digest, rules="1") == 1
    assert value(samples, "balancewatch_reload_attempts_total") == 0

    write_rules(rules_dir, "alerts:\n  - id: broken\n    below: [-5]\n")
    assert reloader.reload_now("SIGHUP").ok is False
    samples = scrape(server)
    assert value(samples, "balancewatch_reload_attempts_total") == 1
    assert value(samples, "balancewatch_reload_failures_total") == 1
    assert value(samples, "balancewatch_last_reload_successful") == 0
    assert value(samples, "balancewatch_rule_set_info", digest=live.digest, rules="1") == 1  # still live

    write_rules(rules_dir, LADDER + LADDER.replace("alerts:\n", "").replace("id: ladder", "id: second"))
    status = reloader.reload_now("SIGHUP")
    assert status.ok is True and status.rules == 2
    samples = scrape(server)
    assert value(samples, "balancewatch_reload_attempts_total") == 2
    assert value(samples, "balancewatch_reload_failures_total") == 1
    assert value(samples, "balancewatch_last_reload_successful") == 1
    assert value(samples, "balancewatch_last_reload_success_timestamp_seconds") == clock().timestamp()
    assert [dict(labels) for name, labels in samples if name == "balancewatch_rule_set_info"] == [
        {"digest": status.live_digest, "rules": "2"}
    ]


def test_every_metric_a_daemon_exports_is_documented_and_every_documented_one_exported(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet]
) -> None:
    pipeline = build_pipeline(
        engine, make_settings(db_url, metrics__listen="127.0.0.1:9100"), live_from(LADDER)
    )
    assert isinstance(pipeline.metrics, Metrics)
    suffix = {"counter": "_total", "info": "_info"}
    exported = {
        family.name + suffix.get(family.type, "")
        for family in pipeline.metrics.registry.collect()
        if family.name.startswith("balancewatch_")
    }
    table = (Path(__file__).parents[1] / "docs" / "monitoring.md").read_text()
    documented = set(re.findall(r"^\| `(balancewatch_\w+)` \|", table, re.MULTILINE))
    assert exported == documented
