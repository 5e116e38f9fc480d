"""Rule files: what they may say, how they compile, and how every mistake is reported.

Each problem reads ``path:line: field: message``; a bad file reports all of
its problems at once, so a sysadmin fixes it in one pass.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.liveset import LiveSet
from balancewatch.rules.compiled import CompiledRule, Step, StepSet
from balancewatch.rules.loader import parse_rules, read_files, rule_files
from balancewatch.rules.models import AlertRule
from balancewatch.runtime.loadset import load_set

Live = Callable[[str], LiveSet]


def write(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(body)
    return path


def problems_in(directory: Path) -> list[str]:
    """Every problem the rules in ``directory`` have, as the user reads them."""
    with pytest.raises(ProblemsError) as caught:
        parse_rules(read_files(rule_files(directory)))
    return [str(p) for p in caught.value.problems]


def rules_in(directory: Path) -> dict[str, CompiledRule]:
    return {r.id: r for r in parse_rules(read_files(rule_files(directory)))}


def one_rule(rules_dir: Path, body: str) -> CompiledRule:
    write(rules_dir, "rules.yaml", body)
    [rule] = rules_in(rules_dir).values()
    return rule


def only_problem(rules_dir: Path, body: str) -> str:
    path = write(rules_dir, "rules.yaml", body)
    [problem] = problems_in(rules_dir)
    return problem.removeprefix(f"{path}:")


# --- every mistake, with its file and line ------------------------------------------------------


def test_a_rule_file_with_three_mistakes_reports_all_three_with_file_and_line(rules_dir: Path) -> None:
    path = write(
        rules_dir,
        "ladder.yaml",
        """\
alerts:
  - id: usd-ladder
    accounts: {currency: USD}
    below: [250, -100, 10]
    template: low-balance

  - id: inr-ladder
    accounts: {currency: INR}
    below: [20000, 8000, 800]
    remind: every day
    notify: [owner, billing@]
