"""The command line, run in-process through ``main(argv, environ)``; storage commands on both backends.

Exit status: 0 fine, 1 a reported failure (every problem listed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balancewatch import outbox
from balancewatch.cli import main
from balancewatch.cli.main import build_parser
from balancewatch.core import shipped
from balancewatch.store.db import make_engine
from tests.smtpserver import SmtpServer


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


Cli = Callable[..., Result]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    return {"BALANCEWATCH_STATE_DIR": str(tmp_path / "state"), "BALANCEWATCH_LOG__LEVEL": "warning"}


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], base_env: dict[str, str]) -> Iterator[Cli]:
    """Run ``balancewatch ARGV`` with the test's environment (plus ``env``) and capture its output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def invoke(*argv: str, env: dict[str, str] | None = None) -> Result:
        capsys.readouterr()
        code = main(list(argv), {**base_env, **(env or {})})
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level  # the CLI sets up logging for a whole process


@pytest.fixture
def cli(run: Cli, db_url: str) -> Cli:
    """Like ``run``, against the parametrized database (SQLite and PostgreSQL)."""

    def invoke(*argv: str, env: dict[str, str] | None = None) -> Result:
        return run(*argv, env={"BALANCEWATCH_DATABASE__URL": db_url, **(env or {})})

    return invoke


def ok(result: Result) -> str:
    assert (result.code, result.err) == (0, ""), result
    return result.out


def add_acme(cli: Cli, *extra: str) -> None:
    ok(cli("accounts", "add", "acme", "--name", "Acme Ltd", "--email", "owner@acme.example", *extra))


# --- check ----------------------------------------------------------------------------------------


def test_check_passes_on_the_shipped_set_and_says_where_it_looked(run: Cli) -> None:
    out = ok(run("check"))
    assert out.startswith(
        f"ok: config (defaults); 5 rules and 4 reports in 3 files in {shipped.rules_dir().resolve()}; "
        f"{len(shipped_templates().split(', '))} templates in {shipped.templates_dir().resolve()}; set "
    )


def test_check_lists_every_problem_as_path_line_field_message_and_exits_1(run: Cli, rules_dir: Path) -> None:
    ladder = rules_dir / "ladder.yaml"
    ladder.write_text(
        "alerts:\n  - id: ladder\n    accounts: {currency: usd}\n    below: [250, 100]\n    colour: red\n"
    )
    other = rules_dir / "other.yaml"
    other.write_text("alerts:\n  - id: ladder\n    exhausted: true\n    template: missing\n")
    result = run("check", env={"BALANCEWATCH_RULES_DIR": str(rules_dir)})
    assert (result.code, result.out) == (1, "")
    assert result.err_lines == [
        f"{ladder}:3: alerts[0].accounts.currency: 'usd': write currency codes in capitals: USD",
        f"{ladder}:5: alerts[0].colour: unknown field 'colour'; valid fields here: id, description, enabled, "
        "accounts, below, exhausted, rearm, remind, notify, template, unless, restored, topup, inhibited_by",
        f"{other}:2: template: template 'missing' not found in {shipped.templates_dir().resolve()} "
        f"(have: {shipped_templates()}); a template is a directory holding subject.txt, body.txt "
        "and optionally body.html",
        "check failed: 3 problems",
    ]


