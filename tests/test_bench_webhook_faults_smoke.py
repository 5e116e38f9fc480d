"""The webhook fault drill runs, at a tiny size, and even there loses nothing on either channel.

A real daemon killed with SIGKILL while it emails the owner and POSTs each alert to a webhook
receiver that verifies every signature; every duplicate must be the same event.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from balancewatch.deliver.registry import DEDUPLICATED_EVERY
from tests.bench import bench_webhook_faults

ALERTS = 20


@pytest.mark.slow
def test_the_webhook_fault_drill_loses_nothing_and_every_duplicate_is_the_same_signed_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "figures.json"
    argv = ["--alerts", str(ALERTS), "--kills", "2", "--hook-delay", "0.05", "--backends", "sqlite"]
    code = bench_webhook_faults.main([*argv, "--dir", str(tmp_path / "drill"), "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"taken up within \d+ s: MEETS$", out, re.MULTILINE), out
    (drill,) = json.loads(result.read_text())["drills"]
    for side in (drill["email"], drill["webhook"]):
        assert (side["lost"], side["decided_twice"], side["distinct"]) == (0, 0, ALERTS), drill
    assert drill["email"]["duplicated"] <= drill["kills"], drill
    assert drill["webhook"]["duplicated"] <= drill["kills"] * DEDUPLICATED_EVERY, drill
    assert (drill["unverified"], drill["mismatched"], drill["unknown_ids"]) == (0, 0, 0), drill
    assert drill["tracebacks"] == 0, drill
    assert drill["takeover_s"] < 60, drill  # a lease is 300 s
