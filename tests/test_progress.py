"""The progress line of long commands: drawn in place on a terminal, throttled, closed by a summary;
nothing at all on a pipe or with --quiet. Time is passed in; nothing sleeps.

The commands are run for real on a pseudo-terminal, as an operator at a shell sees them.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.core import progress
from balancewatch.core.progress import CLEAR_TO_END, Progress
from balancewatch.store.db import make_engine, upgrade
from tests.reportkit import REPORT_TEMPLATES, account, usage

START = 1000.0
Invoke = Callable[..., tuple[int, str, str]]


class Terminal(io.StringIO):
    """A stream that says it is a terminal, keeping what was written."""

    def isatty(self) -> bool:
        return True


class Clock:
    """Seconds on a monotonic clock that the test moves."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def progress_on(stream: io.StringIO, total: int | None, **kwargs: object) -> tuple[Progress, Clock]:
    clock = Clock()
    return Progress("importing", total, stream=stream, clock=clock, noun="rows", **kwargs), clock  # type: ignore[arg-type]


def test_a_known_total_shows_done_of_total_the_rate_and_the_time_left() -> None:
    term = Terminal()
    shown, _ = progress_on(term, 1000)
    shown.advance(250, now=START + 1)
    assert term.getvalue() == f"\rimporting: 250/1,000 (25%), 250/s, 3s left{CLEAR_TO_END}"


def test_an_unknown_total_shows_the_count_and_the_rate_without_a_time_left() -> None:
    term = Terminal()
    shown, _ = progress_on(term, None)
    shown.update(1500, now=START + 2)
    assert term.getvalue() == f"\rimporting: 1,500, 750/s{CLEAR_TO_END}"


def test_the_line_is_redrawn_at_most_five_times_a_second() -> None:
    term = Terminal()
    shown, _ = progress_on(term, 100)
    for n in range(1, 33):  # one row every 1/16 s for two seconds
        shown.advance(1, now=START + n / 16)
    drawn = [line.split(",")[0] for line in term.getvalue().split("\r")[1:]]
    assert drawn == [f"importing: {n}/100 ({n}%)" for n in range(4, 33, 4)]  # every 4/16 s


def test_work_done_in_a_blink_shows_only_its_summary() -> None:
    term = Terminal()
    shown, clock = progress_on(term, 3)
    with shown:
        shown.advance(3, now=START + 0.05)
        clock.now = START + 0.05
    assert term.getvalue() == f"\rimporting: 3 rows in 0s (60/s){CLEAR_TO_END}\n"


def test_leaving_the_block_ends_the_line_with_a_summary() -> None:
    term = Terminal()
    shown, clock = progress_on(term, 1000)
    with shown:
        shown.advance(400, now=START + 1)
        shown.advance(600, now=START + 4)
        clock.now = START + 4
    lines = term.getvalue().split("\r")[1:]
    assert lines == [
        f"importing: 400/1,000 (40%), 400/s, 2s left{CLEAR_TO_END}",
        f"importing: 1,000/1,000 (100%), 250/s, 0s left{CLEAR_TO_END}",
        f"importing: 1,000 rows in 4s (250/s){CLEAR_TO_END}\n",
    ]


def test_an_error_erases_the_line_so_the_message_after_it_starts_clean() -> None:
    term = Terminal()
    shown, _ = progress_on(term, 10)
    with pytest.raises(RuntimeError), shown:
        shown.advance(5, now=START + 1)
        raise RuntimeError("boom")
    assert term.getvalue().endswith(f"\r{CLEAR_TO_END}")
    assert "\n" not in term.getvalue()


def test_a_log_line_written_meanwhile_starts_on_a_clean_line_and_the_progress_is_drawn_again_below(
    keep_logging: None,
) -> None:
    term = Terminal()
    handler = logging.StreamHandler(term)
    logging.getLogger().handlers[:] = [handler]
    shown, clock = progress_on(term, 10)
    with shown:
        shown.advance(5, now=START + 1)
        logging.getLogger("balancewatch.reports").warning("report r: account a failed")
        shown.advance(1, now=START + 1.01)
        clock.now = START + 2
    assert term.getvalue().split("\r")[1:] == [
        f"importing: 5/10 (50%), 5/s, 1s left{CLEAR_TO_END}",
        f"{CLEAR_TO_END}report r: account a failed\n",
        f"importing: 6/10 (60%), 6/s, 1s left{CLEAR_TO_END}",
        f"importing: 6 rows in 2s (3/s){CLEAR_TO_END}\n",
    ]
    assert handler.filters == []


@pytest.mark.parametrize(
    ("stream", "quiet"), [(io.StringIO(), False), (Terminal(), True)], ids=["pipe", "quiet"]
)
def test_it_writes_nothing_at_all_off_a_terminal_or_when_quiet(stream: io.StringIO, quiet: bool) -> None:
    shown, clock = progress_on(stream, 10, quiet=quiet)
    with shown:
        for second in range(1, 11):
            shown.advance(1, now=START + second)
        clock.now = START + 10
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(7.4, "7s"), (125, "2m05s"), (3720, "1h02m")], ids=["seconds", "minutes", "hours"]
)
def test_the_time_left_is_short(seconds: float, text: str) -> None:
    assert progress.duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"), [(999, "999 B"), (1500, "1.5 kB"), (2_500_000, "2.5 MB"), (7_000_000_000, "7.0 GB")]
)
def test_bytes_are_shown_in_the_largest_unit_that_fits(size: int, text: str) -> None:
    assert progress.size(size) == text