""",
    )
    assert problems_in(rules_dir) == [
        f"{path}:4: alerts[0].below[1]: -100 is negative; thresholds are zero or more "
        "(use exhausted: true for zero)",
        f"{path}:10: alerts[1].remind: 'every day' is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m",
        f"{path}:11: alerts[1].notify[1]: 'billing@' is not a valid email address: "
        "There must be something after the @-sign.",
    ]


def test_problems_in_every_file_are_reported_together(rules_dir: Path) -> None:
    first = write(rules_dir, "a.yaml", "alerts:\n  - id: a\n    exhausted: maybe\n")
    second = write(rules_dir, "b.yaml", "alerts:\n  - id: b\n    below: {USD: [10]}\n    rearm: lots\n")
    assert problems_in(rules_dir) == [
        f"{first}:3: alerts[0].exhausted: 'maybe' is not true or false; write true or false",
        f"{second}:4: alerts[0].rearm: 'lots' is not a re-arm band; write a percentage such as 10% "
        "or an amount such as 5",
    ]


def test_a_duplicate_id_across_two_files_names_both_files(rules_dir: Path) -> None:
    first = write(rules_dir, "a-defaults.yaml", "alerts:\n  - id: zero\n    exhausted: true\n")
    second = write(
        rules_dir,
        "b-team.yaml",
        "# the team's own\nalerts:\n  - id: other\n    exhausted: true\n  - id: zero\n    exhausted: true\n",
    )
    assert problems_in(rules_dir) == [
        f"{second}:5: alerts[1].id: duplicate rule id 'zero': also defined at {first}:2; "
        "ids must be unique across all rule files (alert state is keyed on them)"
    ]


def test_a_key_written_twice_in_one_rule_is_reported_at_the_second(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    id: b\n"
    assert only_problem(rules_dir, body) == "4: alerts[0].id: duplicate key (first set on line 2); keep one"


def test_a_tab_in_the_indentation_is_reported_on_its_line(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n\texhausted: true\n"
    assert only_problem(rules_dir, body) == (
        "3: not valid YAML: a tab at column 1; YAML indents with spaces, never tabs: replace it with spaces"
    )


def test_a_truncated_file_points_at_the_bracket_left_open(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    accounts: {currency: USD}\n    below: [250, 100\n"
    assert only_problem(rules_dir, body) == (
        "4: not valid YAML: the file ends before the list opened with '[' on this line is closed"
    )


def test_a_line_indented_out_of_step_says_so(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n   remind: 24h\n"
    assert only_problem(rules_dir, body) == (
        "4: not valid YAML: this line is indented differently from the block that starts on line 2; "
        "line it up with the entries it belongs to"
    )


def test_a_colon_inside_a_value_asks_for_quotes(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    description: Note: top up soon\n"
    assert only_problem(rules_dir, body) == (
        "4: not valid YAML: mapping values are not allowed here (quote a value that contains ': ')"
    )


def test_an_unknown_key_lists_the_valid_fields(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    colour: red\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].colour: unknown field 'colour'; valid fields here: id, description, "
        "enabled, accounts, below, exhausted, rearm, remind, notify, template, unless, restored, topup, "
        "inhibited_by"
    )


def test_an_unknown_key_that_other_tools_use_suggests_ours(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    recipients: [owner]\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].recipients: unknown field 'recipients' (did you mean 'notify'?); valid fields here: "
        "id, description, enabled, accounts, below, exhausted, rearm, remind, notify, template, unless, "
        "restored, topup, inhibited_by"
    )


def test_a_misspelt_key_suggests_the_field_it_resembles(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exausted: true\n"
    assert only_problem(rules_dir, body).startswith(
        "3: alerts[0].exausted: unknown field 'exausted' (did you mean 'exhausted'?); valid fields here: "
    )


def test_an_unknown_key_in_the_selector_lists_the_selector_fields(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    accounts: {plan: gold}\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].accounts.plan: unknown field 'plan'; valid fields here: billing, currency, labels, ids"
    )


def test_an_unknown_top_level_key_suggests_alerts(rules_dir: Path) -> None:
    assert only_problem(rules_dir, "alert:\n  - id: a\n") == (
        "1: alert: unknown field 'alert' (did you mean 'alerts'?); valid fields here: alerts, reports"
    )


def test_a_negative_amount_is_rejected(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    below:\n      USD: [100, -5]\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].below.USD[1]: -5 is negative; "
        "thresholds are zero or more (use exhausted: true for zero)"
    )


def test_an_unknown_currency_is_rejected_with_examples(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    accounts: {currency: DOLLARS}\n    below: [10]\n"
    assert only_problem(rules_dir, body) == (
        "3: alerts[0].accounts.currency: 'DOLLARS' is not an ISO 4217 currency code (e.g. USD, INR, EUR)"
    )


def test_a_lower_case_currency_key_is_named_and_corrected(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    below:\n      usd: [10]\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].below.usd: 'usd': write currency codes in capitals: USD"
    )


def test_a_bad_duration_names_the_accepted_forms(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    remind: 1 day\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].remind: '1 day' is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m"
    )


def test_reminders_more_often_than_a_minute_are_refused(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    remind: 30s\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].remind: reminders more often than once a minute would flood inboxes; write e.g. 24h"
    )


def test_an_invalid_email_address_is_rejected(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    notify: [owner, 'ops at example.com']\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].notify[1]: 'ops at example.com' is not a valid email address: "
        "An email address must have an @-sign."
    )


def test_an_empty_recipient_list_asks_for_one(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    notify: []\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].notify: no recipients; "
        "write owner and/or email addresses, e.g. [owner, ops@example.com]"
    )


def test_a_ladder_without_accounts_currency_is_explained(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    accounts: {billing: prepaid}\n    below: [250, 100, 10]\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].below: a list of amounts needs accounts.currency, since a threshold means nothing "
        "without its currency; add accounts: {currency: USD}, or give amounts per currency: "
        "below: {USD: [250, 100, 10], INR: [20000, 8000, 800]}"
    )


def test_a_rule_without_a_condition_says_which_to_write(rules_dir: Path) -> None:
    assert only_problem(rules_dir, "alerts:\n  - id: a\n    notify: [owner]\n") == (
        "2: alerts[0]: no condition: write below: [amounts] (with accounts.currency), "
        "below: {USD: [amounts]}, and/or exhausted: true"
    )


def test_a_rule_without_an_id_is_told_it_is_required(rules_dir: Path) -> None:
    assert only_problem(rules_dir, "alerts:\n  - exhausted: true\n") == (
        "2: alerts[0].id: required field is missing"
    )


def test_an_id_with_capitals_or_spaces_is_rejected(rules_dir: Path) -> None:
    assert only_problem(rules_dir, "alerts:\n  - id: Low Balance\n    exhausted: true\n") == (
        "2: alerts[0].id: 'Low Balance' is not a valid rule id: use lower-case letters, digits, '.', '-' "
        "and '_', starting with a letter or digit (at most 64 characters)"
    )


def test_a_template_name_cannot_reach_outside_the_templates_directory(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    template: ../../etc/passwd\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].template: '../../etc/passwd' is not a valid template name: use lower-case letters, "
        "digits, '-' and '_', starting with a letter or digit (at most 64 characters)"
    )


def test_amounts_with_more_decimals_than_the_currency_has_are_errors(rules_dir: Path) -> None:
    path = write(
        rules_dir,
        "rules.yaml",
        "alerts:\n  - id: a\n    below:\n      USD: [10.005]\n      JPY: [1000.5]\n      BHD: [1.2345]\n",
    )
    assert problems_in(rules_dir) == [
        f"{path}:4: alerts[0].below.USD[0]: 10.005 USD has more decimals than USD allows (2)",
        f"{path}:5: alerts[0].below.JPY[0]: 1000.5 JPY has more decimals than JPY allows (0)",
        f"{path}:6: alerts[0].below.BHD[0]: 1.2345 BHD has more decimals than BHD allows (3)",
    ]


def test_a_threshold_written_twice_is_refused(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    accounts: {currency: USD}\n    below: [100, 10, 100.00]\n"
    assert (
        only_problem(rules_dir, body)
        == "4: alerts[0].below: 100 appears twice; each threshold may appear once"
    )


def test_thresholds_for_a_currency_the_selector_excludes_are_refused(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    accounts: {currency: USD}\n    below:\n      INR: [800]\n"
    assert only_problem(rules_dir, body) == (
        "5: alerts[0].below.INR: INR thresholds would never apply: accounts.currency is USD"
    )


def test_a_negative_rearm_band_is_refused(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    below: {USD: [10]}\n    rearm: {percent: -5}\n"
    assert (
        only_problem(rules_dir, body)
        == "4: alerts[0].rearm.percent: -5 is negative; a re-arm band is zero or more"
    )


def test_an_absurd_amount_is_refused_before_it_reaches_the_database(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    below: {USD: [1e30]}\n"
    assert only_problem(rules_dir, body) == (
        "3: alerts[0].below.USD[0]: 1E+30 USD is too large; amounts are at most 10,000,000,000,000.00 USD"
    )


def test_a_file_that_is_a_list_says_what_a_rule_file_is(rules_dir: Path) -> None:
    assert only_problem(rules_dir, "- id: a\n") == (
        "1: the file is a list, but a rule file is a mapping with an 'alerts:' list: "
        "add a line 'alerts:' above the rules"
    )


def test_a_decimal_in_a_multi_line_ladder_is_reported_on_its_own_line(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    below:\n      USD:\n        - 250\n        - 99.999\n"
    assert only_problem(rules_dir, body) == (
        "6: alerts[0].below.USD[1]: 99.999 USD has more decimals than USD allows (2)"
    )


def test_a_rule_that_is_not_a_mapping_is_named(rules_dir: Path) -> None:
    assert only_problem(rules_dir, "alerts:\n  - low-balance\n") == (
        "2: alerts[0]: 'low-balance' is not a mapping; write field: value lines here"
    )


# --- what a valid rule means ---------------------------------------------------------------------


def test_a_per_currency_ladder_compiles_to_minor_units_highest_first(rules_dir: Path) -> None:
    rule = one_rule(
        rules_dir,
        """\
