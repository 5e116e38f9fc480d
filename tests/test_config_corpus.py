"""A corpus of invalid configurations (tests/invalid_configs/), each with what `check` and `run` print.

A case is a directory holding ``config.yaml``, optionally ``env`` (``NAME=value`` lines,
``{dir}`` standing for the case's directory) and ``expected.txt``: the problem lines, paths
relative to the case. Every case is copied to a temporary directory and run through
``balancewatch check`` and ``balancewatch run --once``; each must exit 1 printing exactly
those lines and a count, and ``run`` must refuse before it creates a database.

Cases that need permissions a root test run does not have (unreadable files, directories
that cannot be written) are listed in AS_NOBODY with their setup, and run as real processes
as the user nobody.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from balancewatch.cli import main

CORPUS = Path(__file__).resolve().parent / "invalid_configs"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())
AS_NOBODY_COMMAND = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


@dataclass(frozen=True)
class Setup:
    """Permissions a case needs, applied to its copy: ``writable`` directories are made (mode
    777) so nobody can write them; ``unreadable`` paths get mode 000."""

    writable: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()


AS_NOBODY = {
    "50-config-unreadable": Setup(unreadable=("config.yaml",)),
    "51-state-dir-not-writable": Setup(),  # the copy is root's: nobody cannot create state/ in it
    "52-files-dir-not-writable": Setup(writable=("writable-state",)),
    "53-sqlite-dir-not-writable": Setup(writable=("writable-state",)),
    "54-rules-dir-unreadable": Setup(writable=("writable-state",), unreadable=("rules",)),
    "55-rule-file-unreadable": Setup(writable=("writable-state",), unreadable=("rules/rules.yaml",)),
    "56-templates-dir-unreadable": Setup(writable=("writable-state",), unreadable=("templates",)),
    "57-a-template-unreadable": Setup(writable=("writable-state",), unreadable=("templates/low",)),
    "58-template-file-unreadable": Setup(
        writable=("writable-state",), unreadable=("templates/low/subject.txt",)
    ),
}
ROOT_CASES = [c for c in CASES if c.name not in AS_NOBODY]
NOBODY_CASES = [c for c in CASES if c.name in AS_NOBODY]
SUMMARY = {
    "check": re.compile(r"^(config|check failed): (?P<n>\d+) problems?$"),
    "run": re.compile(
        r"^cannot start: the (config has|rules or templates have) problems: (?P<n>\d+) problems?$"
    ),
}


def expected(case: Path) -> list[str]:
    return (case / "expected.txt").read_text(encoding="utf-8").splitlines()


def case_environ(copy: Path) -> dict[str, str]:
    env_file = copy / "env"
    if not env_file.is_file():
        return {}
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if line.strip())
    return {name: value.replace("{dir}", str(copy)) for name, value in pairs}


def relative(text: str, copy: Path) -> str:
    """``text`` with the copy's absolute path taken out, as ``expected.txt`` writes paths."""
    return text.replace(f"{copy}{os.sep}", "")


def assert_refused(command: str, code: int, out: str, err: str, case: Path, copy: Path) -> None:
    """Exit 1 (`run`: 78, EX_CONFIG, so systemd does not restart it), nothing on stdout, exactly the
    expected problems then their count, no traceback."""
    assert "Traceback" not in err
    assert (code, out) == (78 if command == "run" else 1, "")
    *problems, summary = relative(err, copy).splitlines()
    assert problems == expected(case)
    counted = SUMMARY[command].match(summary)
    assert counted, summary
    assert int(counted["n"]) == len(problems)


def argv(copy: Path, command: str) -> list[str]:
    return ["--config", str(copy / "config.yaml"), *(["check"] if command == "check" else ["run", "--once"])]


