"""The report benchmark runs: at a tiny size, only to prove it works (its figures mean nothing here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_reports


def test_the_report_benchmark_runs_and_prints_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    code = bench_reports.main(
        [
            "--accounts",
            "60",
            "--per-day",
            "1",
            "--repeat",
            "1",
            "--dir",
            str(tmp_path / "bench"),
            "--json",
            str(result),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for label in (
        "monthly usage report, every account",
        "floor: the grouped query alone",
        "ratio, elapsed",
        "emails per second, overall",
        "peak RSS of the daemon",
    ):
        assert re.search(rf"^{re.escape(label)}\s+\d", out, re.MULTILINE), out
    figures = json.loads(result.read_text())
    assert figures["sent"] + figures["skipped"] == 60 and figures["failed"] == 0
    assert figures["zones"] == 4
    assert not (tmp_path / "bench" / "balancewatch.db").exists()
