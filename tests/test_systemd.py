"""The shipped systemd unit is valid and validates before it reloads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "balancewatch.service"
INSTALLED = "/opt/balancewatch/bin/balancewatch"


def _lines(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(key + "=")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # Point ExecStart at this environment's balancewatch, as an install would.
    executable = Path(sys.executable).with_name("balancewatch")
    unit = tmp_path / "balancewatch.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(executable)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_reload_runs_check_before_signalling_the_daemon() -> None:
    reloads = _lines("ExecReload")
    assert reloads[0].endswith("balancewatch check")
    assert reloads[1] == "/bin/kill -HUP $MAINPID"


def test_the_unit_waits_for_readiness_and_lets_a_batch_finish_on_stop() -> None:
    assert _lines("Type") == ["notify"]
    assert _lines("KillSignal") == ["SIGTERM"]
    assert _lines("StateDirectory") == ["balancewatch"]
