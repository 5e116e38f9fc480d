"""The evaluation benchmark runs: at a tiny size, only to prove it works (its figures mean nothing here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bench import bench_evaluate


def test_the_benchmark_runs_and_prints_the_three_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    code = bench_evaluate.main(
        ["--accounts", "2000", "--repeat", "1", "--dir", str(tmp_path / "bench"), "--json", str(result)]
    )
    out = capsys.readouterr().out
    assert code == 0
    for label in (
        "first sweep, fires every alert",
        "(a) full sweep",
        "(b) poll after changes",
        "(c) peak RSS",
    ):
        assert re.search(rf"^{re.escape(label)}.*(MEETS|MISSES)$", out, re.MULTILINE), out
    assert re.search(r"^first sweep: finding .* loading, deciding and writing", out, re.MULTILINE)
    rendered = re.search(r"^  then the render stage: ([\d,]+) messages in ", out, re.MULTILINE)
    decided = re.search(r"^first sweep \(fires the initial alerts\): .* ([\d,]+) notifications$", out, re.M)
    assert rendered and decided and rendered.group(1) == decided.group(1) != "0", out
    assert result.is_file()
    assert not (tmp_path / "bench" / "balancewatch.db").exists()