# --- the commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnTerminal:
    code: int
    out: str
    terminal: str


def run_on_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> OnTerminal:
    """Run ``balancewatch ARGV`` with stderr on a pseudo-terminal; return stdout and the terminal's text."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "balancewatch", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no end of output within {timeout}s: {seen!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                break
            if not chunk:
                break
            seen += chunk
        out, _ = process.communicate(timeout=timeout)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return OnTerminal(process.returncode, out.decode(), seen.decode())


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
    for systemd_var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
        environ.pop(systemd_var, None)
    environ.update(
        {
            "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
            "BALANCEWATCH_DATABASE__URL": f"sqlite:///{tmp_path / 'balancewatch.db'}",
            "BALANCEWATCH_LOG__LEVEL": "warning",
        }
    )
    return environ


@pytest.fixture
def keep_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str], keep_logging: None) -> Invoke:
    """``balancewatch ARGV`` in-process (stderr captured: not a terminal)."""

    def invoke(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv), env)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def ledger_csv(path: Path, rows: int) -> Path:
    lines = ["account,amount,service,quantity,reference"]
    lines += [f"acme,-0.01,sms,1,use-{n}" for n in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def add_acme(in_process: Invoke, env: dict[str, str]) -> None:
    added = in_process(env, "accounts", "add", "acme", "--name", "Acme", "--email", "o@acme.example")
    assert added[0] == 0, added


def test_ledger_import_on_a_terminal_shows_the_check_and_then_the_rows_imported(
    env: dict[str, str], tmp_path: Path, in_process: Invoke
) -> None:
    add_acme(in_process, env)
    csv = ledger_csv(tmp_path / "ledger.csv", 300)
    done = run_on_terminal(["ledger", "import", str(csv)], env)
    assert (done.code, done.out) == (0, "imported 300 entries; skipped 0 already in the ledger\n")
    lines = [line.rsplit("\r", 1)[-1] for line in done.terminal.split("\r\n") if line]
    assert [line.split(" in ")[0] for line in lines] == [
        f"checking ledger.csv: {progress.size(csv.stat().st_size)}",
        "importing: 300 rows",
    ]
    assert all(line.endswith(f"/s){CLEAR_TO_END}") for line in lines)


def test_ledger_import_quiet_or_off_a_terminal_writes_no_progress(
    env: dict[str, str], tmp_path: Path, in_process: Invoke
) -> None:
    add_acme(in_process, env)
    csv = ledger_csv(tmp_path / "ledger.csv", 5)
    quiet = run_on_terminal(["ledger", "import", "--quiet", str(csv)], env)
    assert (quiet.code, quiet.terminal) == (0, "")
    piped = in_process(env, "ledger", "import", str(csv))
    assert piped == (0, "imported 0 entries; skipped 5 already in the ledger\n", "")


def test_ledger_import_with_bad_rows_lists_the_problems_on_lines_of_their_own(
    env: dict[str, str], tmp_path: Path
) -> None:
    csv = ledger_csv(tmp_path / "ledger.csv", 3)  # no account acme
    done = run_on_terminal(["ledger", "import", str(csv)], env)
    assert done.code == 1
    assert done.terminal.split("\r\n") == [
        *(
            f"{csv}:{n}: account: no account 'acme' (add it with `balancewatch accounts add`)"
            for n in (2, 3, 4)
        ),
        "ledger import: nothing imported: 3 problems",
        "",
    ]


REPORTS = """
reports:
  - id: daily-usage
    schedule: daily at 08:00
    timezone: UTC
    contents: usage
"""


def test_report_run_on_a_terminal_counts_the_accounts_done(
    env: dict[str, str], tmp_path: Path, rules_dir: Path
) -> None:
    (rules_dir / "reports.yaml").write_text(REPORTS)
    env.update(
        {"BALANCEWATCH_RULES_DIR": str(rules_dir), "BALANCEWATCH_TEMPLATES_DIR": str(REPORT_TEMPLATES)}
    )
    engine = make_engine(env["BALANCEWATCH_DATABASE__URL"])
    upgrade(engine)
    for name in ("acme", "beta", "gamma"):
        account(engine, name)
    usage(engine, "acme", datetime(2025, 1, 15, 10, 0, tzinfo=UTC))
    engine.dispose()
    done = run_on_terminal(["report", "run", "daily-usage", "--period", "2025-01-15", "--dry-run"], env)
    assert done.code == 0, done
    assert "daily-usage 2025-01-15 (UTC): would send 1, skipped 2, failed 0, already done 0" in done.out
    [line] = [line.rsplit("\r", 1)[-1] for line in done.terminal.split("\r\n") if line]
    assert line.startswith("report daily-usage: 3 accounts in "), line