def test_check_reports_a_bad_config_with_its_line(run: Cli, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rules_dir: rules\npoll_interval: soon\n")
    result = run("--config", str(config), "check")
    assert (result.code, result.err_lines) == (
        1,
        [
            f"{config}:2: poll_interval: 'soon' is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m",
            "config: 1 problem",
        ],
    )


def test_the_config_file_comes_from_the_global_option_or_balancewatch_config(
    run: Cli, tmp_path: Path, rules_dir: Path
) -> None:
    (rules_dir / "zero.yaml").write_text("alerts:\n  - id: zero\n    exhausted: true\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"rules_dir: rules\ntemplates_dir: {shipped.templates_dir()}\n")
    by_option = ok(run("--config", str(config), "check"))
    by_env = ok(run("check", env={"BALANCEWATCH_CONFIG": str(config)}))
    for out in (by_option, by_env):
        assert out.startswith(f"ok: config {config}; 1 rules in 1 file in {rules_dir}; ")


# --- accounts ---------------------------------------------------------------------------------------


def test_accounts_are_added_and_listed(cli: Cli) -> None:
    add_acme(cli, "--label", "tier=gold", "--locale", "en_IN", "--timezone", "Asia/Kolkata")
    assert ok(
        cli(
            "accounts",
            "add",
            "acme-eu",
            "--name",
            "Acme EU",
            "--email",
            "eu@acme.example",
            "--parent",
            "acme",
        )
    )
    assert ok(cli("accounts", "list")).splitlines() == [
        "id       name      owner               billing  parent",
        "acme     Acme Ltd  owner@acme.example  prepaid",
        "acme-eu  Acme EU   eu@acme.example     prepaid  acme",
    ]
    [acme, _] = json.loads(ok(cli("accounts", "list", "--json")))
    assert (acme["labels"], acme["locale"], acme["timezone"]) == ({"tier": "gold"}, "en_IN", "Asia/Kolkata")


def test_adding_an_account_says_what_was_added(cli: Cli) -> None:
    out = ok(
        cli(
            "accounts",
            "add",
            "acme",
            "--name",
            "Acme",
            "--email",
            "Owner@Acme.example",
            "--billing",
            "postpaid",
        )
    )
    assert out == "added acme (postpaid, owner Owner@acme.example)\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--email", "owner@", "owner email 'owner@': There must be something after the @-sign."),
        ("--timezone", "Mars/Olympus", "timezone 'Mars/Olympus': not an IANA zone such as Europe/Berlin"),
        ("--locale", "xx_YY", "locale: 'xx_YY' is not a locale Babel knows (e.g. en_US, en_IN, de_DE)"),
        ("--parent", "nobody", "parent 'nobody': no such account"),
        ("--label", "gold", "--label 'gold': write KEY=VALUE"),
    ],
)
def test_a_bad_account_field_is_rejected_with_a_clear_message(
    cli: Cli, option: str, value: str, message: str
) -> None:
    args = {"--email": "owner@acme.example", option: value}
    argv = ["accounts", "add", "acme", "--name", "Acme"]
    for key, val in args.items():
        argv += [key, val]
    result = cli(*argv)
    assert (result.code, result.out, result.err) == (1, "", f"balancewatch accounts add: {message}\n")
    assert ok(cli("accounts", "list")) == "id  name  owner  billing  parent\n"


def test_an_account_id_can_be_added_once(cli: Cli) -> None:
    add_acme(cli)
    result = cli("accounts", "add", "acme", "--name", "Other", "--email", "o@example.com")
    assert (result.code, result.err) == (
        1,
        "balancewatch accounts add: id 'acme': an account with this id exists already\n",
    )


# --- ledger post ------------------------------------------------------------------------------------


def test_ledger_post_credits_and_debits_and_shows_the_balance(cli: Cli) -> None:
    add_acme(cli)
    assert ok(cli("ledger", "post", "acme", "300")) == "posted #1: top-up $300.00; acme balance $300.00\n"
    out = ok(
        cli(
            "ledger",
            "post",
            "acme",
            "-12.50",
            "--service",
            "sms",
            "--quantity",
            "250",
            "--reference",
            "inv-1",
        )
    )
    assert out == "posted #2: usage -$12.50; acme balance $287.50\n"
    out = ok(cli("ledger", "post", "acme", "1500", "--currency", "JPY", "--kind", "adjustment"))
    assert out == "posted #3: adjustment ¥1,500; acme balance ¥1,500\n"


