"""The webhook delivery benchmark runs: at a tiny size, only to prove it works (its figures mean nothing
here): every event arrives at the receiver, signed, on both sides, and the ratio is printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_webhook
from tests.conftest import PG_URL, require_postgres


def test_the_webhook_benchmark_delivers_every_row_and_prints_the_ratio(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if backend == "postgres":
        require_postgres()
    result = tmp_path / "figures.json"
    args = ["--count", "30", "--rounds", "1", "--backend", backend, "--pg-url", PG_URL]
    profile = ["--profile", "5"] if backend == "sqlite" else []
    code = bench_webhook.main([*args, *profile, "--dir", str(tmp_path / "bench"), "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^  \(a\) floor: .* \d[\d,]* deliveries/s$", out, re.MULTILINE), out
    assert re.search(r"^  \(b\) balancewatch: .* \d[\d,]* deliveries/s$", out, re.MULTILINE), out
    ratio = r"^  ratio \(b\)/\(a\) +\d+\.\d%   target >= 60%: (MEETS|MISSES)$"
    assert re.search(ratio, out, re.MULTILINE), out
    (run,) = json.loads(result.read_text())["runs"]
    assert (run["backend"], run["count"], run["delivered"]) == (backend, 30, True), run
    assert len(run["floor_rates"]) == len(run["daemon_rates"]) == 1
    assert run["ratio"] > 0 and set(run["steps"]) == {"post", "record", "batch", "claim", "total"}
    assert ("Ordered by: cumulative time" in run["profile"]) == (backend == "sqlite")
    assert not (tmp_path / "bench" / "balancewatch.db").exists()
