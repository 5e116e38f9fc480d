"""The fault drill runs, at a tiny size, and even there loses nothing and decides nothing twice.

Real daemons killed with SIGKILL, a private PostgreSQL stopped and started, two instances on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_faults
from tests.conftest import require_postgres


@pytest.mark.postgres
@pytest.mark.slow
def test_the_fault_drill_loses_nothing_decides_nothing_twice_and_prints_its_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_postgres()
    result = tmp_path / "figures.json"
    argv = ["--alerts", "30", "--kills", "2", "--outage", "1", "--storm-backends", "sqlite"]
    code = bench_faults.main([*argv, "--dir", str(tmp_path / "drill"), "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0
    assert len(re.findall(r"taken up within \d+ s: (MEETS|MISSES)$", out, re.MULTILINE)) == 3, out
    drills = json.loads(result.read_text())["drills"]
    assert [d["drill"] for d in drills] == ["storm", "db-restart", "two-instances"]
    for drill in drills:
        assert (drill["lost"], drill["decided_twice"], drill["distinct"]) == (0, 0, 30), drill
        assert drill["duplicated"] <= drill["faults"], drill
        assert drill["tracebacks"] == 0, drill
        assert drill["takeover_s"] < 60, drill  # a lease is 300 s
    restart = drills[1]
    assert 1 <= restart["database_warnings"] <= 2, restart
    assert set(drills[2]["sent_by"]) <= {"drill-a", "drill-b"}