def test_a_subaccount_posts_against_its_main_accounts_balance(cli: Cli) -> None:
    add_acme(cli)
    ok(cli("accounts", "add", "acme-eu", "--name", "EU", "--email", "eu@acme.example", "--parent", "acme"))
    ok(cli("ledger", "post", "acme", "100"))
    assert ok(cli("ledger", "post", "acme-eu", "-10")) == "posted #2: usage -$10.00; acme balance $90.00\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["acme", "5", "--kind", "usage"], "amount: usage is a debit; write it negative (e.g. -12.50)"),
        (["acme", "-5", "--kind", "refund"], "amount: a refund is a credit; write it positive"),
        (["acme", "0"], "amount: zero moves nothing"),
        (["acme", "-1.005"], "amount: -1.005 USD has more decimals than USD allows (2)"),
        (["acme", "-1.5", "--currency", "JPY"], "amount: -1.5 JPY has more decimals than JPY allows (0)"),
        (["acme", "ten"], "amount: 'ten' is not a number"),
        (["acme", "-1", "--currency", "usd"], "--currency: 'usd': write currency codes in capitals: USD"),
        (
            ["acme", "-1", "--quantity", "-3"],
            "quantity: -3 is negative; write the units used (e.g. 250 messages)",
        ),
        (
            ["acme", "-1", "--at", "yesterday"],
            "--at: 'yesterday' is not an ISO 8601 time such as 2026-03-14T09:30:00+05:30",
        ),
        (["nobody", "-1"], "account: no account 'nobody' (add it with `balancewatch accounts add`)"),
    ],
)
def test_a_bad_ledger_entry_is_refused_with_what_to_write(cli: Cli, argv: list[str], message: str) -> None:
    add_acme(cli)
    result = cli("ledger", "post", *argv)
    assert (result.code, result.out, result.err) == (1, "", f"balancewatch ledger post: {message}\n")
    assert json.loads(ok(cli("balance", "show", "acme", "--json")))["entries"] == []


def test_a_reference_is_posted_once_and_posting_it_again_says_so(cli: Cli) -> None:
    add_acme(cli)
    ok(cli("ledger", "post", "acme", "100", "--reference", "pay-1"))
    again = ok(cli("ledger", "post", "acme", "100", "--reference", "pay-1"))
    assert again == "already posted #1 (reference 'pay-1'): top-up $100.00; acme balance $100.00\n"
    result = cli("ledger", "post", "acme", "90", "--reference", "pay-1")
    assert (result.code, result.err) == (
        1,
        "balancewatch ledger post: reference: 'pay-1' is already used by entry #1 of acme "
        "(top-up $100.00); nothing posted\n",
    )
    assert json.loads(ok(cli("balance", "show", "acme", "--json")))["balances"][0]["amount"] == "100.00"


# --- ledger import ----------------------------------------------------------------------------------


def test_a_ledger_import_posts_every_row_and_a_reimport_skips_known_references(
    cli: Cli, tmp_path: Path
) -> None:
    add_acme(cli)
    csv = tmp_path / "ledger.csv"
    csv.write_text(
        "account,amount,currency,kind,service,quantity,time,reference\n"
        "acme,500,USD,top-up,,,2026-03-01T08:00:00Z,pay-1\n"
        "acme,-12.50,USD,usage,sms,250,2026-03-01T09:00:00Z,use-1\n"
        "acme,-3,USD,,voice,12,2026-03-01T10:00:00+05:30,\n"
    )
    assert ok(cli("ledger", "import", str(csv))) == "imported 3 entries; skipped 0 already in the ledger\n"
    assert ok(cli("ledger", "import", str(csv))) == "imported 1 entries; skipped 2 already in the ledger\n"
    shown = json.loads(ok(cli("balance", "show", "acme", "--json")))
    assert shown["balances"][0]["amount"] == "481.50"
    # Newest first; 10:00+05:30 is 04:30 UTC, the earliest of the three.
    assert [e["reference"] for e in shown["entries"]] == ["use-1", "pay-1", None, None]


