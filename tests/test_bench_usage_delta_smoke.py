"""The incremental usage benchmark runs at a tiny size: every refresh after the first reads
changes only, and the summary it leaves equals a full refresh (its timings mean nothing here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_usage_delta
from tests.conftest import PG_URL


def test_the_incremental_usage_benchmark_runs_and_matches_a_full_refresh(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    args = ["--accounts", "120", "--repeat", "2", "--dir", str(tmp_path / "bench"), "--json", str(result)]
    code = bench_usage_delta.main([*args, "--backend", backend, "--pg-url", PG_URL])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^refresh after an hour of new usage .*(MEETS|MISSES)$", out, re.MULTILINE), out
    figures = json.loads(result.read_text())
    assert figures["equal"] is True and figures["differing"] == 0, out
    assert all(n > 0 for n in figures["new_entries"]), figures
    assert figures["summary_rows"] > 0
