"""systemd's watchdog: pings while polls end, none while the database or the poll loop is stuck.

The daemon runs as a real process with a real notify socket (as systemd binds one);
the database is wedged for real: a lock the poll has to wait for.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from balancewatch.alerts import cycle
from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.watchdog import Watchdog, interval_from
from tests.test_daemon import Cli, add_funded_account, cli  # noqa: F401  (cli is a fixture)

WATCHDOG_USEC = "2000000"  # a 2 s WatchdogSec: a ping every second


class NotifySocket:
    """A datagram socket bound where $NOTIFY_SOCKET points, as systemd binds one."""

    def __init__(self) -> None:
        self.name = f"balancewatch-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(f"\0{self.name}")

    @property
    def address(self) -> str:
        return f"@{self.name}"

    def pings_within(self, seconds: float) -> int:
        """How many WATCHDOG=1 arrive within ``seconds`` from now."""
        deadline = time.monotonic() + seconds
        pings = 0
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                said = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            pings += said.split("\n").count("WATCHDOG=1")
        return pings

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass


@contextmanager
def wedged(engine: Engine) -> Iterator[None]:
    """Hold a lock every poll must wait for, until the block ends."""
    with engine.connect() as conn, conn.begin() as transaction:
        if engine.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE balance IN ACCESS EXCLUSIVE MODE"))
        else:
            # The engine began with BEGIN IMMEDIATE: the write lock is ours, other writers wait.
            conn.execute(text("SELECT 1"))
        yield
        transaction.rollback()


def test_pings_stop_while_the_database_is_wedged_and_resume_when_it_is_free(
    cli: Cli,  # noqa: F811
    engine: Engine,
) -> None:
    notify = NotifySocket()
    daemon = cli.start(
        environ={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": WATCHDOG_USEC},
        poll_interval="1s",
    )
    assert notify.pings_within(3.0) >= 2, "pings while polls end"

    with wedged(engine):
        # A poll in flight may still end, and patience is poll_interval + 1 s: then silence.
        notify.pings_within(4.0)
        assert notify.pings_within(3.0) == 0, "no ping while no poll can end"
        assert "stopping the watchdog pings" in daemon.log

    assert notify.pings_within(4.0) >= 1, "pings again once polls end"
    assert "watchdog pings resume" in daemon.log
    assert daemon.stop() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_pings_without_a_watchdog_or_for_another_process(cli: Cli) -> None:  # noqa: F811
    notify = NotifySocket()
    daemon = cli.start(environ={"NOTIFY_SOCKET": notify.address, "WATCHDOG_PID": "1"}, poll_interval="1s")
    notify.drain()
    assert notify.pings_within(2.5) == 0
    assert daemon.stop() == 0


def test_the_watchdog_reads_systemds_variables() -> None:
    assert interval_from({}) is None
    assert interval_from({"WATCHDOG_USEC": "0"}) is None
    assert interval_from({"WATCHDOG_USEC": "60000000"}) == 60.0
    assert interval_from({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "42"}, pid=42) == 60.0
    assert interval_from({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "42"}, pid=43) is None


def test_a_ping_needs_progress_within_patience() -> None:
    now = [100.0]
    sent: list[str] = []
    dog = Watchdog(
        timeout=10, patience=5, notify=lambda state: sent.append(state) or True, clock=lambda: now[0]
    )
    assert dog.every == 5
    assert dog.tick()
    now[0] += 5.5
    assert not dog.tick()
    dog.progressed()
    assert dog.tick()
    assert sent == ["WATCHDOG=1", "WATCHDOG=1"]


def test_the_ping_thread_ends_when_stopping() -> None:
    stopping = threading.Event()
    dog = Watchdog(timeout=0.02, patience=60, notify=lambda _state: True)
    thread = dog.start(stopping)
    stopping.set()
    thread.join(2.0)
    assert not thread.is_alive()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_long_sweep_reports_progress_after_each_query_and_chunk(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = live_from(
        "alerts:\n  - id: ladder\n    accounts: {currency: USD}\n    below: [100]\n"
        "  - id: second\n    accounts: {currency: USD}\n    below: [50]\n"
    )
    for n in range(5):
        add_funded_account(engine, f"acct{n}", f"Account {n}", f"o{n}@acme.example", 40)
    monkeypatch.setattr(cycle, "CHUNK", 2)  # 5 balances: three chunks per rule
    calls: list[None] = []

    stats = cycle.poll(
        engine,
        live,
        make_settings(db_url),
        datetime.now(UTC),
        full=True,
        progressed=lambda: calls.append(None),
    )

    assert stats.candidates == 10
    assert len(calls) == 2 * (1 + 3)  # per rule: the query for candidates, then each chunk