def test_a_ledger_import_checks_every_row_first_and_imports_nothing_on_any_error(
    cli: Cli, tmp_path: Path
) -> None:
    add_acme(cli)
    csv = tmp_path / "ledger.csv"
    csv.write_text(
        "account,amount,currency,kind,quantity,time,reference\n"
        "acme,100,USD,top-up,,,ok-1\n"
        "acme,-1.505,USD,usage,many,,r2\n"
        "acme,5,usd,,,,r3\n"
        "acme,5,USD,usage,,,r4\n"
        "acme,-1,USD,spend,,,r5\n"
        ",-1,USD,usage,,,r6\n"
        "acme,-1,USD,usage,,last tuesday,r7\n"
        "nobody,-1,USD,usage,,,r8\n"
        "acme,-1,USD,usage,,,ok-1\n"
    )
    result = cli("ledger", "import", str(csv))
    assert (result.code, result.out) == (1, "")
    assert result.err_lines == [
        f"{csv}:3: amount: -1.505 USD has more decimals than USD allows (2)",
        f"{csv}:3: quantity: 'many' is not a whole number of units (0 or more)",
        f"{csv}:4: currency: 'usd': write currency codes in capitals: USD",
        f"{csv}:5: amount: usage is a debit; write it negative (e.g. -12.50)",
        f"{csv}:6: kind: 'spend' is not a kind; write one of usage, top-up, refund, adjustment",
        f"{csv}:7: account: empty: name the account id",
        f"{csv}:8: time: 'last tuesday' is not an ISO 8601 time such as 2026-03-14T09:30:00+05:30",
        f"{csv}:9: account: no account 'nobody' (add it with `balancewatch accounts add`)",
        f"{csv}:10: reference: 'ok-1' is also on line 2 for 'acme'; a reference names one entry",
        "ledger import: nothing imported: 9 problems",
    ]
    assert json.loads(ok(cli("balance", "show", "acme", "--json")))["entries"] == []


