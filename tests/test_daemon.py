"""`balancewatch run` as a real process: the CLI in, email out over loopback SMTP.

Every wait is on a condition with a deadline: mail arriving at the server,
a row changing in the database, a line appearing in the daemon's log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from balancewatch.core import shipped
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from balancewatch.store.tables import AlertState
from tests.conftest import write_rules
from tests.smtpserver import SmtpServer
from tests.test_delivery import outbox_rows

RULES = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    template: low-balance
"""

DEADLINE = 20.0  # seconds; generous for a loaded CI machine, reached only when something is wrong


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.05)


@dataclass
class Running:
    """A `balancewatch run` process, its log (stderr) and its stdout in files."""

    process: subprocess.Popen[bytes]
    log_path: Path
    out_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str) -> None:
        wait_until(lambda: text in self.log or self.process.poll() is not None, f"{text!r} in the log")
        assert text in self.log, (
            f"the daemon exited ({self.process.returncode}) before logging {text!r}:\n{self.log}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig``; return the exit status."""
        self.process.send_signal(sig)
        return self.wait_exit()

    def wait_exit(self) -> int:
        """The exit status, once the process ends; fail if it does not within the deadline."""
        try:
            return self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the daemon did not exit within {DEADLINE}s:\n{self.log}") from None


class Cli:
    """Runs balancewatch commands with one environment, in the test's directory."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.started: list[Running] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "balancewatch", *args],
            env=self.env,
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"balancewatch {' '.join(args)}: {done.stderr}"
        return done

    def start(self, environ: dict[str, str] | None = None, journal: bool = False, **settings: str) -> Running:
        """Start the daemon with extra ``BALANCEWATCH_*`` settings; return once it serves.

        ``journal`` sets ``$JOURNAL_STREAM`` to the log file, as systemd does for the journal.
        """
        n = len(self.started)
        log_path, out_path = self.tmp_path / f"run{n}.log", self.tmp_path / f"run{n}.out"
        env = {**self.env, **(environ or {}), **{f"BALANCEWATCH_{k.upper()}": v for k, v in settings.items()}}
        with log_path.open("wb") as err, out_path.open("wb") as out:
            if journal:
                stat = os.fstat(err.fileno())
                env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
            process = subprocess.Popen(
                [sys.executable, "-m", "balancewatch", "run"],
                env=env,
                cwd=self.tmp_path,
                stdout=out,
                stderr=err,
            )
        running = Running(process, log_path, out_path)
        self.started.append(running)
        running.wait_log("running as")
        return running

    def cleanup(self) -> None:
        for running in self.started:
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait()


@pytest.fixture
def cli(tmp_path: Path, rules_dir: Path, db_url: str, smtp_server: SmtpServer) -> Iterator[Cli]:
    write_rules(rules_dir, RULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
    for systemd_var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
        env.pop(systemd_var, None)
    env.update(
        {
            f"BALANCEWATCH_{k.upper()}": v
            for k, v in {
                **smtp_server.env(),
                "state_dir": str(tmp_path / "state"),
                "rules_dir": str(rules_dir),
                "templates_dir": str(shipped.templates_dir()),
                "database__url": db_url,
                "poll_interval": "1s",
                "delivery__interval": "1s",
                "delivery__from": "Balance alerts <alerts@platform.example>",
                "smtp__timeout": "5s",
            }.items()
        }
    )
    runner = Cli(tmp_path, env)
    yield runner
    runner.cleanup()


def add_funded_account(engine: Engine, account_id: str, name: str, email: str, dollars: int) -> None:
    """What `accounts add` and `ledger post` do, without starting a process for each."""
    now = datetime.now(UTC)
    with Session(engine) as s:
        add_account(s, account_id, name, email)
        ledger.post(s, account_id, "USD", dollars * 100, "top-up", occurred_at=now, now=now)
        s.commit()


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_run_emails_the_owner_when_a_debit_crosses_a_step_and_exits_0_on_sigterm(
    cli: Cli, smtp_server: SmtpServer, engine: Engine
) -> None:
    cli("accounts", "add", "acme", "--name", "Acme Ltd", "--email", "owner@acme.example")
    cli("ledger", "post", "acme", "300", "--currency", "USD")
    daemon = cli.start()
    cli("ledger", "post", "acme", "-210", "--currency", "USD")

    [mail] = smtp_server.wait_for(1, timeout=DEADLINE)
    assert mail.rcpt_tos == ("owner@acme.example",)
    msg = mail.message
    assert msg["Subject"] == "Acme Ltd: USD balance $90.00 is below $100.00"
    assert msg["To"] == "owner@acme.example"
    assert msg["From"] == "Balance alerts <alerts@platform.example>"
    assert "Your USD balance has fallen to $90.00" in msg.get_body(("plain",)).get_content()
    wait_until(lambda: {r.status for r in outbox_rows(engine).values()} == {"sent"}, "the row marked sent")

    assert daemon.stop(signal.SIGTERM) == 0
    assert "received SIGTERM" in daemon.log
    assert "sent alert/ladder/acme/USD/10000/1/0 to owner@acme.example via smtp" in daemon.log
    assert daemon.log.rstrip().endswith("stopped")
    assert daemon.out_path.read_text() == ""  # logs go to stderr only
    assert len(smtp_server.received) == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_run_without_an_smtp_host_writes_eml_files_and_says_so(
    tmp_path: Path, cli: Cli, engine: Engine
) -> None:
    for key in ("BALANCEWATCH_SMTP__HOST", "BALANCEWATCH_SMTP__PORT", "BALANCEWATCH_SMTP__SECURITY"):
        del cli.env[key]
    add_funded_account(engine, "acme", "Acme Ltd", "owner@acme.example", 90)
    cli.env["JOURNAL_STREAM"] = "8:12345"  # inherited from a service, but stderr is not the journal
    done = cli("run", "--once")
    mail_dir = tmp_path / "state" / "mail"
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in done.stderr.splitlines())
    assert f"no SMTP server configured: emails are written as .eml files to {mail_dir}" in done.stderr
    assert "decided 1 notifications" in done.stdout
    [eml] = mail_dir.glob("*.eml")
    assert b"Subject: Acme Ltd: USD balance $90.00 is below $100.00" in eml.read_bytes()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_between_deciding_and_delivering_sends_every_email_exactly_once(
    stop: signal.Signals, cli: Cli, smtp_server: SmtpServer, engine: Engine
) -> None:
    owners = ["a@acme.example", "b@acme.example", "c@acme.example"]
    for n, owner in enumerate(owners):
        add_funded_account(engine, f"acct{n}", f"Account {n}", owner, 90)
    smtp_server.stop()
    quick_retry = {
        "delivery__retry__initial": "200ms",
        "delivery__retry__max": "1s",
        "delivery__lease": "2s",
    }
    first = cli.start(**quick_retry)
    wait_until(
        lambda: (
            [r.attempts > 0 and r.status == "pending" for r in outbox_rows(engine).values()] == [True] * 3
        ),
        "three decided rows with a failed attempt each",
    )
    first.stop(stop)
    decided = {k: r.message_id for k, r in outbox_rows(engine).items()}
    states = count(engine, AlertState.__table__)
    assert "notifications decided" in first.log

    smtp_server.start()
    second = cli.start(**quick_retry)
    mails = smtp_server.wait_for(3, timeout=DEADLINE)
    wait_until(lambda: {r.status for r in outbox_rows(engine).values()} == {"sent"}, "every row marked sent")
    assert second.stop(signal.SIGTERM) == 0

    assert len(smtp_server.received) == 3
    assert sorted(m.rcpt_tos[0] for m in mails) == owners
    assert sorted(str(m.message["Message-ID"]) for m in mails) == sorted(decided.values())
    assert {k: r.message_id for k, r in outbox_rows(engine).items()} == decided  # nothing decided again
    assert count(engine, AlertState.__table__) == states
    assert "notifications decided" not in second.log


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sigterm_while_a_message_is_in_flight_finishes_it_hands_back_the_rest_and_exits_0(
    cli: Cli, smtp_server: SmtpServer, engine: Engine
) -> None:
    add_funded_account(engine, "acme", "Acme Ltd", "owner@acme.example", 90)
    add_funded_account(engine, "globex", "Globex", "owner@globex.example", 90)
    smtp_server.hold()
    daemon = cli.start()
    smtp_server.wait_holding(timeout=DEADLINE)

    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait_log("stopping: finishing the work in flight")
    assert daemon.process.poll() is None  # still busy with the message the server holds
    smtp_server.release()
    assert daemon.wait_exit() == 0
    [first] = smtp_server.wait_for(1)
    rows = outbox_rows(engine)
    assert sorted((r.status, r.claimed_by) for r in rows.values())[1] == ("sent", daemon_name(rows))
    waiting = [r for r in rows.values() if r.status == "pending"]
    assert [(r.attempts, r.claimed_by) for r in waiting] == [(0, None)]  # handed back, never tried

    cli.start()  # the next instance sends it at once
    second = smtp_server.wait_for(2)[1]
    assert {first.rcpt_tos, second.rcpt_tos} == {("owner@acme.example",), ("owner@globex.example",)}
    wait_until(lambda: {r.status for r in outbox_rows(engine).values()} == {"sent"}, "both rows sent")


def daemon_name(rows: dict[str, Any]) -> str:
    return next(r.claimed_by for r in rows.values() if r.status == "sent")


def test_sigterm_with_a_server_that_never_answers_stops_within_ten_seconds_and_the_next_instance_sends(
    cli: Cli, smtp_server: SmtpServer, engine: Engine
) -> None:
    add_funded_account(engine, "acme", "Acme Ltd", "owner@acme.example", 90)
    smtp_server.hold()  # DATA never answered (until the test lets it)
    daemon = cli.start(smtp__timeout="5m")
    smtp_server.wait_holding(timeout=DEADLINE)

    asked = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert time.monotonic() - asked < 10.0
    assert "breaking off the send in flight" in daemon.log
    [row] = outbox_rows(engine).values()
    assert (row.status, row.claimed_by) == ("pending", None)

    smtp_server.release()
    cli.start()
    wait_until(lambda: [r.status for r in outbox_rows(engine).values()] == ["sent"], "the row sent")
    assert [m.rcpt_tos for m in smtp_server.received][-1] == ("owner@acme.example",)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_under_systemd_run_reports_ready_and_stopping_and_logs_with_journal_priorities(cli: Cli) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        name = f"balancewatch-test-{uuid.uuid4().hex}"
        notify.bind(f"\0{name}")  # an abstract socket, as systemd may pass
        notify.settimeout(DEADLINE)
        daemon = cli.start(environ={"NOTIFY_SOCKET": f"@{name}"}, journal=True)
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS="), ready
        assert "rules, no reload yet" in ready
        assert daemon.stop(signal.SIGTERM) == 0
        said = []
        while not said or not said[-1].startswith("STOPPING=1"):
            said.append(notify.recv(4096).decode())  # STATUS= updates come with each heartbeat
        assert said[-1] == "STOPPING=1\nSTATUS=stopping: finishing the work in flight"
    lines = daemon.log.splitlines()
    assert lines
    assert all(re.match(r"<[0-7]>\S", line) for line in lines), lines
    assert "<6>balancewatch.runtime.service: stopped" in lines
