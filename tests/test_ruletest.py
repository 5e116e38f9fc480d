"""``balancewatch test``: rule unit tests through the command line, on the real pipeline and a fake clock.

Each test here writes a ``*.test.yaml`` file, runs ``balancewatch test`` in-process
through ``main(argv, environ)`` and reads what it printed and its exit status.
"""

from __future__ import annotations

import logging
import re
import shutil
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.rules.loader import rule_files
from balancewatch.runtime.loadset import load_set
from balancewatch.tools.ruletest.load import load_test_file

SHIPPED_RULES = shipped.rules_dir() / "low-balance.yaml"
HEADER = f"rule_files: [{SHIPPED_RULES}]\nstart: 2026-03-01T09:00:00Z\ntests:\n"
ACME = "{id: acme, name: Acme Ltd, email: owner@acme.example, locale: en_US, balances: {USD: 300}}"
GLOBEX = "{id: globex, name: Globex, email: owner@globex.example, locale: de_DE, balances: {EUR: 300}}"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.rstrip("\n").rsplit("\n", 1)[-1]


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[Cli]:
    """Run ``balancewatch ARGV`` with no config file, state in tmp_path, and capture its output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    base = {"BALANCEWATCH_STATE_DIR": str(tmp_path / "state"), "BALANCEWATCH_LOG__LEVEL": "warning"}

    def invoke(*argv: str, env: dict[str, str] | None = None) -> Result:
        capsys.readouterr()
        code = main(list(argv), {**base, **(env or {})})
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level  # the CLI sets up logging for a whole process


def write_test(directory: Path, tests: str, *, header: str = HEADER, name: str = "case.test.yaml") -> Path:
    """A test file: ``header`` (the shipped rules by default), then ``tests`` under ``tests:``."""
    path = directory / name
    path.write_text(header + textwrap.indent(textwrap.dedent(tests).strip("\n"), "  ") + "\n")
    return path


def line_of(path: Path, marker: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line of ``path`` containing ``marker``."""
    hits = [i for i, text in enumerate(path.read_text().splitlines(), 1) if marker in text]
    return hits[nth - 1]


# --- the shipped tests ---------------------------------------------------------------------------


def test_the_shipped_rule_tests_pass(cli: Cli) -> None:
    result = cli("test", str(shipped.rules_dir() / "tests"))
    assert (result.code, result.err) == (0, ""), result
    assert re.fullmatch(r"ok \d+ tests in 5 files", result.out.strip()), result.out


def test_every_shipped_rule_is_named_by_a_shipped_test() -> None:
    live = load_set(shipped.rules_dir(), shipped.templates_dir())
    named = {
        e.spec.rule
        for path in sorted((shipped.rules_dir() / "tests").glob("*.test.yaml"))
        for case in load_test_file(path).cases
        for step in case.steps
        for e in step.expect or ()
    }
    assert {r.id for r in live.rules} <= named


def test_the_rules_loader_does_not_read_the_tests_directory() -> None:
    assert (shipped.rules_dir() / "tests").is_dir()
    assert rule_files(shipped.rules_dir()) == [
        SHIPPED_RULES,
        shipped.rules_dir() / "reports.yaml",
        shipped.rules_dir() / "usage.yaml",
    ]
    live = load_set(shipped.rules_dir(), shipped.templates_dir())
    assert (len(live.rules), len(live.reports)) == (5, 4)


def test_a_test_file_at_the_top_of_rules_dir_is_never_run_as_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(SHIPPED_RULES, rules / "low-balance.yaml")
    stray = rules / "ladder.test.yaml"
    shutil.copy(shipped.rules_dir() / "tests" / "default-ladder.test.yaml", stray)
    # Refused whole (check fails, a running daemon keeps its rules) or skipped: never half-read as rules.
    try:
        live = load_set(rules, shipped.templates_dir())
    except ProblemsError as exc:
        assert {p.path for p in exc.problems} == {str(stray)}
    else:
        assert {Path(r.source).name for r in live.rules} == {"low-balance.yaml"}


# --- what a failure looks like ---------------------------------------------------------------------