@pytest.fixture
def signals_kept() -> Iterator[None]:
    """The CLI sets logging, and ``run`` SIGTERM and SIGINT handlers, for the whole process: put
    pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    root.handlers[:], root.level = handlers, level
    for number, handler in kept.items():
        signal.signal(number, handler)


def test_the_corpus_has_at_least_thirty_five_cases_each_with_a_config_and_expected_output() -> None:
    assert len(CASES) >= 35
    incomplete = [
        c.name for c in CASES if not ((c / "config.yaml").is_file() and (c / "expected.txt").is_file())
    ]
    assert incomplete == []
    assert all(expected(c) for c in CASES), "every case expects at least one problem"


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", ROOT_CASES, ids=lambda c: c.name)
def test_check_and_run_print_exactly_the_expected_problems_and_exit_1(
    case: Path,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    signals_kept: None,
) -> None:
    copy = tmp_path / case.name
    shutil.copytree(case, copy)
    code = main(argv(copy, command), case_environ(copy))
    out, err = capsys.readouterr()
    assert_refused(command, code, out, err, case, copy)
    assert not (copy / "state" / "balancewatch.db").exists(), "refused before any database is opened"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the user nobody can reach (pytest's own tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="bw-corpus-"))
    path.chmod(0o755)
    yield path
    for inner in path.rglob("*"):
        if not inner.is_symlink():
            inner.chmod(0o700 if inner.is_dir() else 0o600)
    shutil.rmtree(path)


def run_as_nobody(copy: Path, args: list[str], extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m balancewatch ARGS`` as the unprivileged user nobody, in ``copy``."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(copy)}
    return subprocess.run(
        [*AS_NOBODY_COMMAND, sys.executable, "-m", "balancewatch", *args],
        env={**env, **extra_env},
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def prepared(case: Path, parent: Path) -> Path:
    copy = parent / case.name
    shutil.copytree(case, copy)
    for inner in [copy, *copy.rglob("*")]:
        inner.chmod(0o755 if inner.is_dir() else 0o644)
    setup = AS_NOBODY[case.name]
    for name in setup.writable:
        (copy / name).mkdir(exist_ok=True)
        (copy / name).chmod(0o777)
    # Deepest first: a file is made unreadable before the directory above it closes.
    for name in sorted(setup.unreadable, key=len, reverse=True):
        (copy / name).chmod(0o000)
    return copy


def in_child_as_nobody(copy: Path, args: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """``main(args)`` in a forked child that has become the user nobody: exit code, stdout, stderr.

    The parent waits at most CHILD_DEADLINE seconds, then kills the child and fails."""
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 70
            try:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                os.chdir(copy)
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(args, environ)
                out.flush()
                err.flush()
            finally:
                os._exit(code)
        code = wait_for_child(pid)
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


CHILD_DEADLINE = 60.0


def wait_for_child(pid: int) -> int:
    """The child's exit code, waiting on its pidfd (an event, not a poll) for at most CHILD_DEADLINE."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], CHILD_DEADLINE)
    finally:
        os.close(pidfd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the child did not finish within {CHILD_DEADLINE}s")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root (to become nobody) and setpriv"
)


@NEEDS_ROOT
@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", NOBODY_CASES, ids=lambda c: c.name)
def test_what_the_service_user_cannot_read_or_write_is_one_line_naming_the_path(
    case: Path, command: str, shared_dir: Path
) -> None:
    copy = prepared(case, shared_dir)
    code, out, err = in_child_as_nobody(copy, argv(copy, command), case_environ(copy))
    assert_refused(command, code, out, err, case, copy)
    assert not (copy / "writable-state" / "balancewatch.db").exists(), "refused before any database is opened"


@NEEDS_ROOT
@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("50-config-unreadable", "check"),
        ("53-sqlite-dir-not-writable", "run"),
        ("57-a-template-unreadable", "run"),
    ],
)
def test_a_real_process_run_as_nobody_prints_the_problem_and_no_traceback(
    name: str, command: str, shared_dir: Path
) -> None:
    case = CORPUS / name
    copy = prepared(case, shared_dir)
    done = run_as_nobody(copy, argv(copy, command), case_environ(copy))
    assert_refused(command, done.returncode, done.stdout, done.stderr, case, copy)


@pytest.mark.parametrize("name", ["01-not-valid-yaml", "31-env-misspelt-section-key"])
def test_a_real_check_process_prints_the_problems_and_no_traceback(name: str, tmp_path: Path) -> None:
    case = CORPUS / name
    copy = tmp_path / name
    shutil.copytree(case, copy)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **case_environ(copy)}
    done = subprocess.run(
        [sys.executable, "-m", "balancewatch", *argv(copy, "check")],
        env=env,
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_refused("check", done.returncode, done.stdout, done.stderr, case, copy)


def test_a_database_password_never_shows_in_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "case"
    shutil.copytree(CORPUS / "26-mysql-database", copy)
    assert main(argv(copy, "check"), {}) == 1
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err
    assert "mysql://balancewatch:***@db.example/balances" in err
