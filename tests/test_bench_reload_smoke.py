"""The reload benchmark runs: at a tiny size, only to prove it works (its figures mean nothing here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_reload


def test_the_reload_benchmark_runs_and_prints_p50_p99_and_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    code = bench_reload.main(
        [
            "--files",
            "5",
            "--edits",
            "3",
            "--debounce",
            "50ms",
            "--dir",
            str(tmp_path / "bench"),
            "--json",
            str(result),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^  p50 \d+ ms, p99 \d+ ms", out, re.MULTILINE), out
    assert re.search(r"^p99 <= debounce \+ 250 ms = 300 ms: (MEETS|MISSES)$", out, re.MULTILINE), out
    figures = json.loads(result.read_text())
    assert (figures["files"], figures["edits"], figures["debounce_s"]) == (5, 3, 0.05)
    assert figures["p50_s"] >= 0.05  # nothing goes live before the quiet period is over