alerts:
  - id: default-ladder
    below:
      USD: [10, 250, 100]
      INR: [20000, 8000, 800]
      JPY: [1000]
    rearm: 10%
""",
    )
    assert rule.step_sets == (
        StepSet("USD", (Step(25_000, 27_500), Step(10_000, 11_000), Step(1_000, 1_100))),
        StepSet("INR", (Step(2_000_000, 2_200_000), Step(800_000, 880_000), Step(80_000, 88_000))),
        StepSet("JPY", (Step(1_000, 1_100),)),
    )


def test_a_ladder_applies_to_each_currency_the_selector_names(rules_dir: Path) -> None:
    rule = one_rule(
        rules_dir, "alerts:\n  - id: a\n    accounts: {currency: [USD, EUR]}\n    below: [12.5]\n"
    )
    assert rule.step_sets == (
        StepSet("USD", (Step(1_250, 1_375),)),
        StepSet("EUR", (Step(1_250, 1_375),)),
    )


def test_exhausted_adds_a_zero_step_below_the_ladder(rules_dir: Path) -> None:
    rule = one_rule(
        rules_dir, "alerts:\n  - id: a\n    below: {USD: [10]}\n    exhausted: true\n    rearm: 5\n"
    )
    assert rule.step_sets == (StepSet("USD", (Step(1_000, 1_500), Step(0, 500, exhausted=True))),)


def test_exhausted_alone_watches_every_currency(rules_dir: Path) -> None:
    rule = one_rule(rules_dir, "alerts:\n  - id: a\n    exhausted: true\n    rearm: 0%\n")
    assert rule.step_sets == (StepSet(None, (Step(0, 0, exhausted=True),)),)


def test_an_absolute_rearm_band_is_in_the_currency_of_each_step_set(rules_dir: Path) -> None:
    rule = one_rule(rules_dir, "alerts:\n  - id: a\n    below: {USD: [100], BHD: [100]}\n    rearm: 2.5\n")
    assert rule.step_sets == (
        StepSet("USD", (Step(10_000, 10_250),)),
        StepSet("BHD", (Step(100_000, 102_500),)),
    )


def test_a_percentage_band_between_two_cents_re_arms_at_the_first_cent_above_it(rules_dir: Path) -> None:
    # 15 cents + 10% = 16.5 cents: a balance of 17 cents is above it, 16 is not.
    rule = one_rule(rules_dir, "alerts:\n  - id: a\n    below: {USD: [0.15]}\n    rearm: 10%\n")
    assert rule.step_sets == (StepSet("USD", (Step(15, 16),)),)  # re-arms when the balance is above 16


def test_an_amount_band_needs_a_currency(rules_dir: Path) -> None:
    body = "alerts:\n  - id: a\n    exhausted: true\n    rearm: 5\n"
    assert only_problem(rules_dir, body) == (
        "4: alerts[0].rearm: an amount band needs accounts.currency to know its unit; use a percentage"
    )


def test_recipients_may_be_one_comma_separated_string(rules_dir: Path) -> None:
    rule = one_rule(
        rules_dir,
        "alerts:\n  - id: a\n    exhausted: true\n"
        "    notify: 'owner, Billing@Acme.example ,ops@acme.example, ops@acme.example'\n",
    )
    assert rule.notify_owner
    assert rule.recipients == ("Billing@acme.example", "ops@acme.example")


def test_recipients_default_to_the_owner(rules_dir: Path) -> None:
    rule = one_rule(rules_dir, "alerts:\n  - id: a\n    exhausted: true\n")
    assert (rule.notify_owner, rule.recipients) == (True, ())


def test_literal_addresses_alone_leave_the_owner_out(rules_dir: Path) -> None:
    rule = one_rule(rules_dir, "alerts:\n  - id: a\n    exhausted: true\n    notify: [ops@acme.example]\n")
    assert (rule.notify_owner, rule.recipients) == (False, ("ops@acme.example",))


def test_the_selector_keeps_billing_currency_labels_and_ids(rules_dir: Path) -> None:
    rule = one_rule(
        rules_dir,
        """\
