"""CI must prove both backends: under CI=true an unreachable PostgreSQL fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
def test_uses_the_database(engine):
    assert engine is not None
"""


def _run_probe(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "CI": ci, "BALANCEWATCH_TEST_PG": "postgresql://postgres@127.0.0.1:1/nowhere"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.conftest",
        "-p",
        "no:xdist",
        "-p",
        "no:cacheprovider",
        "-q",
        "-o",
        "addopts=",
        "--rootdir",
        str(tmp_path),
        str(probe),
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("ci", "verdict"), [("true", "1 failed"), ("", "1 skipped")])
def test_an_unreachable_postgresql_fails_under_ci_and_is_skipped_elsewhere(
    tmp_path: Path, ci: str, verdict: str
) -> None:
    result = _run_probe(tmp_path, ci)
    assert verdict in result.stdout, result.stdout + result.stderr
    assert "1 passed" in result.stdout  # the SQLite half ran either way
    if ci:
        assert "CI=true: PostgreSQL tests must run" in result.stdout
        assert result.returncode == 1
    else:
        assert result.returncode == 0
