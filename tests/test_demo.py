"""`balancewatch demo`: the real pipeline on SQLite with simulated usage, mail in .eml files."""

from __future__ import annotations

import email
import email.policy
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
    first = email.message_from_bytes(mail[0].read_bytes(), policy=email.policy.default)
    assert first.get_content_type() == "multipart/alternative"
    assert elapsed < 60, f"the demo took {elapsed:.1f}s"


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