alerts:
  - id: gold
    accounts:
      billing: postpaid
      currency: [USD, INR]
      labels: {tier: gold, region: [eu, in]}
      ids: [1001, acme]
    exhausted: true
""",
    )
    selector = rule.selector
    assert selector.billing == "postpaid"
    assert selector.currencies == ("USD", "INR")
    assert selector.labels == (("region", ("eu", "in")), ("tier", ("gold",)))
    assert selector.ids == ("1001", "acme")


def test_a_selector_without_billing_watches_prepaid_unless_it_names_ids(rules_dir: Path) -> None:
    write(
        rules_dir,
        "rules.yaml",
        "alerts:\n  - id: plain\n    exhausted: true\n"
        "  - id: named\n    accounts: {ids: acme}\n    exhausted: true\n"
        "  - id: all\n    accounts: {billing: any}\n    exhausted: true\n",
    )
    rules = rules_in(rules_dir)
    assert [rules[i].selector.billing for i in ("plain", "named", "all")] == ["prepaid", None, None]


def test_disabled_rules_keep_their_whole_configuration(rules_dir: Path) -> None:
    rule = one_rule(
        rules_dir,
        "alerts:\n  - id: a\n    description: Weekend watch\n    enabled: false\n"
        "    below: {USD: [50]}\n    remind: 1h30m\n    template: low-balance\n",
    )
    assert (rule.enabled, rule.description, rule.remind, rule.template) == (
        False,
        "Weekend watch",
        timedelta(hours=1, minutes=30),
        "low-balance",
    )
    assert rule.step_sets == (StepSet("USD", (Step(5_000, 5_500),)),)


def test_a_rule_remembers_its_file_and_line(rules_dir: Path) -> None:
    path = write(
        rules_dir,
        "rules.yaml",
        "# comment\nalerts:\n  - id: a\n    exhausted: true\n\n  - id: b\n    exhausted: true\n",
    )
    rules = rules_in(rules_dir)
    assert [(r.source, r.line) for r in rules.values()] == [(str(path), 3), (str(path), 6)]


def test_yaml_decimals_become_decimal_and_never_float() -> None:
    rule = AlertRule.model_validate({"id": "a", "below": {"USD": ["0.1", 0]}, "rearm": "0.2"})
    assert rule.below == {"USD": [Decimal("0.1"), Decimal(0)]}
    assert all(type(a) is Decimal for a in rule.below["USD"])
    assert rule.rearm.amount == Decimal("0.2")


def test_an_empty_rules_file_holds_no_rules(rules_dir: Path) -> None:
    write(rules_dir, "empty.yaml", "# nothing yet\n")
    assert rules_in(rules_dir) == {}


def test_hidden_files_and_other_suffixes_are_not_rules(rules_dir: Path) -> None:
    write(rules_dir, ".draft.yaml", "not: valid: yaml")
    write(rules_dir, "notes.txt", "alerts: oops")
    write(rules_dir, "real.yml", "alerts:\n  - id: a\n    exhausted: true\n")
    assert list(rules_in(rules_dir)) == ["a"]


def test_a_missing_rules_directory_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ProblemsError) as caught:
        rule_files(tmp_path / "nowhere")
    assert str(caught.value) == f"{tmp_path / 'nowhere'}: rules directory not found"


# --- rules and templates checked together --------------------------------------------------------


def test_the_shipped_rules_and_templates_load() -> None:
    live = load_set(shipped.rules_dir(), shipped.templates_dir())
    # exhausted first: the ladders are inhibited by it, so it is decided before them.
    assert [r.id for r in live.rules] == [
        "exhausted",
        "default-ladder",
        "ladder-inr-eur",
        "recommended",
        "owner-alerts",
    ]
    ladder = live.rule("default-ladder")
    assert ladder is not None
    assert ladder.step_sets == (
        StepSet("USD", (Step(25_000, 27_500), Step(10_000, 11_000), Step(1_000, 1_100))),
    )
    # Only the owners' monthly usage report is on: the others are opt-in, the operators' one
    # needs a real address in place of ops@example.com.
    assert [(r.id, r.contents, r.period, r.cron, r.enabled) for r in live.reports] == [
        ("monthly-usage", "usage", "month", "0 8 1 * *", True),
        ("monthly-daywise", "daywise", "month", "0 8 1 * *", False),
        ("weekly-transactions", "transactions", "week", "0 8 * * mon", False),
        ("operators-low-balance", "low-balance", None, "0 8 * * *", False),
    ]
    assert all(r.attach_csv for r in live.reports)
    assert [(r.notify_owner, r.recipients) for r in live.reports] == [
        (True, ()),
        (True, ()),
        (True, ()),
        (False, ("ops@example.com",)),
    ]


def test_a_missing_template_is_reported_at_the_rule(live_from: Live, rules_dir: Path) -> None:
    with pytest.raises(ProblemsError) as caught:
        live_from("alerts:\n  - id: a\n    exhausted: true\n    template: low-balanse\n")
    assert [str(p) for p in caught.value.problems] == [
        f"{rules_dir / 'rules.yaml'}:2: template: template 'low-balanse' not found in "
        f"{shipped.templates_dir()} (have: {shipped_templates()}); a template is a directory holding "
        "subject.txt, body.txt and optionally body.html"
    ]


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    """A copy of the shipped templates the test may break."""
    return Path(shutil.copytree(shipped.templates_dir(), tmp_path / "templates"))


def test_a_template_syntax_error_is_reported_with_the_template_file_and_line(
    rules_dir: Path, templates_dir: Path
) -> None:
    write(rules_dir, "rules.yaml", "alerts:\n  - id: a\n    exhausted: true\n")
    body = templates_dir / "low-balance" / "body.txt"
    body.write_text("Hello {{ account.name }},\n\n{% if alert.exhausted %}\nused up\n")
    with pytest.raises(ProblemsError) as caught:
        load_set(rules_dir, templates_dir)
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == (str(body), 4)
    # Jinja lists the tags it would accept in no fixed order.
    assert problem.message.startswith(
        "Unexpected end of template. Jinja was looking for the following tags: "
    )
    assert problem.message.endswith("The innermost block that needs to be closed is 'if'.")


def test_a_template_that_uses_an_unknown_variable_fails_the_check(
    rules_dir: Path, templates_dir: Path
) -> None:
    write(rules_dir, "rules.yaml", "alerts:\n  - id: a\n    exhausted: true\n")
    subject = templates_dir / "low-balance" / "subject.txt"
    subject.write_text("Balance of\n{{ acount.name }}\n")
    with pytest.raises(ProblemsError) as caught:
        load_set(rules_dir, templates_dir)
    assert [str(p) for p in caught.value.problems] == [f"{subject}:2: 'acount' is undefined"]


def test_rule_and_template_problems_are_reported_together(rules_dir: Path, templates_dir: Path) -> None:
    rules = write(rules_dir, "rules.yaml", "alerts:\n  - id: a\n    exhausted: nope\n")
    html = templates_dir / "low-balance" / "body.html"
    html.write_text("{% extends '_base.html' %}\n{% block content %}{{ balance | money }{% endblock %}\n")
    with pytest.raises(ProblemsError) as caught:
        load_set(rules_dir, templates_dir)
    assert [str(p) for p in caught.value.problems] == [
        f"{rules}:3: alerts[0].exhausted: 'nope' is not true or false; write true or false",
        f"{html}:2: unexpected '}}'",
    ]


# --- inhibition ---------------------------------------------------------------------------------

INHIBITING = """alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [100, 10]
    inhibited_by: [zero]
  - id: zero
    exhausted: true
