"""The ADU benchmark runs: at a tiny size, only to prove it works (its figures mean nothing here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_usage
from tests.conftest import PG_URL


def test_the_usage_benchmark_runs_and_prints_its_figures(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    args = ["--accounts", "150", "--repeat", "1", "--dir", str(tmp_path / "bench"), "--json", str(result)]
    code = bench_usage.main([*args, "--backend", backend, "--pg-url", PG_URL])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^\(a\) full refresh, 30-day window .*(MEETS|MISSES)$", out, re.MULTILINE), out
    assert re.search(r"^\(b\) peak RSS of the daemon\s+\d+MB", out, re.MULTILINE), out
    figures = json.loads(result.read_text())
    # The refresh's scan groups as the floor does; every balance got its summary row.
    assert figures["query_rows"] == figures["floor_rows"] > 0
    assert figures["refresh_rows"] >= figures["statuses"].get("ok", 0) > 0
    assert figures["statuses"].get("ok", 0) > 0
    assert not (tmp_path / "bench" / "balancewatch.db").exists()