def test_a_ledger_import_names_missing_and_unknown_columns(cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "ledger.csv"
    csv.write_text("acct,amount,memo\nacme,1,x\n")
    result = cli("ledger", "import", str(csv))
    assert (result.code, result.err_lines) == (
        1,
        [
            f"{csv}:1: missing column 'account'; unknown column 'acct'; unknown column 'memo' "
            "(columns: account, amount, currency, kind, service, quantity, time, reference)",
            "ledger import: nothing imported: 1 problem",
        ],
    )


def test_a_ledger_import_of_a_missing_file_says_so(cli: Cli, tmp_path: Path) -> None:
    result = cli("ledger", "import", str(tmp_path / "nope.csv"))
    assert (result.code, result.err_lines) == (
        1,
        [
            f"{tmp_path / 'nope.csv'}: cannot read: No such file or directory",
            "ledger import: nothing imported: 1 problem",
        ],
    )


# --- balance show -----------------------------------------------------------------------------------


def test_balance_show_prints_balances_and_recent_entries_in_the_accounts_locale(cli: Cli) -> None:
    add_acme(cli, "--locale", "en_IN")
    ok(cli("ledger", "post", "acme", "12345678.50", "--currency", "INR", "--at", "2026-03-01T08:00:00Z"))
    ok(
        cli(
            "ledger", "post", "acme", "-0.50", "--currency", "INR", "--service", "sms", "--quantity", "2",
            "--reference", "u-1", "--at", "2026-03-01T09:00:00+00:00",
        )
    )  # fmt: skip
    lines = ok(cli("balance", "show", "acme")).splitlines()
    assert lines[0] == "currency  balance          updated"
    assert lines[1].startswith("INR       ₹1,23,45,678.00  ")
    assert lines[2:] == [
        "",
        "time                       kind    amount           service  quantity  reference",
        "2026-03-01T09:00:00+00:00  usage   -₹0.50           sms      2         u-1",
        "2026-03-01T08:00:00+00:00  top-up  ₹1,23,45,678.50",
    ]


def test_balance_show_as_json_carries_exact_amounts(cli: Cli) -> None:
    add_acme(cli)
    ok(cli("ledger", "post", "acme", "0.10", "--currency", "BHD", "--reference", "p"))
    shown = json.loads(ok(cli("balance", "show", "acme", "--json")))
    [balance] = shown["balances"]
    assert (shown["account"], shown["paid_by"]) == ("acme", "acme")
    assert (balance["currency"], balance["amount_minor"], balance["amount"]) == ("BHD", 100, "0.100")
    [entry] = shown["entries"]
    assert (entry["amount"], entry["kind"], entry["reference"], entry["balance_after"]) == (
        100,
        "top-up",
        "p",
        100,
    )


def test_balance_show_of_an_unknown_account_says_so(cli: Cli) -> None:
    result = cli("balance", "show", "nobody")
    assert (result.code, result.err) == (1, "balancewatch balance show: no account 'nobody'\n")


# --- outbox -----------------------------------------------------------------------------------------


def test_outbox_list_shows_what_was_sent_to_whom(cli: Cli) -> None:
    assert ok(cli("outbox", "list")) == "id  decided (UTC)  status  tries  to  subject  last error\n"
    sent = ok(cli("send-test", "--to", "ops@example.com"))
    assert sent.startswith("sent to ops@example.com via files in ")
    lines = ok(cli("outbox", "list")).splitlines()
    assert lines[0].split() == ["id", "decided", "(UTC)", "status", "tries", "to", "subject", "last", "error"]
    assert lines[1].split()[0] == "1"
    assert lines[1].split()[3:] == ["sent", "1", "ops@example.com", "balancewatch", "test", "message"]
    [row] = json.loads(ok(cli("outbox", "list", "--json", "--status", "sent")))
    assert (row["recipients"], row["status"], row["kind"]) == (["ops@example.com"], "sent", "test")
    assert json.loads(ok(cli("outbox", "list", "--json", "--status", "parked"))) == []


def test_outbox_list_and_show_say_how_each_recipient_fared(
    cli: Cli, db_url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse["gone@acme.example"] = "550 5.1.1 no such user"
    smtp_server.refuse["grey@acme.example"] = "451 4.7.1 Greylisted"
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        outbox.add(
            conn,
            [
                outbox.NewMessage(
                    idem_key="alert/ladder/acme/USD/10000/1/0",
                    kind="alert",
                    sender="alerts@platform.example",
                    recipients=("owner@acme.example", "gone@acme.example", "grey@acme.example"),
                    subject="Your USD balance is below $100.00",
                    text="Your USD balance has fallen to $90.00.\n",
                    html=None,
                )
            ],
            now,
            "platform.example",
        )
    engine.dispose()
    settings = make_settings_env(smtp_server)
    assert cli("run", "--once", env=settings).code == 0

    lines = ok(cli("outbox", "list")).splitlines()
    assert "owner@acme.example (sent), gone@acme.example (parked), grey@acme.example (pending)" in lines[1]
    assert lines[1].split()[3:5] == ["pending", "1"]

    shown = ok(cli("outbox", "show", "alert/ladder/acme/USD/10000/1/0", "--body"))
    assert "status        pending" in shown
    assert "last error    grey@acme.example: 451 4.7.1 Greylisted" in shown
    table_rows = [line.split() for line in shown.splitlines() if "@acme.example " in line]
    recipients = {row[0]: row[1:3] for row in table_rows}
    assert recipients == {
        "owner@acme.example": ["sent", "1"],
        "gone@acme.example": ["parked", "1"],
        "grey@acme.example": ["pending", "1"],
    }
    assert "550 5.1.1 no such user" in shown
    assert shown.rstrip().endswith("Your USD balance has fallen to $90.00.")
    [row] = json.loads(ok(cli("outbox", "list", "--json")))
    assert row["deliveries"]["gone@acme.example"]["status"] == "parked"
    assert json.loads(ok(cli("outbox", "show", "1", "--json")))["idem_key"] == row["idem_key"]

    missing = cli("outbox", "show", "nope")
    assert (missing.code, missing.err) == (
        1,
        "balancewatch outbox show: no outbox row 'nope'; "
        "`balancewatch outbox list` shows their ids and keys\n",
    )


def make_settings_env(smtp_server: SmtpServer) -> dict[str, str]:
    return {f"BALANCEWATCH_{k.upper()}": v for k, v in smtp_server.env().items()} | {
        "BALANCEWATCH_RULES_DIR": str(shipped.rules_dir()),
    }


# --- config show ------------------------------------------------------------------------------------


def test_config_show_masks_the_smtp_password_and_the_database_password(run: Cli) -> None:
    result = run(
        "config",
        "show",
        env={
            "BALANCEWATCH_SMTP__HOST": "mail.example.com",
            "BALANCEWATCH_SMTP__PASSWORD": "hunter2",
            "BALANCEWATCH_DATABASE__URL": "postgresql://bw:pgsecret@db.example/bw",
        },
    )
    out = ok(result)
    assert "hunter2" not in out
    assert "pgsecret" not in out
    shown = json.loads(out)
    assert shown["smtp"]["password"] == "********"
    assert shown["database"]["url"] == "postgresql://bw:***@db.example/bw"
    assert shown["database_url_effective"] == "postgresql://bw:***@db.example/bw"
    assert (shown["source"], shown["poll_interval"]) == ("(defaults)", "30s")


def test_an_unreachable_database_is_one_line_without_the_password(run: Cli) -> None:
    result = run(
        "accounts", "list", env={"BALANCEWATCH_DATABASE__URL": "postgresql://bw:pgsecret@127.0.0.1:1/bw"}
    )
    assert result.code == 1
    assert result.err.startswith("balancewatch accounts list: database postgresql://bw:***@127.0.0.1:1/bw: ")
    assert "pgsecret" not in result.err
    assert len(result.err_lines) == 1


# --- usage ------------------------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


COMMANDS = list(_commands(build_parser()))


def test_every_command_of_the_issue_exists() -> None:
    expected = {
        ("check",),
        ("accounts", "add"),
        ("accounts", "list"),
        ("ledger", "post"),
        ("ledger", "import"),
        ("balance", "show"),
        ("outbox", "list"),
        ("config", "show"),
    }
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "balancewatch")
def test_help_works_for_every_command(run: Cli, command: tuple[str, ...]) -> None:
    result = run(*command, "--help")
    assert (result.code, result.err) == (0, "")
    assert result.out.startswith(f"usage: {' '.join(('balancewatch', *command))}")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
        (["ledger", "post", "acme"], "the following arguments are required: amount"),
        (["ledger", "post", "acme", "-1", "--quantity", "many"],
         "argument --quantity: invalid int value: 'many'"),
        (["accounts", "add", "acme", "--name", "A", "--email", "a@b.example", "--billing", "free"],
         "argument --billing: invalid choice: 'free'"),
        (["outbox", "list", "--status", "lost"], "argument --status: invalid choice: 'lost'"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2_and_says_what_is_wrong(run: Cli, argv: list[str], complaint: str) -> None:
    result = run(*argv)
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("usage: balancewatch")
    assert complaint in result.err


def test_the_installed_command_exits_with_the_same_codes(tmp_path: Path) -> None:
    environ = {"BALANCEWATCH_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def status(*argv: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "balancewatch", *argv], env=environ, cwd=tmp_path, capture_output=True
        ).returncode

    assert [status("check"), status("balance", "show", "nobody"), status("ledger")] == [0, 1, 2]


def shipped_templates() -> str:
    """The names of the shipped templates, as a missing-template message lists them."""
    return ", ".join(sorted(p.parent.name for p in shipped.templates_dir().glob("*/subject.txt")))