"""


def test_a_rule_comes_after_the_rules_that_can_silence_it(rules_dir: Path) -> None:
    write(rules_dir, "rules.yaml", INHIBITING)
    rules = parse_rules(read_files(rule_files(rules_dir)))
    assert [r.id for r in rules] == ["zero", "ladder"]
    assert rules[1].inhibited_by == ("zero",)


def test_inhibited_by_must_name_an_existing_rule(rules_dir: Path) -> None:
    path = write(rules_dir, "rules.yaml", INHIBITING.replace("[zero]", "[zeros]"))
    assert problems_in(rules_dir) == [
        f"{path}:2: alerts[0].inhibited_by: no rule 'zeros' (did you mean 'zero'?); "
        "name the id of a rule in the rules directory"
    ]


def test_rules_silencing_each_other_in_a_loop_are_refused(rules_dir: Path) -> None:
    path = write(rules_dir, "rules.yaml", INHIBITING + "    inhibited_by: [ladder]\n")
    assert problems_in(rules_dir) == [
        f"{path}:2: alerts[0].inhibited_by: rules silence each other in a loop "
        "(ladder -> zero -> ladder); break the loop"
    ]


def test_a_rule_cannot_silence_itself(rules_dir: Path) -> None:
    write(rules_dir, "rules.yaml", INHIBITING.replace("[zero]", "[ladder]"))
    [problem] = problems_in(rules_dir)
    assert problem.endswith("inhibited_by: a rule cannot silence itself; name other rules' ids")


def shipped_templates() -> str:
    """The names of the shipped templates, as a missing-template message lists them."""
    return ", ".join(sorted(p.parent.name for p in shipped.templates_dir().glob("*/subject.txt")))
