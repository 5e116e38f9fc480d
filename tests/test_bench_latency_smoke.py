"""The alert-latency benchmark runs, at a tiny size: every email arrives and the table is printed.

Real daemons: polling every second on SQLite, push on PostgreSQL (the trigger ``db upgrade``
installs). No timing is asserted but one that only a broken push would miss: its p99 under 5 s,
where the poll interval it falls back to is 30 s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_latency
from tests.conftest import require_postgres


@pytest.mark.postgres
@pytest.mark.slow
def test_the_latency_benchmark_delivers_every_alert_and_prints_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_postgres()
    result = tmp_path / "figures.json"
    argv = ["--count", "20", "--span", "2", "--modes", "b,c", "--backends", "sqlite"]
    code = bench_latency.main([*argv, "--dir", str(tmp_path / "work"), "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^mode +backend +p50 +p99 +max +arrived$", out, re.MULTILINE), out
    assert re.search(r"^\(b\) .+ sqlite .+ 20/20$", out, re.MULTILINE), out
    assert re.search(r"^\(c\) .+ postgres .+ 20/20$", out, re.MULTILINE), out
    assert re.search(r"^push: p99 <= 1 s (MEETS|MISSES), p50 <= 250 ms (MEETS|MISSES)$", out, re.MULTILINE)
    runs = json.loads(result.read_text())["runs"]
    assert [(run["mode"], run["backend"]) for run in runs] == [("b", "sqlite"), ("c", "postgres")]
    for run in runs:
        assert (run["arrived"], run["duplicates"], run["tracebacks"]) == (20, 0, 0), run
        assert len(run["latencies"]) == 20
    assert runs[1]["p99_s"] < 5, runs[1]  # push, not the 30 s poll
