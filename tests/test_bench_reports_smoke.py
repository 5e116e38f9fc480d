"""The report benchmark runs: at a tiny size, only to prove it works (its figures mean nothing here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.bench import bench_reports

LABELS = (
    "monthly usage report, every account",
    "floor: the grouped query alone",
    "ratio, elapsed",
    "peak RSS of the daemon",
)


def run(tmp_path: Path, *more: str) -> dict[str, Any]:
    """Run the benchmark at 60 accounts with ``more`` options; its figures."""
    result = tmp_path / "figures.json"
    args = ["--accounts", "60", "--per-day", "1", "--repeat", "1", "--dir", str(tmp_path / "bench")]
    code = bench_reports.main([*args, "--json", str(result), *more])
    assert code == 0
    figures = json.loads(result.read_text())
    assert not (tmp_path / "bench" / "balancewatch.db").exists()
    return figures


def test_the_report_benchmark_runs_and_prints_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = run(tmp_path, "--processes", "0")
    out = capsys.readouterr().out
    for label in LABELS:
        assert re.search(rf"^{re.escape(label)}\s+\d", out, re.MULTILINE), out
    assert re.search(r"^emails per second, overall\s+\d+\s+target >= 600: (MEETS|MISSES)$", out, re.MULTILINE)
    assert figures["sent"] + figures["skipped"] == 60 and figures["failed"] == 0
    assert figures["zones"] == 4
    assert figures["twice"] == 0 and figures["missed"] == 0


def test_two_instances_with_worker_processes_split_the_accounts_and_send_each_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = run(
        tmp_path, "--instances", "2", "--processes", "2", "--batch-size", "10", "--parallel-min", "5"
    )
    out = capsys.readouterr().out
    for worker in ("bench-1", "bench-2"):
        assert re.search(rf"^  {worker}:\s+[\d.]+% of the accounts", out, re.MULTILINE), out
    assert "every account once: " in out
    assert figures["sent"] + figures["skipped"] == 60 and figures["failed"] == 0
    assert figures["twice"] == 0 and figures["missed"] == 0
    assert abs(sum(figures["shares"].values()) - 1) < 1e-9
    assert figures["render_s"] > 0
