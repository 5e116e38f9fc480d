"""`balancewatch demo` on the configured rules, templates and settings, never the configured
database or transport. Every demo here runs one simulated day (``--days 1``, about 2 s)."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import socket
import sqlite3
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.core import shipped
from balancewatch.runtime.loadset import load_set

MARKER = "EDITED-TEMPLATE-7f3a"
TEMPLATE = "low-balance"


def _edited_templates(tmp_path: Path) -> Path:
    """A copy of the shipped templates with MARKER added to low-balance's text and HTML bodies."""
    templates = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    text = templates / TEMPLATE / "body.txt"
    text.write_text(text.read_text() + f"\n{MARKER}\n")
    html = templates / TEMPLATE / "body.html"
    body = html.read_text()
    assert "{% block content %}" in body  # outside a block an extending template's text is dropped
    html.write_text(body.replace("{% block content %}", f"{{% block content %}}<p>{MARKER}</p>", 1))
    return templates


def _demo(
    directory: Path, capsys: pytest.CaptureFixture[str], *options: str, environ: dict[str, str] | None = None
) -> tuple[int, str, str]:
    status = main([*options, "demo", "--dir", str(directory), "--days", "1"], environ=environ or {})
    out, err = capsys.readouterr()
    return status, out, err


def _emails(directory: Path) -> dict[str, email.message.EmailMessage]:
    """The demo's .eml files by Message-ID."""
    messages = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((directory / "mail").glob("*.eml"))
    ]
    return {str(m["Message-ID"]): m for m in messages}


def _made_from(directory: Path, templates: Path, template: str) -> set[str]:
    """The Message-IDs of the demo's emails rendered from ``template``, per the outbox and the rules."""
    rules = {r.id: r for r in load_set(shipped.rules_dir(), templates).rules}
    with sqlite3.connect(directory / "balancewatch.db") as db:
        rows = db.execute("SELECT message_id, rule_id, kind FROM outbox").fetchall()
    out = set()
    for message_id, rule_id, kind in rows:
        rule = rules.get(rule_id)
        used = None if rule is None else {"restored": rule.restored_template}.get(kind, rule.template)
        if kind in ("alert", "reminder", "restored") and used == template:
            out.add(message_id)
    return out


@pytest.mark.parametrize("given_by", ["config", "environment"])
def test_every_email_made_from_an_edited_template_shows_the_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given_by: str
) -> None:
    templates = _edited_templates(tmp_path)
    if given_by == "config":
        config = tmp_path / "config.yaml"
        config.write_text(f"# the templates being edited\ntemplates_dir: {templates}\n")
        status, out, err = _demo(tmp_path / "demo", capsys, "--config", str(config))
        assert f"config: {config}\n" in out
        assert f"templates: {templates} ({config}:2)\n" in out
    else:
        environ = {"BALANCEWATCH_TEMPLATES_DIR": str(templates)}
        status, out, err = _demo(tmp_path / "demo", capsys, environ=environ)
        assert f"templates: {templates} (environment BALANCEWATCH_TEMPLATES_DIR)\n" in out
    assert status == 0, err
    assert f"rules: {shipped.rules_dir()} (shipped)\n" in out
    emails = _emails(tmp_path / "demo")
    edited = _made_from(tmp_path / "demo", templates, TEMPLATE)
    assert len(edited) > 10 and edited <= set(emails)
    for message_id, message in emails.items():
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        assert text is not None and html is not None
        shows = [MARKER in part.get_content() for part in (text, html)]
        # The edited template's emails all show it, text and HTML; the others (reports) never.
        assert shows == [message_id in edited] * 2, (message_id, message["Subject"])


def test_a_broken_template_is_listed_as_check_lists_it_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = _edited_templates(tmp_path)
    body = templates / TEMPLATE / "body.txt"
    lines = body.read_text().splitlines(keepends=True)
    body.write_text("".join([lines[0], "{{ account.name + }}\n", *lines[1:]]))
    config = tmp_path / "config.yaml"
    config.write_text(f"templates_dir: {templates}\n")

    status, out, err = _demo(tmp_path / "demo", capsys, "--config", str(config))

    assert status == 1
    assert "Traceback" not in err and out == ""
    problems = err.splitlines()[:-1]
    assert problems and all(re.match(rf"{re.escape(str(body))}:2: ", p) for p in problems), err
    assert err.splitlines()[-1].startswith("demo not run: the rules or templates have problems")
    assert not (tmp_path / "demo").exists()
    assert main(["--config", str(config), "check"], environ={}) == 1
    assert capsys.readouterr().err.splitlines()[:-1] == problems


def test_a_configured_smtp_server_and_postgresql_database_are_never_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database:\n  url: postgresql://balancewatch:secret@127.0.0.1:{port}/production\n"
        f"smtp:\n  host: 127.0.0.1\n  port: {port}\n  security: none\n"
        'delivery:\n  transport: smtp\n  from: "Billing <billing@configured.example>"\n'
        "  reply_to: help@configured.example\n"
    )
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"the demo connected to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)

    status, out, err = _demo(tmp_path / "demo", capsys, "--config", str(config))

    assert status == 0, err
    assert attempts == []
    demo = tmp_path / "demo"
    assert f"database and mail: the demo's own, never the configured ones: {demo / 'balancewatch.db'}" in out
    written = int(re.search(r"emails written: (\d+)", out).group(1))  # type: ignore[union-attr]
    emails = _emails(demo)
    assert written == len(emails) > 10
    # The configured email settings are kept: only the database and the transport are the demo's.
    assert {str(m["From"]) for m in emails.values()} == {"Billing <billing@configured.example>"}
    assert {str(m["Reply-To"]) for m in emails.values()} == {"help@configured.example"}
    with sqlite3.connect(demo / "balancewatch.db") as db:
        assert db.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone() == (written,)


def test_the_demo_refuses_a_directory_holding_the_templates(tmp_path: Path) -> None:
    templates = tmp_path / "demo" / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    environ = {"BALANCEWATCH_TEMPLATES_DIR": str(templates)}
    with pytest.raises(SystemExit, match="overlap"):
        main(["demo", "--dir", str(tmp_path / "demo")], environ=environ)
    assert (templates / TEMPLATE / "body.txt").is_file()


def test_the_demo_takes_at_least_one_day(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--days", "0"], environ={}) == 2
    assert "at least 1" in capsys.readouterr().err
