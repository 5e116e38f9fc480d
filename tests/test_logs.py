"""log.format: json — one JSON object a line on stderr, from every command and from the daemon.

Every stderr line is parsed as JSON: a line that is not (a traceback, a
continuation line) fails the test. Secrets in the config never appear.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from balancewatch.cli import main
from balancewatch.core import logs, shipped
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from tests.smtpserver import SmtpServer

RFC3339_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PASSWORD = "hunter2-smtp-secret"


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON object; fails on any line that is not one."""
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert RFC3339_MS_UTC.fullmatch(record["time"]), line
        assert record["level"] in ("debug", "info", "warning", "error", "critical"), line
        assert isinstance(record["logger"], str) and isinstance(record["message"], str), line
        records.append(record)
    return records


def add_low_account(engine: Engine) -> None:
    """acme, owned by owner@acme.example, at $90: below the shipped ladder's $100 step."""
    now = datetime.now(UTC)
    with Session(engine) as s:
        add_account(s, "acme", "Acme Ltd", "owner@acme.example")
        ledger.post(s, "acme", "USD", 9000, "top-up", occurred_at=now, now=now)
        s.commit()


@pytest.fixture
def keep_logging_and_signals() -> Iterator[None]:
    """The CLI sets up logging and (run) signal handlers for a whole process: put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    term, intr = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    root.handlers[:], root.level = handlers, level
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, intr)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # logging, not storage
def test_run_once_in_process_with_the_format_from_the_environment_writes_only_json_lines(
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    keep_logging_and_signals: None,
) -> None:
    add_low_account(engine)
    env = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_DATABASE__URL": db_url,
        "BALANCEWATCH_RULES_DIR": str(shipped.rules_dir()),
        "BALANCEWATCH_TEMPLATES_DIR": str(shipped.templates_dir()),
        "BALANCEWATCH_LOG__FORMAT": "json",
    }
    assert main(["run", "--once"], env) == 0
    out, err = capsys.readouterr()
    assert "decided 1 notifications" in out
    records = json_lines(err)
    assert any(r["level"] == "warning" and "no SMTP server configured" in r["message"] for r in records)
    assert any(r["message"].startswith("balancewatch starting: database sqlite:///") for r in records)


def test_extra_fields_from_the_allow_list_and_a_traceback_go_into_fields_of_one_line(
    capsys: pytest.CaptureFixture[str], keep_logging_and_signals: None
) -> None:
    logs.setup("info", {}, "json")
    log = logging.getLogger("balancewatch.deliver.worker")
    extra = {"rule": "default-ladder", "account": "acme", "message_id": "<k@bw>", "settings": "pw=secret"}
    try:
        raise ConnectionError("connection refused\nby 127.0.0.1:25")
    except ConnectionError:
        log.exception("delivery of %s failed", "outbox #7", extra=extra)
    [record] = json_lines(capsys.readouterr().err)
    assert {k: record[k] for k in ("level", "logger", "message", "rule", "account", "message_id")} == {
        "level": "error",
        "logger": "balancewatch.deliver.worker",
        "message": "delivery of outbox #7 failed",
        "rule": "default-ladder",
        "account": "acme",
        "message_id": "<k@bw>",
    }
    assert record["exception"].startswith("Traceback (most recent call last):\n")
    assert record["exception"].endswith("ConnectionError: connection refused\nby 127.0.0.1:25")
    assert "settings" not in record  # only the allow-listed extras are written


def test_under_the_journal_each_json_line_carries_its_syslog_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_logging_and_signals: None
) -> None:
    with (tmp_path / "journal").open("w+") as journal:
        stat = os.fstat(journal.fileno())
        monkeypatch.setattr(sys, "stderr", journal)
        logs.setup("info", {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, "json")
        logging.getLogger("balancewatch.alerts.cycle").warning("two\nlines", extra={"account": "acme"})
        logging.getLogger("balancewatch.alerts.cycle").info("one")
        journal.seek(0)
        lines = journal.read().splitlines()
    assert [line[:3] for line in lines] == ["<4>", "<6>"]
    assert [json.loads(line[3:])["message"] for line in lines] == ["two\nlines", "one"]
    assert json.loads(lines[0][3:])["account"] == "acme"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # logging, not storage
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback only
def test_the_daemon_started_with_a_config_file_logs_json_and_never_the_smtp_password(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    add_low_account(engine)
    server = SmtpServer(auth=("alerts", PASSWORD))
    server.start()
    try:
        config = tmp_path / "config.yaml"
        config.write_text(
            f"state_dir: {tmp_path / 'state'}\n"
            f"rules_dir: {shipped.rules_dir()}\n"
            f"templates_dir: {shipped.templates_dir()}\n"
            f"database: {{url: '{db_url}'}}\n"
            "delivery: {from: 'Balance alerts <alerts@platform.example>'}\n"
            f"smtp: {{host: {server.host}, port: {server.port}, security: none, username: alerts, "
            f"password: {PASSWORD}}}\n"
            "log: {level: debug, format: json}\n"  # debug: the most lines, any of which could leak
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
        env.pop("JOURNAL_STREAM", None)
        done = subprocess.run(
            [sys.executable, "-m", "balancewatch", "--config", str(config), "run", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "decided 1 notifications; delivery: {'sent': 1}" in done.stdout
        [received] = server.wait_for(1)
    finally:
        server.stop()
    assert received.login == "alerts"
    records = json_lines(done.stderr)
    assert any(r["message"].startswith("sent alert/default-ladder/acme/USD/") for r in records), records
    assert any(r["message"].startswith("balancewatch starting: ") for r in records)
    assert PASSWORD not in done.stderr