def test_a_failing_expectation_exits_1_with_a_diff_naming_file_and_line(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: a jump over two steps
          accounts: [{ACME}]
          timeline:
            - at: 1m
              post: {{account: acme, amount: -210}}
              expect:
                - {{rule: default-ladder, account: acme, step: 10}}
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.out.splitlines() == [
        f"FAIL {path}:{line_of(path, '- name:')}: a jump over two steps",
        f"  {path}:{line_of(path, '- at: 1m')}: step at +1m (2026-03-01T09:01:00Z)",
        f"    - expected, not decided (line {line_of(path, 'step: 10')}): "
        "{rule: default-ladder, account: acme, step: 10}",
        "        closest decided: step is 100, not 10",
        "    + decided, not expected: {rule: default-ladder, account: acme, currency: USD, step: 100, "
        'kind: alert, template: low-balance, to: [owner@acme.example], subject: "Acme Ltd: USD balance '
        '$90.00 is below $100.00"}',
        "FAILED: 1 of 1 test in 1 file failed",
    ]


def test_an_expected_notification_that_never_comes_is_reported_missing(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: a quiet morning
          accounts: [{ACME}]
          timeline:
            - at: 1h
              expect: [{{rule: default-ladder, kind: alert}}]
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.out.splitlines()[2:4] == [
        f"    - expected, not decided (line {line_of(path, 'expect:')}): "
        "{rule: default-ladder, kind: alert}",
        "        nothing else was decided at this step",
    ]


def test_a_notification_nobody_expected_fails_the_step(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: two accounts low at once
          accounts: [{ACME}, {GLOBEX}]
          timeline:
            - at: 1h
              post: [{{account: acme, amount: -295}}, {{account: globex, amount: -295}}]
              expect:
                - {{rule: default-ladder, step: 10}}
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert (
        "    + decided, not expected: {rule: ladder-inr-eur, account: globex, currency: EUR, step: 10,"
        in result.out
    )
    assert f"      as expected (line {line_of(path, 'step: 10')}): {{rule: default-ladder," in result.out
    assert "- expected" not in result.out


def test_the_order_of_expectations_does_not_matter(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: two accounts low at once
          accounts: [{ACME}, {GLOBEX}]
          timeline:
            - at: 1h
              post: [{{account: acme, amount: -295}}, {{account: globex, amount: -295}}]
              expect:
                - {{rule: ladder-inr-eur, step: 10, subject_contains: "5,00"}}
                - {{account: acme, subject_contains: "$5.00"}}
        """,
    )
    assert cli("test", str(path)).code == 0


def test_expect_an_empty_list_requires_that_nothing_is_decided(cli: Cli, tmp_path: Path) -> None:
    quiet = write_test(
        tmp_path,
        f"""
        - name: above every step
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -10}}
              expect: []
        """,
        name="quiet.test.yaml",
    )
    loud = write_test(
        tmp_path,
        f"""
        - name: below the first step
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -60}}
              expect: []
        """,
        name="loud.test.yaml",
    )
    assert cli("test", str(quiet)).out == "ok 1 test in 1 file\n"
    result = cli("test", str(loud))
    assert result.code == 1
    assert "    + decided, not expected: {rule: default-ladder, account: acme, currency: USD, step: 250," in (
        result.out
    )


def test_a_step_without_expect_is_not_checked(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: a setup step decides something nobody checks
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -60}}
            - at: 2h
              post: {{account: acme, amount: -10}}
              expect: []
        """,
    )
    assert cli("test", str(path)).out == "ok 1 test in 1 file\n"


def test_a_decided_notification_as_printed_can_be_pasted_into_expect(cli: Cli, tmp_path: Path) -> None:
    steps = f"""
        - name: below the first step
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -60}}
        """
    shown = cli("test", "-v", str(write_test(tmp_path, steps))).out.splitlines()
    assert shown[0].startswith("ok   ")
    printed = next(line.strip() for line in shown if line.strip().startswith("{rule:"))
    pasted = write_test(
        tmp_path, steps.rstrip() + f"\n{' ' * 14}expect: [{printed}]\n", name="pasted.test.yaml"
    )
    assert cli("test", str(pasted)).out == "ok 1 test in 1 file\n"


# --- the clock and the database --------------------------------------------------------------------


