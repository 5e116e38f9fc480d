"""The JSON Schema of rule files: shipped, current, valid, and truthful about what the daemon accepts.

Editors see a rule file as plain YAML (here ``yaml.safe_load``); the daemon reads
it with ``yamlfile`` and the models. For every sample below the two must agree,
except for the listed things only ``balancewatch check`` can know.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from balancewatch.cli import main
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.rules.loader import SourceFile, parse_rules
from balancewatch.rules.schema import rule_file_schema

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SCHEMA = ROOT / "docs" / "rules.schema.json"
SCHEMA_LINE = "# yaml-language-server: $schema="

# yaml-language-server implements draft-07; the schema declares 2020-12. Both must give one verdict.
VALIDATORS: list[type[Validator]] = [Draft202012Validator, Draft7Validator]


@pytest.fixture(params=VALIDATORS, ids=["draft-2020-12", "draft-07"])
def validator(request: pytest.FixtureRequest) -> Validator:
    return request.param(rule_file_schema())


def schema_problem(validator: Validator, data: Any) -> str | None:
    """Where and why the schema rejects ``data`` (its most relevant error), or None if it accepts."""
    error = best_match(validator.iter_errors(data))
    return None if error is None else f"{error.json_path}: {error.message}"


def daemon_problems(text: str) -> list[str]:
    """What the daemon says about a rule file with ``text`` (no template checks)."""
    try:
        parse_rules([SourceFile(Path("rules.yaml"), text)])
    except ProblemsError as exc:
        return [str(p) for p in exc.problems]
    return []


def rule_file(rule: str) -> str:
    return f"alerts:\n  - {rule}\n"


# --- the schema is shipped, current and a valid schema -------------------------------------------


def test_balancewatch_schema_prints_exactly_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"], {"BALANCEWATCH_LOG__LEVEL": "warning"}) == 0
    printed = capsys.readouterr().out
    assert printed == SHIPPED_SCHEMA.read_text(encoding="utf-8"), (
        "docs/rules.schema.json is stale: run `balancewatch schema > docs/rules.schema.json`"
    )


def test_the_schema_is_a_valid_draft_2020_12_and_draft_07_schema() -> None:
    schema = json.loads(SHIPPED_SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "balancewatch rule file"
    for kind in VALIDATORS:
        kind.check_schema(schema)


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    schema = rule_file_schema()
    objects = [schema, *schema["$defs"].values()]
    assert [o.get("additionalProperties") for o in objects] == [False] * len(objects)


def test_every_field_has_a_description_for_hover_text() -> None:
    schema = rule_file_schema()
    models = [schema, *schema["$defs"].values()]
    undescribed = [
        name
        for model in models
        for name, field in model["properties"].items()
        if not field.get("description")
    ]
    assert undescribed == []


# --- shipped and documented rule files pass it --------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted(shipped.rules_dir().glob("*.yaml")) + sorted(shipped.rules_dir().glob("examples/*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_rule_file_passes_the_schema_and_names_it(validator: Validator, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert schema_problem(validator, yaml.safe_load(text)) is None
    first = text.splitlines()[0]
    assert first.startswith(SCHEMA_LINE) and first.endswith("docs/rules.schema.json")
    assert (path.parent / first.removeprefix(SCHEMA_LINE)).resolve() == SHIPPED_SCHEMA


def readme_rule_examples() -> list[str]:
    """The YAML blocks of README's Rules section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Rules\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_rules_section_has_examples() -> None:
    assert readme_rule_examples()


@pytest.mark.parametrize("index", range(len(readme_rule_examples())))
def test_every_readme_rule_example_passes_the_schema_and_the_check(validator: Validator, index: int) -> None:
    text = readme_rule_examples()[index]
    assert schema_problem(validator, yaml.safe_load(text)) is None
    assert daemon_problems(text) == []


