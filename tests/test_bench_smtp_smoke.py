"""The SMTP delivery benchmark runs: at a tiny size, only to prove it works (its figures mean nothing
here): every email arrives at the server exactly once, To its recipient alone, on both sides and both
databases, and the ratio is printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bench import bench_smtp
from tests.conftest import PG_URL, require_postgres


@pytest.fixture(autouse=True)
def bounded_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery round that does not end fails within half a minute with what its last call did,
    instead of running until the test's timeout."""
    monkeypatch.setattr(bench_smtp, "DAEMON_DEADLINE", 30.0)


def run(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    """Run the benchmark at 20 emails, one round, on ``backend``; check what it printed and return
    its one run's figures."""
    result = tmp_path / "figures.json"
    args = ["--count", "20", "--repeat", "1", "--backend", backend, "--pg-url", PG_URL, *extra]
    code = bench_smtp.main([*args, "--dir", str(tmp_path / "bench"), "--json", str(result)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^  \(a\) floor: .* \d[\d,]* emails/s$", out, re.MULTILINE), out
    assert re.search(r"^  \(b\) balancewatch: .* \d[\d,]* emails/s$", out, re.MULTILINE), out
    ratio = r"^  ratio \(b\)/\(a\) +\d+\.\d%   target >= 60%: (MEETS|MISSES)$"
    assert re.search(ratio, out, re.MULTILINE), out
    assert "every email arrived once per round, To its recipient alone, every row sent: yes" in out
    (run,) = json.loads(result.read_text())["runs"]
    assert (run["backend"], run["count"], run["delivered"]) == (backend, 20, True), run
    assert len(run["floor_rates"]) == len(run["daemon_rates"]) == 1
    assert set(run["steps"]) == {"build", "smtp", "record", "batch", "claim", "total"}
    assert not (tmp_path / "bench" / "balancewatch.db").exists()
    return dict(run)


def test_the_smtp_benchmark_delivers_every_email_once_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_ = run("sqlite", tmp_path, capsys, "--profile", "5")
    assert "Ordered by: cumulative time" in str(run_["profile"])


@pytest.mark.postgres
def test_the_smtp_benchmark_delivers_every_email_once_on_postgres(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_postgres()
    assert run("postgres", tmp_path, capsys)["profile"] == ""


def test_a_message_sent_twice_or_naming_another_recipient_fails_the_check() -> None:
    def mail(to: str, header_to: str, message_id: str) -> bench_smtp.Received:
        data = f"From: a@x.example\r\nTo: {header_to}\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n"
        return bench_smtp.Received("a@x.example", (to,), data.encode())

    expected = {("o@x.example", "<1@x>"), ("p@x.example", "<2@x>")}
    good = [mail("o@x.example", "o@x.example", "<1@x>"), mail("p@x.example", "p@x.example", "<2@x>")]
    assert bench_smtp.received_well(good, expected)
    assert not bench_smtp.received_well([*good, good[0]], expected)
    assert not bench_smtp.received_well(good[:1], expected)
    assert not bench_smtp.received_well(
        [good[0], mail("p@x.example", "o@x.example, p@x.example", "<2@x>")], expected
    )
