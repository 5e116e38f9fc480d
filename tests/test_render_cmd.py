"""``balancewatch render``: any template with any sample, one part of the email, offline."""

from __future__ import annotations

import email
import email.policy
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from balancewatch.core import shipped
from tests.helpers import account, all_states, outbox, post
from tests.test_cli import Cli, Result, base_env, cli, ok, run

__all__ = ["base_env", "cli", "run"]  # fixtures used by name


def copied_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), target)
    return target


def test_list_names_every_sample_of_each_use_of_the_template(run: Cli) -> None:
    out = ok(run("render", "low-balance", "--list"))
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names[:3] == ["crossed", "exhausted", "reminder"]
    assert {"in-jpy", "in-kwd", "in-inr-en-in", "in-eur-de-de", "long-name"} <= set(names)
    assert "first alert in JPY (no decimals)" in out


@pytest.mark.parametrize(
    ("sample", "shown"),
    [("in-jpy", "¥8,412"), ("in-kwd", "KWD"), ("in-inr-en-in", "₹84.12"), ("in-eur-de-de", "84,12")],
)
def test_each_currency_and_locale_sample_formats_money_its_own_way(run: Cli, sample: str, shown: str) -> None:
    assert shown in ok(run("render", "low-balance", "--sample", sample, "--part", "subject"))


def test_the_eml_part_is_the_message_a_mail_server_would_receive(run: Cli) -> None:
    subject = ok(run("render", "low-balance", "--sample", "long-name", "--part", "subject")).rstrip("\n")
    eml = ok(run("render", "low-balance", "--sample", "long-name", "--part", "eml"))
    message = email.message_from_string(eml, policy=email.policy.default)
    assert message["To"] == "billing@acme.example"
    assert message["Message-ID"] and message["Date"] and message["From"]
    assert message["Subject"] == subject
    kinds = [part.get_content_type() for part in message.walk()]
    assert kinds == ["multipart/alternative", "text/plain", "text/html"]
    html = ok(run("render", "low-balance", "--sample", "long-name", "--part", "html"))
    body = message.get_body(("html",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == html


def test_a_report_template_renders_its_report_samples(run: Cli) -> None:
    out = ok(run("render", "usage-report", "--list"))
    assert out.splitlines()[1].split()[:2] == ["month", "report-usage"]
    assert ok(run("render", "usage-report", "--sample", "empty-month", "--part", "text"))


def test_an_edited_template_renders_from_the_directory_given(run: Cli, tmp_path: Path) -> None:
    templates = copied_templates(tmp_path)
    body = templates / "low-balance" / "body.txt"
    body.write_text("EDITED {{ account.name }}\n" + body.read_text())
    out = ok(run("render", "low-balance", "--templates", str(templates)))
    assert out.startswith("EDITED Acme Messaging Ltd\n")
    out = ok(run("render", "low-balance", env={"BALANCEWATCH_TEMPLATES_DIR": str(templates)}))
    assert out.startswith("EDITED Acme Messaging Ltd\n")


def test_a_template_error_is_one_line_naming_its_file_and_line(run: Cli, tmp_path: Path) -> None:
    templates = copied_templates(tmp_path)
    (templates / "low-balance" / "body.txt").write_text("Hello\n{{ account.name | nosuchfilter }}\n")
    result = run("render", "low-balance", "--templates", str(templates))
    assert result.code == 1 and result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith(f"{templates}/low-balance/body.txt:2:") and "nosuchfilter" in line


def test_a_template_no_rule_uses_is_offered_the_kinds_it_renders_for(run: Cli, tmp_path: Path) -> None:
    templates = copied_templates(tmp_path)
    shutil.copytree(templates / "usage-report", templates / "my-report")
    out = ok(run("render", "my-report", "--list", "--templates", str(templates)))
    assert {line.split()[1] for line in out.splitlines()[1:]} == {"report-usage"}


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["nosuch"], "no template 'nosuch' in "),
        (
            ["low-balance", "--sample", "nosuch"],
            "no sample 'nosuch' for template 'low-balance'; samples: crossed,",
        ),
        (["low-balance", "--kind", "nosuch"], "no kind 'nosuch'; kinds: alert,"),
    ],
)
def test_what_is_not_there_is_one_line_saying_what_there_is(
    run: Cli, argv: list[str], complaint: str
) -> None:
    result: Result = run("render", *argv)
    assert result.code == 1 and result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith(f"balancewatch render: {complaint}")


