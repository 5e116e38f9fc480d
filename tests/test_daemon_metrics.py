"""A running daemon serves /metrics, /-/healthy and /-/ready on `metrics.listen`, and its
counters follow what it does: real process, real HTTP, real SMTP server."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from balancewatch import __version__
from tests.smtpserver import SmtpServer
from tests.test_daemon import DEADLINE, Cli, cli, wait_until  # noqa: F401  (cli is a fixture)
from tests.test_watchdog import wedged


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    status, body = get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_daemon_serves_metrics_and_health_that_follow_its_work(
    cli: Cli,  # noqa: F811
    smtp_server: SmtpServer,
    engine: Engine,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cli("accounts", "add", "acme", "--name", "Acme Ltd", "--email", "owner@acme.example")
    cli("ledger", "post", "acme", "300", "--currency", "USD")
    daemon = cli.start(metrics__listen=f"127.0.0.1:{port}")
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in daemon.log

    assert get(f"{base}/-/healthy")[0] == 200
    wait_until(lambda: get(f"{base}/-/ready")[0] == 200, "ready once the first poll ended")
    first = samples(base)
    [build] = [dict(labels) for name, labels in first if name == "balancewatch_build_info"]
    assert build["version"] == __version__
    assert value(first, "balancewatch_poll_duration_seconds_count", kind="sweep") >= 1

    cli("ledger", "post", "acme", "-210", "--currency", "USD")
    smtp_server.wait_for(1, timeout=DEADLINE)

    def delivered() -> bool:
        scrape = samples(base)
        sent = value(scrape, "balancewatch_outbox_messages", status="sent", channel="email", transport="smtp")
        return sent == 1

    wait_until(delivered, "the sent row in the outbox gauges")
    after = samples(base)
    assert value(after, "balancewatch_notifications_decided_total", rule="ladder", kind="alert") == 1
    assert value(after, "balancewatch_delivery_attempts_total", transport="smtp") >= 1
    assert value(after, "balancewatch_poll_duration_seconds_count", kind="poll") >= 1
    assert get(f"{base}/nothing")[0] == 404
    assert daemon.stop(signal.SIGTERM) == 0


def test_ready_says_no_while_polls_cannot_end_and_healthy_stays_yes(
    cli: Cli,  # noqa: F811
    engine: Engine,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = cli.start(metrics__listen=f"127.0.0.1:{port}")
    wait_until(lambda: get(f"{base}/-/ready")[0] == 200, "ready")

    with wedged(engine):
        wait_until(lambda: get(f"{base}/-/ready")[0] == 503, "not ready while no poll can end")
        status, reason = get(f"{base}/-/ready")
        assert "no poll has ended for" in reason, (status, reason)
        assert get(f"{base}/-/healthy")[0] == 200

    wait_until(lambda: get(f"{base}/-/ready")[0] == 200, "ready again")
    assert daemon.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_metrics_port_already_taken_is_logged_and_alerting_goes_on(cli: Cli) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = cli.start(metrics__listen=f"127.0.0.1:{port}")
        assert "going on without metrics" in daemon.log
        assert daemon.process.poll() is None
        assert daemon.stop(signal.SIGTERM) == 0
