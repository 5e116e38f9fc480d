"""A template that never finishes cannot wedge `check`, a reload or a start; a reload that
drops rules says which.

The daemon tests run `balancewatch run` as a real process with a real SMTP
server on loopback (tests/test_daemon.py); every wait is on a log line or a
database row, with a deadline.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from balancewatch.core import shipped
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.reload import Reloader
from balancewatch.store import status as instance_status
from tests.test_daemon import DEADLINE, Cli, cli, wait_until  # noqa: F401  (cli is a fixture)

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
BUDGET = "0.5s"  # render.timeout in these tests
WEDGE = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}\n"
WITHIN = 10.0  # seconds: from the save to the refusal in the log, and from SIGTERM to the exit


@pytest.fixture
def templates(tmp_path: Path, cli: Cli) -> Path:  # noqa: F811
    """A private copy of the shipped templates, the daemon's templates_dir."""
    copy = Path(shutil.copytree(shipped.templates_dir(), tmp_path / "templates"))
    cli.env["BALANCEWATCH_TEMPLATES_DIR"] = str(copy)
    cli.env["BALANCEWATCH_RENDER__TIMEOUT"] = BUDGET
    return copy


def wedge(templates: Path) -> Path:
    """Make the body of ``low-balance`` (which the rules use) loop for ever at its line 2."""
    body = templates / "low-balance" / "body.txt"
    save(body, "Hello {{ account.name }},\n" + WEDGE)
    return body


def save(path: Path, text: str) -> None:
    """Write ``path`` in one step (a hidden file renamed over it): the reloader never sees half of it."""
    hidden = path.with_name(f".{path.name}.tmp")
    hidden.write_text(text)
    hidden.replace(path)


def refusal(body: Path) -> str:
    return f"{body}:2: rendering took longer than 0.5s (render.timeout); a loop may never end"


def run_balancewatch(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    """``balancewatch ARGS`` as a process, which must end within the deadline (never hang)."""
    return subprocess.run(
        [sys.executable, "-m", "balancewatch", *args],
        env=cli.env,
        cwd=cli.tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def status_row(engine: Engine) -> Any:
    with engine.connect() as conn:
        rows = instance_status.read_all(conn)
    return rows[0] if rows else None


@SQLITE
def test_check_with_a_never_ending_template_exits_1_naming_its_file_and_line(
    cli: Cli,  # noqa: F811
    templates: Path,
) -> None:
    body = wedge(templates)
    done = run_balancewatch(cli, "check")

    assert done.returncode == 1
    assert done.stderr.splitlines() == [refusal(body), "check failed: 1 problem"]


@SQLITE
def test_a_daemon_started_with_a_never_ending_template_refuses_to_start_with_one_line_per_problem(
    cli: Cli,  # noqa: F811
    templates: Path,
) -> None:
    body = wedge(templates)
    done = run_balancewatch(cli, "run")

    assert done.returncode == 78  # EX_CONFIG
    assert done.stderr.splitlines() == [
        refusal(body),
        "cannot start: the rules or templates have problems: 1 problem",
    ]


@SQLITE
def test_a_never_ending_template_is_refused_and_later_edits_sighup_and_sigterm_still_work(
    cli: Cli,  # noqa: F811
    templates: Path,
    engine: Engine,
) -> None:
    daemon = cli.start(reload__debounce="100ms")
    wait_until(lambda: status_row(engine) is not None, "the instance's status row")
    good = (templates / "low-balance" / "body.txt").read_text()

    saved = time.monotonic()
    body = wedge(templates)
    daemon.wait_log(f"reload refused: {refusal(body)}")
    assert time.monotonic() - saved < WITHIN
    wait_until(lambda: status_row(engine).reload_ok is False, "the refusal recorded for `status`")
    assert refusal(body) in status_row(engine).reload_error

    save(body, good + "\n-- sent by balancewatch\n")
    daemon.wait_log("reloaded (file ")
    wait_until(lambda: status_row(engine).reloads == 1, "the good edit recorded for `status`")
    assert status_row(engine).reload_ok is True

    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: rules and templates unchanged")

    asked = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - asked < WITHIN
    assert "Traceback" not in daemon.log


# --- a reload that removes rules says so ---------------------------------------------------------------

TWO_RULES = """\
alerts:
  - id: low
    accounts: {currency: USD}
    below: [100]
    template: low-balance
  - id: empty
    exhausted: true
    template: low-balance
"""


def reloader_over(rules_dir: Path, live: LiveSet) -> Reloader:
    """A reloader of ``rules_dir`` and the shipped templates, checked by ``reload_now`` only."""
    return Reloader(rules_dir, shipped.templates_dir(), live, lambda _new: None)


def test_a_rule_file_cut_short_at_a_line_boundary_reloads_with_a_warning_naming_the_rules_it_lost(
    rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = rules_dir / "rules.yaml"
    path.write_text(TWO_RULES)
    reloader = reloader_over(rules_dir, load_set(rules_dir, shipped.templates_dir()))
    path.write_text(TWO_RULES.split("  - id: empty")[0])  # still valid YAML: one rule fewer

    with caplog.at_level(logging.WARNING, logger="balancewatch.runtime.reload"):
        status = reloader.reload_now("SIGHUP")

    assert (status.ok, status.rules) == (True, 1)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"reload (SIGHUP) removes rules: empty (in {path}, which no longer defines them)")
    ]


def test_a_removed_rule_file_reloads_with_a_warning_naming_each_rule_it_held(
    rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (rules_dir / "rules.yaml").write_text(
        TWO_RULES.replace("id: low", "id: kept").replace("id: empty", "id: also-kept")
    )
    extra = rules_dir / "extra.yaml"
    extra.write_text(TWO_RULES)
    reloader = reloader_over(rules_dir, load_set(rules_dir, shipped.templates_dir()))
    extra.unlink()

    with caplog.at_level(logging.WARNING, logger="balancewatch.runtime.reload"):
        reloader.reload_now("SIGHUP")

    assert [r.getMessage() for r in caplog.records] == [
        f"reload (SIGHUP) removes rules: low, empty (in {extra}, now gone)"
    ]


def test_a_reload_that_keeps_every_rule_warns_about_nothing(
    rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = rules_dir / "rules.yaml"
    path.write_text(TWO_RULES)
    reloader = reloader_over(rules_dir, load_set(rules_dir, shipped.templates_dir()))
    path.write_text(TWO_RULES.replace("below: [100]", "below: [250, 100]"))

    with caplog.at_level(logging.WARNING, logger="balancewatch.runtime.reload"):
        assert reloader.reload_now("SIGHUP").reloads == 1
    assert caplog.records == []
