"""`balancewatch demo`: the real pipeline on SQLite with simulated usage, mail in .eml files."""

from __future__ import annotations

import csv
import email
import email.message
import email.policy
import io
import re
import time
from pathlib import Path

import pytest

from balancewatch.cli import main


def _run_demo(directory: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["demo", "--dir", str(directory), *extra], environ={}) == 0
    return capsys.readouterr().out


def test_the_demo_writes_every_delivered_email_and_an_index(tmp_path: Path, capsys) -> None:
    started = time.monotonic()
    out = _run_demo(tmp_path / "demo", capsys)
    elapsed = time.monotonic() - started
    written = int(re.search(r"emails written: (\d+)", out).group(1))  # type: ignore[union-attr]
    mail = sorted((tmp_path / "demo" / "mail").glob("*.eml"))
    assert written == len(mail) > 20
    assert re.search(r"balancewatch demo: 50 accounts, 10 simulated days", out)
    for rule in ("default-ladder", "ladder-inr-eur", "exhausted"):
        assert re.search(rf"{rule}\s+\d+", out), f"no {rule} alerts in:\n{out}"
    index = (tmp_path / "demo" / "mail" / "index.html").read_text()
    assert index.count("<tr><td>") == len(mail)
    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in mail]
    alerts = [m for m in messages if m.get_content_type() == "multipart/alternative"]
    assert sum(_per_line(out, "notifications decided").values()) == len(alerts)
    # Every shipped report goes out in the ten days (the 1st of the month and a Monday fall in them),
    # each as many times as the summary says, with its CSV: one report per file, named after its id.
    reports = {m: _csv_of(m) for m in messages if m not in alerts}
    assert len(alerts) + len(reports) == len(mail)
    sent = _per_line(out, "reports sent")
    assert list(sent) == ["monthly-usage", "monthly-daywise", "weekly-transactions", "operators-low-balance"]
    for report_id, n in sent.items():
        assert n > 0, f"no {report_id} reports in:\n{out}"
        assert sum(name.startswith(f"{report_id}-") for name, _ in reports.values()) == n, report_id
    assert sent["operators-low-balance"] == 10  # one a day, at 08:00 UTC
    for message, (name, rows) in reports.items():
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        assert text is not None and html is not None and "<table" in html.get_content()
        assert rows, name
        if name.startswith("operators-low-balance-"):
            assert message["To"] == "ops@acme-cloud.example"
            assert rows[0].keys() >= {"account_id", "balance", "runway_days", "rules"}
        else:
            assert message["To"].endswith(".example") and message["To"].startswith("billing@")
    usage = next(rows for name, rows in reports.values() if name == "monthly-usage-usd-01-2026-02.csv")
    assert {(r["date"][:7], r["currency"]) for r in usage} == {("2026-02", "USD")}
    assert elapsed < 60, f"the demo took {elapsed:.1f}s"


def _per_line(out: str, title: str) -> dict[str, int]:
    """The "  name  count" lines under the summary's line starting with ``title``."""
    lines = iter(out.splitlines())
    next(line for line in lines if line.startswith(title))
    counts = {}
    for line in lines:
        if not line.startswith("  "):
            break
        name, count = line.split()[:2]
        counts[name] = int(count)
    return counts


def _csv_of(message: email.message.EmailMessage) -> tuple[str, list[dict[str, str]]]:
    """A report's one attachment: its file name and its rows, read with the csv module."""
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/csv"
    name = attachment.get_filename()
    assert name is not None and name.endswith(".csv")
    return name, list(csv.DictReader(io.StringIO(attachment.get_content(), newline="")))


def test_running_the_demo_again_starts_from_scratch(tmp_path: Path, capsys) -> None:
    first = _run_demo(tmp_path / "demo", capsys, "--days", "2")
    second = _run_demo(tmp_path / "demo", capsys, "--days", "2")
    assert re.search(r"emails written: \d+", first).group(0) == re.search(  # type: ignore[union-attr]
        r"emails written: \d+", second
    ).group(0)  # type: ignore[union-attr]


def test_the_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit, match="not made by `balancewatch demo`"):
        main(["demo", "--dir", str(precious)], environ={})
    assert (precious / "thesis.tex").exists()