def test_moving_the_clock_brings_reminders_due_without_catching_up(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "alerts:\n  - {id: low, accounts: {currency: USD}, below: [100], remind: 6h, template: low-balance}\n"
    )
    path = write_test(
        tmp_path,
        """
        - name: reminders every six hours while low
          accounts: [{id: acme, name: Acme Ltd, email: owner@acme.example, balances: {USD: 150}}]
          timeline:
            - at: 1h
              post: {account: acme, amount: -60}
              expect: [{rule: low, kind: alert}]
            - at: 6h
              expect: []
            - at: 7h
              expect: [{rule: low, kind: reminder, text_contains: "this is reminder 1"}]
            - at: 2d
              expect: [{rule: low, kind: reminder, text_contains: "this is reminder 2"}]
            - at: 2d5h
              expect: []
        """,
        header="rule_files: [rules.yaml]\ntests:\n",
    )
    result = cli("test", str(path))
    assert (result.code, result.err) == (0, ""), result


def test_each_test_starts_from_a_fresh_database(cli: Cli, tmp_path: Path) -> None:
    case = f"""
        - name: NAME
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -60, reference: invoice-1}}
              expect: [{{rule: default-ladder, step: 250}}]
        """
    path = write_test(tmp_path, case.replace("NAME", "first") + case.replace("NAME", "second"))
    assert cli("test", str(path)).out == "ok 2 tests in 1 file\n"


def test_an_entry_the_ledger_refuses_stops_the_test_with_the_reason(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: the same invoice twice
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -10, reference: invoice-1}}
            - at: 2h
              post: {{account: acme, amount: -10, reference: invoice-1}}
            - at: 3h
              expect: []
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert "    error: post[0]: reference: 'invoice-1' is already in the ledger of 'acme'" in result.out
    assert "  (the steps after this one were not run)" in result.out


