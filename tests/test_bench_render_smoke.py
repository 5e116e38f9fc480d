"""The render budget benchmark runs: at a tiny size, only to prove it works (its figures mean nothing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_render


def test_the_render_benchmark_runs_and_prints_both_ways_and_their_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    code = bench_render.main(["--messages", "40", "--rounds", "2", "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^  without the budget .* \d+\.\d µs/message \(CPU\)$", out, re.MULTILINE), out
    assert re.search(r"^  with the budget .* \d+\.\d µs/message \(CPU\)$", out, re.MULTILINE), out
    assert re.search(r"^  ratio .* \d+\.\d{3}x", out, re.MULTILINE), out
    figures = json.loads(result.read_text())
    assert (figures["messages"], figures["rounds"]) == (40, 2)
    assert figures["with_us"] > 0 and figures["without_us"] > 0