# --- invalid files fail it, where the daemon says they fail --------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("alert:\n  - {id: a, exhausted: true}\n", "$: Additional properties are not allowed ('alert' was"),
        (rule_file("{id: a, exhausted: true, colour: red}"), "$.alerts[0]: Additional properties"),
        (rule_file("{id: a, exhausted: true, accounts: {plan: gold}}"), "$.alerts[0].accounts: Additional"),
        (rule_file("{id: a, exhausted: true, rearm: {pct: 5}}"), "$.alerts[0].rearm: "),
        (
            rule_file("{id: a, accounts: {currency: usd}, below: [10]}"),
            "$.alerts[0].accounts.currency: 'usd'",
        ),
        (rule_file("{id: a, below: {Usd: [10]}}"), "$.alerts[0].below: "),
        # A ladder item is an amount or a usage step, so the validator reports the item as a whole.
        (rule_file("{id: a, below: {USD: [100, -5]}}"), "$.alerts[0].below.USD[1]: -5 is not valid"),
        (rule_file("{id: a, below: {USD: [ten]}}"), "$.alerts[0].below.USD[0]: 'ten' is not valid"),
        (rule_file("{id: a, below: [100]}"), "$.alerts[0]: 'accounts' is a required property"),
        (rule_file("{id: a, exhausted: true, remind: daily}"), "$.alerts[0].remind: 'daily' does not match"),
        (rule_file("{id: a, exhausted: true, notify: []}"), "$.alerts[0].notify: [] should be non-empty"),
        (rule_file("{id: Low Balance, exhausted: true}"), "$.alerts[0].id: 'Low Balance' does not match"),
    ],
)
def test_the_schema_rejects_what_the_daemon_rejects_at_the_same_place(
    validator: Validator, text: str, where: str
) -> None:
    problem = schema_problem(validator, yaml.safe_load(text))
    assert problem is not None and problem.startswith(where), problem
    assert daemon_problems(text) != []


AGREED_VALID = [
    "{id: a, below: {USD: [250, 100, 10], INR: [20000, 8000, 800]}}",
    "{id: a, below: {USD: [12.50, 0.5]}}",
    "{id: a, below: {USD: ['1,000', '2_500.5', ' 7 ', 5e3]}}",
    "{id: a, accounts: {currency: [USD, EUR]}, below: [10]}",
    "{id: a, accounts: {billing: any, currency: USD, ids: [1001, acme], labels: {t: [x, 2]}}, below: [1]}",
    "{id: a.b_c-1, exhausted: true, enabled: false, description: night watch}",
    "{id: a, exhausted: true, rearm: 10%}",
    "{id: a, exhausted: true, rearm: 0%}",
    "{id: a, exhausted: true, rearm: {percent: 12.5}}",
    "{id: a, below: {USD: [10]}, rearm: 2.5}",
    "{id: a, below: {USD: [10]}, rearm: {amount: '5'}}",
    "{id: a, exhausted: true, remind: 24h}",
    "{id: a, exhausted: true, remind: 1h30m}",
    "{id: a, exhausted: true, remind: 1 h 30 m}",
    "{id: a, exhausted: true, remind: 2W}",
    "{id: a, exhausted: true, remind: 3600}",
    "{id: a, exhausted: true, remind: '90'}",
    "{id: a, exhausted: true, notify: [owner, ops@example.com]}",
    "{id: a, exhausted: true, notify: 'owner, ops@example.com,'}",
    "{id: a, exhausted: true, notify: ['owner, a@example.com', b@example.com]}",
    "{id: a, exhausted: true, notify: owner}",
    "{id: a, exhausted: true, template: low-balance}",
    "{id: a, below: null, exhausted: true, remind: null, accounts: {currency: null, ids: null}}",
]