def test_a_template_that_fails_on_real_data_fails_the_test(cli: Cli, tmp_path: Path) -> None:
    templates = tmp_path / "templates" / "tiered"
    templates.mkdir(parents=True)
    # The sample data has a tier label, so the set loads; an account without one cannot render.
    (templates / "subject.txt").write_text("{{ account.labels.tier }}: balance low\n")
    (templates / "body.txt").write_text("Balance {{ balance | money }}\n")
    (tmp_path / "rules.yaml").write_text(
        "alerts:\n  - {id: low, accounts: {currency: USD}, below: [100], template: tiered}\n"
    )
    path = write_test(
        tmp_path,
        """
        - name: an account without a tier
          accounts: [{id: acme, email: owner@acme.example, balances: {USD: 150}}]
          timeline:
            - at: 1h
              post: {account: acme, amount: -60}
              expect: [{rule: low}]
        """,
        header="rule_files: [rules.yaml]\ntemplates: templates\ntests:\n",
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert "    error: a template failed to render: " in result.out
    assert "tiered/subject.txt:1" in result.out


def test_a_test_file_may_name_its_own_templates(cli: Cli, tmp_path: Path) -> None:
    templates = tmp_path / "mine" / "plain"
    templates.mkdir(parents=True)
    (templates / "subject.txt").write_text("LOW {{ account.id }} {{ balance | money }}\n")
    (templates / "body.txt").write_text("Balance {{ balance | money }}\n")
    (tmp_path / "rules.yaml").write_text(
        "alerts:\n  - {id: low, accounts: {currency: USD}, below: [100], template: plain}\n"
    )
    path = write_test(
        tmp_path,
        """
        - name: our own words
          accounts: [{id: acme, email: owner@acme.example, balances: {USD: 150}}]
          timeline:
            - at: 1h
              post: {account: acme, amount: -60}
              expect: [{rule: low, template: plain, subject: "LOW acme $90.00", text_contains: "$90.00"}]
        """,
        header="rule_files: [rules.yaml]\ntemplates: mine\ntests:\n",
    )
    assert cli("test", str(path)).out == "ok 1 test in 1 file\n"


def test_without_rule_files_the_configured_rules_dir_is_tested(cli: Cli, tmp_path: Path) -> None:
    rules = tmp_path / "configured"
    rules.mkdir()
    (rules / "mine.yaml").write_text(
        "alerts:\n  - {id: only-here, accounts: {currency: USD}, below: [100]}\n"
    )
    path = write_test(
        tmp_path,
        f"""
        - name: the configured rules
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -250}}
              expect: [{{rule: only-here, step: 100}}]
        """,
        header="tests:\n",
    )
    result = cli("test", str(path), env={"BALANCEWATCH_RULES_DIR": str(rules)})
    assert (result.code, result.out) == (0, "ok 1 test in 1 file\n"), result


# --- invalid files and usage ------------------------------------------------------------------------


def test_an_invalid_test_file_lists_every_problem_as_path_line_field_message(
    cli: Cli, tmp_path: Path
) -> None:
    path = write_test(
        tmp_path,
        """
        - name: mistakes
          accounts:
            - {id: acme, email: owner@acme.example, balances: {usd: 300}}
          timeline:
            - at: 1h
              post: {account: acme, amount: -10}
              expect:
                - {rule: default-ladder, stpe: 100}
        - name: more mistakes
          accounts: []
          timeline:
            - at: tomorrow
              expect:
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines == [
        f"{path}:{line_of(path, 'usd')}: tests[0].accounts[0].balances.usd: "
        "'usd': write currency codes in capitals: USD",
        lines[1],
        f"{path}:{line_of(path, 'accounts: []')}: tests[1].accounts: "
        "the list is empty; write at least 1 item",
        f"{path}:{line_of(path, 'tomorrow')}: tests[1].timeline[0].at: 'tomorrow' is neither an offset "
        "from start (0, 30s, 5m, 2h, 1d, 1d12h) nor an ISO time such as 2026-03-01T09:00:00Z",
        f"{path}:{line_of(path, 'expect:', 2)}: tests[1].timeline[0].expect: empty; write expect: [] to "
        "require no notification at this step, or leave expect out to not check this step",
    ]
    assert lines[1].startswith(
        f"{path}:{line_of(path, 'stpe')}: tests[0].timeline[0].expect[0].stpe: unknown field"
    )
    assert "valid fields here: rule, account, currency, step, kind," in lines[1]
    assert result.out == "FAILED: 1 file could not be run (problems listed above)\n"


def test_what_refers_to_what_is_checked_before_anything_runs(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        """
        - name: references
          accounts:
            - {id: acme, email: owner@acme.example, balances: {USD: 300, EUR: 10.001}}
          timeline:
            - at: 1h
              post: {account: acme, amount: -10}
            - at: 30m
              post: {account: nobody, currency: USD, amount: -1}
              expect: [{account: acme, currency: JPY, step: 0.5}]
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"{path}:{line_of(path, '10.001')}: tests[0].accounts[0].balances.EUR: "
        "10.001 EUR has more decimals than EUR allows (2)",
        f"{path}:{line_of(path, '- at: 1h') + 1}: tests[0].timeline[0].post.currency: "
        "'acme' holds USD and EUR; write the currency, e.g. currency: USD",
        f"{path}:{line_of(path, '- at: 30m')}: tests[0].timeline[1].at: 2026-03-01T09:30:00Z is before "
        "an earlier step (2026-03-01T10:00:00Z); the timeline runs forward",
        f"{path}:{line_of(path, 'nobody')}: tests[0].timeline[1].post.account: "
        "no account 'nobody' in this test's accounts (have: acme)",
        f"{path}:{line_of(path, 'JPY')}: tests[0].timeline[1].expect[0].step: "
        "0.5 JPY has more decimals than JPY allows (0)",
    ]


def test_accounts_and_what_steps_write_are_checked_each_problem_on_its_line(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        """
        - name: accounts
          accounts:
            - {id: main, balances: {USD: 300}, email: o@x.example}
            - {id: main, balances: {USD: 1}, email: o@x.example}
            - {id: sub, parent: main, balances: {USD: 5}, email: o@x.example}
            - {id: subsub, parent: sub, email: o@x.example}
            - {id: orphan, parent: ghost, email: o@x.example}
            - {id: idle, balances: {USD: 1}, daily_usage: {EUR: 2}, email: o@x.example}
          timeline:
            - at: 1h
              set_balance: {account: sub, amount: 1}
              set_preferences: {account: main}
              expect: [{account: main, to: [not-an-address]}]
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"{path}:{line_of(path, '{id: main, balances: {USD: 1}')}: tests[0].accounts[1].id: "
        "account 'main' is listed twice in this test",
        f"{path}:{line_of(path, 'id: sub,')}: tests[0].accounts[2].balances: "
        "a subaccount draws on its main account's balance; give the balances to 'main'",
        f"{path}:{line_of(path, 'subsub')}: tests[0].accounts[3].parent: "
        "'sub' is itself a subaccount; name its main account",
        f"{path}:{line_of(path, 'ghost')}: tests[0].accounts[4].parent: "
        "no account 'ghost' above this one; list the main account before its subaccounts",
        f"{path}:{line_of(path, 'EUR: 2')}: tests[0].accounts[5].daily_usage.EUR: the paying account has no "
        "opening EUR balance for this usage to draw on; give it one, e.g. balances: {EUR: 100}",
        f"{path}:{line_of(path, 'set_balance')}: tests[0].timeline[0].set_balance.account: "
        "'sub' is a subaccount and has no balance of its own; set the balance of 'main'",
        f"{path}:{line_of(path, 'set_preferences')}: tests[0].timeline[0].set_preferences: "
        "nothing to change; give below, email, remind and/or enabled",
        f"{path}:{line_of(path, 'not-an-address')}: tests[0].timeline[0].expect[0].to[0]: "
        "'not-an-address' is not a valid email address: An email address must have an @-sign.",
    ]


def test_a_rule_the_rule_files_lack_is_a_problem_not_a_failure(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        f"""
        - name: a typo in the rule id
          accounts: [{ACME}]
          timeline:
            - at: 1h
              post: {{account: acme, amount: -60}}
              expect: [{{rule: defualt-ladder}}]
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.err == (
        f"{path}:{line_of(path, 'defualt')}: tests[0].timeline[0].expect[0].rule: no rule 'defualt-ladder' "
        "in the rules under test (low-balance.yaml; rules: default-ladder, exhausted, ladder-inr-eur)\n"
    )


def test_directories_are_searched_for_test_files_and_missing_paths_are_usage_errors(
    cli: Cli, tmp_path: Path
) -> None:
    nested = tmp_path / "suite" / "deeper"
    nested.mkdir(parents=True)
    write_test(nested, f"- name: one\n  accounts: [{ACME}]\n  timeline: [{{at: 0, expect: []}}]\n")
    (tmp_path / "suite" / "rules.yaml").write_text("not: a test\n")  # not *.test.yaml: not read
    assert cli("test", str(tmp_path / "suite")).out == "ok 1 test in 1 file\n"

    (tmp_path / "empty").mkdir()
    result = cli("test", str(tmp_path / "nowhere"), str(tmp_path / "empty"))
    assert result.code == 2
    assert result.err.splitlines() == [
        f"balancewatch test: {tmp_path / 'nowhere'}: no such file or directory",
        f"balancewatch test: {tmp_path / 'empty'}: no *.test.yaml files in this directory",
    ]
    assert cli("test").code == 2


def test_run_picks_tests_by_name(cli: Cli, tmp_path: Path) -> None:
    case = f"- name: NAME\n  accounts: [{ACME}]\n  timeline: [{{at: 0, expect: []}}]\n"
    path = write_test(tmp_path, case.replace("NAME", "alpha") + case.replace("NAME", "beta"))
    assert cli("test", "--run", "BET", str(path)).out == "ok 1 test in 1 file\n"
    assert cli("test", "--run", "gamma", str(path)).code == 1


def test_help_shows_the_format_and_where_it_is_documented(cli: Cli) -> None:
    result = cli("test", "--help")
    assert result.code == 0
    assert "rule_files:" in result.out and "docs/rule-tests.md" in result.out


# --- owner preferences and usage history -----------------------------------------------------------

USAGE_HEADER = (
    f"rule_files: [{SHIPPED_RULES}, {shipped.rules_dir() / 'usage.yaml'}]\n"
    "start: 2026-03-01T09:00:00Z\ntests:\n"
)


def test_daily_usage_gives_the_account_that_average_at_the_start(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        """
        - name: twenty dollars a day for thirty days
          accounts:
            - {id: acme, name: Acme Ltd, email: owner@acme.example, locale: en_US, balances: {USD: 300},
               daily_usage: {USD: 20}}
          timeline:
            - at: 0
              set_balance: {account: acme, amount: 19.99}
              expect:
                - {rule: default-ladder, step: 100}
                - {rule: recommended, step: 20, subject_contains: ["$19.99", "$20.00"]}
        """,
        header=USAGE_HEADER,
    )
    assert cli("test", str(path)).out == "ok 1 test in 1 file\n"


def test_preferences_set_in_the_accounts_and_changed_in_the_timeline_are_used(
    cli: Cli, tmp_path: Path
) -> None:
    path = write_test(
        tmp_path,
        """
        - name: the owner raises their threshold
          accounts:
            - {id: acme, name: Acme Ltd, email: owner@acme.example, locale: en_US, balances: {USD: 600},
               preferences: {USD: {below: "500", email: "cfo@acme.example, ap@acme.example"}}}
          timeline:
            - at: 1h
              set_balance: {account: acme, amount: 520}
              expect: []
            - at: 2h
              set_preferences: {account: acme, below: [550]}
              set_balance: {account: acme, amount: 519}
              expect:
                - {rule: owner-alerts, step: 550, to: "owner@acme.example, cfo@acme.example, ap@acme.example"}
        """,
        header=USAGE_HEADER,
    )
    assert cli("test", str(path)).out == "ok 1 test in 1 file\n"


def test_bad_preferences_and_usage_are_problems_at_their_line(cli: Cli, tmp_path: Path) -> None:
    path = write_test(
        tmp_path,
        """
        - name: mistakes
          accounts:
            - {id: acme, email: owner@acme.example, balances: {USD: 300},
               preferences: {USD: {below: [500, 250, 100, 10]}}, daily_usage: {EUR: 5}}
            - {id: acme-eu, email: eu@acme.example, parent: acme, preferences: {USD: {below: 50}}}
          timeline:
            - at: 1h
              set_preferences: {account: acme, email: "cfo; ap"}
        """,
        header=USAGE_HEADER,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"{path}:{line_of(path, 'EUR: 5')}: tests[0].accounts[0].daily_usage.EUR: the paying account has "
        "no opening EUR balance for this usage to draw on; give it one, e.g. balances: {EUR: 100}",
        f"{path}:{line_of(path, '500, 250')}: tests[0].accounts[0].preferences.USD.below: 4 thresholds "
        "given (500, 250, 100, 10); an owner may set at most 3: keep the three that matter most, "
        "e.g. 500,250,100",
        f"{path}:{line_of(path, 'acme-eu')}: tests[0].accounts[1].preferences: a subaccount draws on its "
        "main account's balance; give the preferences to 'acme'",
        f"{path}:{line_of(path, 'cfo; ap')}: tests[0].timeline[0].set_preferences.email: 'cfo; ap': "
        "separate addresses with commas, not ';'",
    ]


def test_a_subaccounts_balance_or_preferences_are_refused_naming_the_main_account(
    cli: Cli, tmp_path: Path
) -> None:
    path = write_test(
        tmp_path,
        """
        - name: a subaccount holds nothing of its own
          accounts:
            - {id: acme, email: o@acme.example, balances: {USD: 300}}
            - {id: acme-eu, email: eu@acme.example, parent: acme}
          timeline:
            - at: 1h
              set_balance: {account: acme-eu, amount: 10}
            - at: 2h
              set_preferences: {account: acme-eu, below: [100]}
        """,
    )
    result = cli("test", str(path))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"{path}:{line_of(path, 'set_balance')}: tests[0].timeline[0].set_balance.account: 'acme-eu' is a "
        "subaccount and has no balance of its own; set the balance of 'acme'",
        f"{path}:{line_of(path, 'set_preferences')}: tests[0].timeline[1].set_preferences.account: 'acme-eu' "
        "is a subaccount and draws on 'acme''s balance; set the preferences of 'acme'",
    ]