# --- with a real account's data -------------------------------------------------------------------


@pytest.fixture
def acme(engine: Engine) -> datetime:
    """Acme Ltd with $90.00 left after ten days of usage; return now."""
    now = datetime.now(UTC)
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 50_000, now - timedelta(days=40))
    for day in range(10, 0, -1):
        post(engine, "acme", "USD", -4_100, now - timedelta(days=day))
    return now


def test_an_alert_renders_with_the_accounts_own_balance_and_figures(cli: Cli, acme: datetime) -> None:
    subject = ok(cli("render", "low-balance", "--account", "acme", "--part", "subject"))
    assert subject.startswith("Acme Ltd:") and "$90.00" in subject and "$100.00" in subject
    text = ok(cli("render", "low-balance", "--account", "acme"))
    assert "$410.00 over the last 30 days, an average of $13.67 a day" in text and "acme@owner.example" in ok(
        cli("render", "low-balance", "--account", "acme", "--part", "eml")
    )


def test_a_healthy_balance_is_shown_as_just_below_its_highest_step(
    cli: Cli, engine: Engine, acme: datetime
) -> None:
    post(engine, "acme", "USD", 1_000_000, acme)
    listed = ok(cli("render", "low-balance", "--account", "acme", "--list"))
    assert "default-ladder-usd" in listed and "placed just below its highest step" in listed
    argv = (
        "render",
        "low-balance",
        "--account",
        "acme",
        "--sample",
        "default-ladder-usd",
        "--part",
        "subject",
    )
    assert "$249.99" in ok(cli(*argv))


def test_a_report_renders_from_the_accounts_ledger(cli: Cli, engine: Engine) -> None:
    now = datetime.now(UTC)
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=10)
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 50_000, last_month - timedelta(days=5))
    post(engine, "acme", "USD", -1_234, last_month)
    text = ok(cli("render", "usage-report", "--account", "acme"))
    assert "Acme Ltd" in text and "$12.34" in text


def test_rendering_with_an_account_writes_nothing(cli: Cli, engine: Engine, acme: datetime) -> None:
    ok(cli("render", "low-balance", "--account", "acme", "--part", "eml"))
    ok(cli("render", "usage-report", "--account", "acme", "--part", "eml"))
    assert outbox(engine) == [] and all_states(engine) == []


def test_an_account_no_rule_sends_the_template_to_is_one_line(cli: Cli, acme: datetime) -> None:
    result = cli("render", "low-balance", "--account", "nobody")
    assert result.code == 1 and result.out == ""
    assert result.err.splitlines() == [
        "balancewatch render: no rule or report sends template 'low-balance' to account 'nobody' now: "
        "no such account, no balance a rule using it selects, or no report using it goes to the account"
    ]


def test_an_account_is_shown_only_the_alerts_its_rules_would_send_for_each_currency(
    cli: Cli, engine: Engine
) -> None:
    now = datetime.now(UTC)
    account(engine, "duo", name="Duo Ltd")
    post(engine, "duo", "USD", 5_000, now)  # $50: default-ladder (USD) fires
    post(engine, "duo", "EUR", 500, now)  # 5 €: ladder-inr-eur (INR and EUR) fires
    listed = ok(cli("render", "low-balance", "--account", "duo", "--list"))
    names = [line.split()[0] for line in listed.splitlines()[1:]]
    assert len(names) == len(set(names))
    assert {"default-ladder-usd", "ladder-inr-eur-eur"} <= set(names)
    assert not {"default-ladder-eur", "ladder-inr-eur-usd"} & set(names)
    eur = ok(
        cli(
            "render", "low-balance", "--account", "duo", "--sample", "ladder-inr-eur-eur", "--part", "subject"
        )
    )
    assert "€" in eur and "$" not in eur


def test_a_kind_the_template_is_not_used_for_is_one_line_naming_its_uses(run: Cli) -> None:
    result = run("render", "low-balance", "--kind", "report-usage")
    assert result.code == 1 and result.err.splitlines() == [
        "balancewatch render: template 'low-balance' is not used for 'report-usage'; it is used for: alert"
    ]