AGREED_INVALID = [
    "{id: a}",
    "{id: a, exhausted: false}",
    "{id: a, below: [10]}",
    "{id: a, accounts: {currency: USD}, below: 100}",
    "{id: a, accounts: {currency: USD}, below: '250, 100'}",
    "{id: a, below: {}}",
    "{id: a, below: {USD: []}}",
    "{id: a, below: {USD: [10, 10]}}",
    "{id: a, below: {usd: [10]}}",
    "{id: a, below: {USD: [-5]}}",
    "{id: a, below: {USD: ['$10']}}",
    "{id: a, below: {USD: [true]}}",
    "{id: a, below: {USD: ['']}}",
    "{id: a, exhausted: true, accounts: {currency: usd}}",
    "{id: a, exhausted: true, accounts: {billing: prepay}}",
    "{id: a, exhausted: true, accounts: [USD]}",
    "{id: a, exhausted: true, accounts: {labels: [gold]}}",
    "{id: a, exhausted: true, remind: daily}",
    "{id: a, exhausted: true, remind: -1h}",
    "{id: a, exhausted: true, remind: 30}",
    "{id: a, exhausted: true, remind: 1d2}",
    "{id: a, exhausted: true, rearm: ten percent}",
    "{id: a, exhausted: true, rearm: -5%}",
    "{id: a, exhausted: true, rearm: [10]}",
    "{id: a, exhausted: true, rearm: {percent: 5, amount: 1}}",
    "{id: a, exhausted: true, rearm: {percent: 5000}}",
    "{id: a, exhausted: true, rearm: {}}",
    "{id: a, exhausted: true, notify: []}",
    "{id: a, exhausted: true, notify: ''}",
    "{id: a, exhausted: true, notify: [owner, ops@]}",
    "{id: a, exhausted: true, notify: [Owner]}",
    "{id: a, exhausted: true, notify: 'owner; ops@example.com'}",
    "{id: a, exhausted: true, notify: [5]}",
    "{id: Low Balance, exhausted: true}",
    "{id: -a, exhausted: true}",
    "{id: 42, exhausted: true}",
    "{id: a, exhausted: true, template: ../etc/passwd}",
    "{id: a, exhausted: true, template: Low}",
    "{id: a, exhausted: maybe}",
    "{id: a, exhausted: true, description: [x]}",
]


@pytest.mark.parametrize("rule", AGREED_VALID)
def test_what_the_daemon_accepts_the_schema_accepts(validator: Validator, rule: str) -> None:
    text = rule_file(rule)
    assert (daemon_problems(text), schema_problem(validator, yaml.safe_load(text))) == ([], None)


@pytest.mark.parametrize("rule", AGREED_INVALID)
def test_what_the_daemon_rejects_the_schema_rejects(validator: Validator, rule: str) -> None:
    text = rule_file(rule)
    assert daemon_problems(text) != []
    assert schema_problem(validator, yaml.safe_load(text)) is not None


ONLY_CHECK_KNOWS = [
    "{id: a, exhausted: true, accounts: {currency: XYZ}}",  # no such currency
    "{id: a, below: {USD: [10.005]}}",  # more decimals than USD has
    "{id: a, below: {JPY: [1000.5]}}",  # JPY has none
    "{id: a, below: {USD: [1e30]}}",  # beyond any balance
    "{id: a, accounts: {currency: USD}, below: {INR: [10]}}",  # a currency the selector excludes
    "{id: a, exhausted: true, rearm: 5}",  # an amount band with no currency to be in
    "{id: a, exhausted: true, rearm: 5000%}",  # above 1000%, written as text
    "{id: a, exhausted: true, remind: 30s}",  # under a minute, written as text
    "{id: a, exhausted: true, notify: [ops@example.invalid]}",  # a reserved domain
]


@pytest.mark.parametrize("rule", ONLY_CHECK_KNOWS)
def test_what_only_the_check_can_know_passes_the_schema_and_fails_the_check(
    validator: Validator, rule: str
) -> None:
    text = rule_file(rule)
    assert schema_problem(validator, yaml.safe_load(text)) is None
    assert daemon_problems(text) != []
