"""`plan`: which accounts an edit of the rules would start or stop alerting, on SQLite and PostgreSQL.

Alert state is created the way the daemon creates it, by running the real
pipeline over the old rules; the plan then reads that database. Amounts are in cents.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from balancewatch.cli import main
from balancewatch.config import Settings
from balancewatch.core import shipped
from balancewatch.liveset import LiveSet
from balancewatch.rules.compiled import CompiledRule
from balancewatch.rules.loader import SourceFile, parse_rules
from balancewatch.runtime.service import build_pipeline
from balancewatch.store import status
from balancewatch.tools.plan import compare, read_only
from balancewatch.tools.plan.model import NO_START, NO_STOP, Plan, Reason, RulePlan, Status
from tests.conftest import Clock, write_rules
from tests.helpers import account, outbox, post

LADDER = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
"""
RAISED = LADDER.replace("[250, 100, 10]", "[300, 100, 10]")
NONE = "alerts: []\n"

MakeSettings = Callable[..., Settings]
LiveFrom = Callable[[str], LiveSet]


def rules(body: str, file: str = "rules.yaml") -> tuple[CompiledRule, ...]:
    return tuple(parse_rules([SourceFile(Path(file), body)]))


@pytest.fixture
def fired(
    engine: Engine, db_url: str, make_settings: MakeSettings, live_from: LiveFrom, clock: Clock
) -> Callable[[str], None]:
    """Run the pipeline once over ``body``, as the daemon running those rules would."""

    def run(body: str) -> None:
        build_pipeline(engine, make_settings(db_url), live_from(body)).evaluate(clock())

    return run


@pytest.fixture
def ladder_db(engine: Engine, clock: Clock, fired: Callable[[str], None]) -> Engine:
    """Four USD balances after the daemon ran LADDER: $350 (nothing fired), $280 (nothing
    fired), $200 (250 fired) and $50 (250 and 100 fired)."""
    for name, cents in [("above", 35000), ("between", 28000), ("fired250", 20000), ("fired100", 5000)]:
        account(engine, name)
        post(engine, name, "USD", cents, clock())
    fired(LADDER)
    return engine


def plan_of(engine: Engine, old: str, new: str, now: datetime, limit: int = 10) -> Plan:
    with read_only(engine) as conn:
        return compare(conn, rules(old), rules(new), now, limit)


def only(plan: Plan, rule_id: str = "ladder") -> RulePlan:
    (found,) = [r for r in plan.rules if r.rule_id == rule_id]
    return found


def started(rule: RulePlan) -> list[tuple[str, int, str]]:
    assert rule.start is not None
    return [(e.account_id, e.step, e.why) for e in rule.start.first]


def stopped(rule: RulePlan) -> list[tuple[str, int, str]]:
    assert rule.stop is not None
    return [(e.account_id, e.step, e.why) for e in rule.stop.first]


# --- what an edit starts and stops ---------------------------------------------------------------


def test_raising_a_threshold_starts_the_balances_below_the_new_step_and_stops_the_old_steps_state(
    ladder_db: Engine, clock: Clock
) -> None:
    rule = only(plan_of(ladder_db, LADDER, RAISED, clock()))
    assert rule.status is Status.changed
    assert [(c.field, c.old, c.new) for c in rule.changes] == [("below USD", "250/100/10", "300/100/10")]
    # $50 already heard about $100: the new $300 step is marked silently, as the daemon would.
    assert started(rule) == [("between", 30000, "alert"), ("fired250", 30000, "alert")]
    assert stopped(rule) == [("fired100", 25000, "step-gone"), ("fired250", 25000, "step-gone")]
    assert rule.stop is not None
    assert [(g.reason, g.step, g.states) for g in rule.stop.groups] == [(Reason.step_gone, 25000, 2)]


def test_a_new_rule_starts_every_low_balance_it_selects_and_stops_nothing(
    ladder_db: Engine, clock: Clock
) -> None:
    floor = LADDER + "  - id: floor\n    accounts: {currency: USD}\n    below: [210]\n"
    plan = plan_of(ladder_db, LADDER, floor, clock())
    added = only(plan, "floor")
    assert (added.status, added.changes) == (Status.added, ())
    assert started(added) == [("fired100", 21000, "alert"), ("fired250", 21000, "alert")]
    assert added.stop == NO_STOP
    assert only(plan).status is Status.unchanged


def test_a_removed_rule_stops_every_fired_state_it_had(ladder_db: Engine, clock: Clock) -> None:
    rule = only(plan_of(ladder_db, LADDER, NONE, clock()))
    assert rule.status is Status.removed
    assert rule.start == NO_START
    assert stopped(rule) == [
        ("fired100", 25000, "rule-removed"),
        ("fired100", 10000, "rule-removed"),
        ("fired250", 25000, "rule-removed"),
    ]
    assert rule.stop is not None
    assert (rule.stop.accounts, rule.stop.balances) == (2, 2)


def test_disabling_a_rule_stops_its_fired_state_and_starts_nothing(ladder_db: Engine, clock: Clock) -> None:
    disabled = LADDER + "    enabled: false\n"
    rule = only(plan_of(ladder_db, LADDER, disabled, clock()))
    assert [(c.field, c.old, c.new) for c in rule.changes] == [("enabled", "true", "false")]
    assert rule.start == NO_START
    assert {why for _, _, why in stopped(rule)} == {"rule-disabled"}
    assert rule.stop is not None and rule.stop.accounts == 2


def test_narrowing_the_selector_by_label_stops_the_accounts_left_out(
    engine: Engine, clock: Clock, fired: Callable[[str], None]
) -> None:
    for name, labels in [("pro", {"tier": "pro"}), ("basic", {"tier": "basic"}), ("plain", None)]:
        account(engine, name, labels=labels)
        post(engine, name, "USD", 20000, clock())
    fired(LADDER)
    narrowed = LADDER.replace("{currency: USD}", "{currency: USD, labels: {tier: pro}}")
    rule = only(plan_of(engine, LADDER, narrowed, clock()))
    assert [c.field for c in rule.changes] == ["accounts"]
    # "plain" has no tier label at all: left out just the same.
    assert stopped(rule) == [
        ("basic", 25000, "account-not-selected"),
        ("plain", 25000, "account-not-selected"),
    ]
    assert started(rule) == []


def test_dropping_a_currency_stops_the_balances_in_it(
    engine: Engine, clock: Clock, fired: Callable[[str], None]
) -> None:
    both = "alerts:\n  - id: ladder\n    below: {USD: [250], EUR: [250]}\n"
    account(engine, "acme")
    post(engine, "acme", "USD", 20000, clock())
    post(engine, "acme", "EUR", 20000, clock())
    fired(both)
    rule = only(plan_of(engine, both, both.replace(", EUR: [250]", ""), clock()))
    assert stopped(rule) == [("acme", 25000, "currency-not-covered")]
    assert rule.stop is not None and rule.stop.groups[0].currency == "EUR"


def test_a_narrower_rearm_band_stops_the_state_of_balances_now_above_it(
    ladder_db: Engine, clock: Clock
) -> None:
    # $200 -> $260: still inside 250 + 10%, so the daemon keeps the step fired.
    post(ladder_db, "fired250", "USD", 6000, clock.advance(hours=1))
    rule = only(plan_of(ladder_db, LADDER, LADDER + "    rearm: 0%\n", clock()))
    assert [(c.field, c.old, c.new) for c in rule.changes] == [("rearm", "10%", "0%")]
    assert stopped(rule) == [("fired250", 25000, "rearmed")]
    assert started(rule) == []


def test_unchanged_rules_report_nothing_even_while_an_alert_is_due(ladder_db: Engine, clock: Clock) -> None:
    post(ladder_db, "between", "USD", -5000, clock.advance(minutes=1))  # $230: due at the next poll
    with read_only(ladder_db) as conn:
        # Moved to another file and reindented: the same rule.
        moved = rules(
            "alerts:\n- id: ladder\n  below: [250, 100, 10]\n  accounts: {currency: USD}\n", "b.yaml"
        )
        rule = only(compare(conn, rules(LADDER), moved, clock()))
    assert (rule.status, rule.changes, rule.start, rule.stop) == (Status.unchanged, (), None, None)


def test_re_enabling_a_rule_starts_only_the_steps_crossed_while_it_was_off(
    ladder_db: Engine, clock: Clock, fired: Callable[[str], None]
) -> None:
    disabled = LADDER + "    enabled: false\n"
    post(ladder_db, "between", "USD", -5000, clock.advance(hours=1))  # $230, unseen while off
    fired(disabled)
    rule = only(plan_of(ladder_db, disabled, LADDER, clock()))
    assert [(c.field, c.old, c.new) for c in rule.changes] == [("enabled", "false", "true")]
    # $200 and $50 fired before the rule was disabled: their state resumes, no second email.
    assert started(rule) == [("between", 25000, "alert")]
    assert rule.stop == NO_STOP


def test_alerts_due_under_the_rules_in_effect_too_are_not_counted_as_started(
    ladder_db: Engine, clock: Clock
) -> None:
    post(ladder_db, "above", "USD", -26000, clock.advance(minutes=1))  # $90: $100 is due either way
    rule = only(plan_of(ladder_db, LADDER, RAISED, clock()))
    assert started(rule) == [("between", 30000, "alert"), ("fired250", 30000, "alert")]
    assert rule.start is not None and rule.start.due_anyway == 1


def test_a_change_of_wording_or_recipients_is_listed_without_effects(ladder_db: Engine, clock: Clock) -> None:
    reworded = LADDER + "    description: Low balance\n    notify: [owner, ops@example.com]\n"
    rule = only(plan_of(ladder_db, LADDER, reworded, clock()))
    assert [(c.field, c.old, c.new) for c in rule.changes] == [
        ("notify", "owner", "owner, ops@example.com"),
        ("description", "", "Low balance"),
    ]
    assert (rule.start, rule.stop) == (None, None)


def test_only_the_first_accounts_are_listed_but_all_are_counted(ladder_db: Engine, clock: Clock) -> None:
    rule = only(plan_of(ladder_db, LADDER, NONE, clock(), limit=1))
    assert rule.stop is not None
    assert (rule.stop.accounts, [e.account_id for e in rule.stop.first]) == (2, ["fired100"])


def test_the_plan_connection_refuses_writes_and_leaves_the_pool_writable(
    engine: Engine, clock: Clock
) -> None:
    row = {"name": "probe", "value": "x", "updated_at": clock()}
    meta = SQLModel.metadata.tables["balancewatch_meta"]
    with pytest.raises(DBAPIError), read_only(engine) as conn:
        conn.execute(insert(meta).values(**row))
    with engine.begin() as conn:
        conn.execute(insert(meta).values(**row))


# --- the command ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str, rules_dir: Path) -> Iterator[Cli]:
    """Run ``balancewatch ARGV`` against the test database with ``rules_dir`` as the rules on disk."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    environ = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_LOG__LEVEL": "warning",
        "BALANCEWATCH_DATABASE__URL": db_url,
        "BALANCEWATCH_RULES_DIR": str(rules_dir),
        "BALANCEWATCH_TEMPLATES_DIR": str(shipped.templates_dir()),
    }

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv), environ)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level


def daemon_reports(engine: Engine, body: str, heartbeat: datetime | None = None) -> None:
    """Record ``body`` as the rules in effect, as a running daemon publishes them."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        status.publish(
            conn,
            "web-1:4242",
            {
                "started_at": now - timedelta(hours=1),
                "heartbeat_at": heartbeat or now,
                "live_digest": "d" * 64,
                "live_rules": len(rules(body)),
                "live_loaded_at": now - timedelta(hours=1),
                "rule_files": {"rules.yaml": body},
            },
        )


def against(tmp_path: Path, body: str) -> Path:
    directory = tmp_path / "before"
    directory.mkdir()
    write_rules(directory, body)
    return directory


def test_plan_compares_the_rules_on_disk_with_the_rules_the_running_daemon_loaded(
    ladder_db: Engine, cli: Cli, rules_dir: Path
) -> None:
    daemon_reports(ladder_db, LADDER)
    write_rules(rules_dir, RAISED)
    result = cli("plan")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[1].startswith("     with the rules in effect on web-1:4242 (set dddddddddddd, loaded ")
    assert "rule ladder: changed (below USD: 250/100/10 -> 300/100/10)" in lines
    assert "  would start alerting now: 2 accounts" in lines
    assert "  would stop: 2 accounts" in lines
    assert "    step $250.00: 2 fired, step no longer in the rule" in lines
    assert any(line.split() == ["between", "Between", "$280.00", "alert", "at", "$300.00"] for line in lines)
    assert (
        lines[-1]
        == "Plan: 0 added, 1 changed, 0 removed, 0 unchanged; 2 would start alerting now, 2 would stop."
    )


def test_against_a_directory_compares_with_it_instead_of_the_rules_in_effect(
    ladder_db: Engine, cli: Cli, rules_dir: Path, tmp_path: Path
) -> None:
    daemon_reports(ladder_db, RAISED)
    write_rules(rules_dir, RAISED)
    assert cli("plan").out.splitlines()[-1].startswith("Plan: 0 added, 0 changed, 0 removed, 1 unchanged;")
    before = against(tmp_path, LADDER)
    result = cli("plan", "--against", str(before))
    assert (result.code, result.err) == (0, "")
    assert f"     with the rules in {before}." in result.out.splitlines()
    assert "rule ladder: changed (below USD: 250/100/10 -> 300/100/10)" in result.out


def test_without_a_daemon_reporting_plan_exits_1_and_says_to_pass_against(
    ladder_db: Engine, cli: Cli, rules_dir: Path
) -> None:
    write_rules(rules_dir, RAISED)
    never = cli("plan")
    assert (never.code, never.out) == (1, "")
    assert "no daemon has ever reported to this database" in never.err
    assert "pass --against DIR" in never.err
    daemon_reports(ladder_db, LADDER, heartbeat=datetime.now(UTC) - timedelta(hours=1))
    stale = cli("plan")
    assert stale.code == 1
    assert "the last report came from web-1:4242 at " in stale.err


def test_against_empty_shows_what_a_first_start_would_send(
    ladder_db: Engine, cli: Cli, rules_dir: Path
) -> None:
    write_rules(rules_dir, RAISED)
    result = cli("plan", "--against-empty")
    assert (result.code, result.err) == (0, "")
    assert "rule ladder: added" in result.out
    # The stored state of the same rule id still counts: $50 is not alerted again.
    assert "  would start alerting now: 2 accounts" in result.out


def test_invalid_rules_on_disk_are_listed_with_path_and_line_and_exit_1(
    ladder_db: Engine, cli: Cli, rules_dir: Path
) -> None:
    daemon_reports(ladder_db, LADDER)
    path = write_rules(rules_dir, LADDER.replace("[250, 100, 10]", "[250, abc]"))
    result = cli("plan")
    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines() == [
        f"{path}:5: alerts[0].below[1]: 'abc' is not an amount; write a number such as 100 or 12.50",
        f"plan: the rules in {rules_dir} have problems: 1 problem",
    ]


def test_plan_writes_nothing_and_leaves_the_outbox_alone(
    ladder_db: Engine, cli: Cli, rules_dir: Path
) -> None:
    daemon_reports(ladder_db, LADDER)
    write_rules(rules_dir, RAISED + "  - id: floor\n    accounts: {currency: USD}\n    below: [150]\n")
    before, mail = dump(ladder_db), outbox(ladder_db)
    assert len(mail) == 2
    assert cli("plan").code == 0
    assert cli("plan", "--json").code == 0
    assert dump(ladder_db) == before
    assert outbox(ladder_db) == mail


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted."""
    with engine.connect() as conn:
        return {
            name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
            for name, table in SQLModel.metadata.tables.items()
        }


def test_plan_as_json_gives_the_same_plan_with_exact_amounts(
    ladder_db: Engine, cli: Cli, rules_dir: Path
) -> None:
    daemon_reports(ladder_db, LADDER)
    write_rules(rules_dir, RAISED)
    result = cli("plan", "--json", "--limit", "1")
    assert (result.code, result.err) == (0, "")
    data = json.loads(result.out)
    assert data["old"]["source"] == "in-effect" and data["old"]["instance"] == "web-1:4242"
    assert data["new"]["path"] == str(rules_dir)
    assert data["totals"] == {"added": 0, "removed": 0, "changed": 1, "unchanged": 0, "start": 2, "stop": 2}
    (rule,) = data["rules"]
    assert rule["changes"] == [{"field": "below USD", "old": "250/100/10", "new": "300/100/10"}]
    assert rule["start"] == {
        "accounts": 2,
        "balances": 2,
        "due_anyway": 0,
        "first": [
            {
                "account": "between",
                "name": "Between",
                "currency": "USD",
                "balance_minor": 28000,
                "balance": "280.00",
                "step_minor": 30000,
                "step": "300.00",
                "kind": "alert",
            }
        ],
    }
    assert rule["stop"]["by_reason"] == [
        {"reason": "step-gone", "currency": "USD", "step_minor": 25000, "step": "250.00", "states": 2}
    ]
    assert [e["reason"] for e in rule["stop"]["first"]] == ["step-gone"]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["plan", "--limit", "-1"], "argument --limit: -1 is negative; write 0 or more"),
        (["plan", "--limit", "many"], "argument --limit: 'many' is not a whole number"),
        (["plan", "--against", "x", "--against-empty"], "not allowed with argument --against"),
    ],
)
def test_bad_usage_of_plan_exits_2(cli: Cli, argv: list[str], complaint: str) -> None:
    result = cli(*argv)
    assert (result.code, result.out) == (2, "")
    assert complaint in result.err


# --- steps that follow usage or the owner --------------------------------------------------------

USAGE_RULE = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [average-daily-usage]
"""


def test_a_fired_usage_step_kept_in_an_edited_rule_does_not_stop(
    engine: Engine, clock: Clock, fired: Callable[[str], None]
) -> None:
    account(engine, "heavy")
    post(engine, "heavy", "USD", 100_000, clock.advance(days=-10))
    for _day in range(10):
        post(engine, "heavy", "USD", -9_500, clock.advance(days=1))  # $95 a day: $50 left
    fired(USAGE_RULE)  # $50 is below one day of usage ($95): fired
    widened = USAGE_RULE.replace("[average-daily-usage]", "[average-daily-usage, 50]")
    rule = only(plan_of(engine, USAGE_RULE, widened, clock()))
    assert rule.status is Status.changed
    assert rule.stop == NO_STOP  # the usage step is still in the ladder
    removed = only(plan_of(engine, USAGE_RULE, widened.replace("average-daily-usage, ", ""), clock()))
    assert stopped(removed) == [("heavy", -1, "step-gone")]


def test_an_account_new_since_the_last_usage_refresh_is_planned_with_the_usage_the_daemon_computes(
    engine: Engine, clock: Clock
) -> None:
    account(engine, "newco")  # no usage summary row: no refresh has seen it yet
    post(engine, "newco", "USD", 100_000, clock.advance(days=-10))
    for _day in range(10):
        post(engine, "newco", "USD", -9_500, clock.advance(days=1))  # $95 a day: $50 left
    plan = plan_of(engine, "alerts: []", USAGE_RULE, clock())
    assert started(only(plan)) == [("newco", 9_500, "alert")]
    too_short = compare_with_history(engine, USAGE_RULE, clock(), timedelta(days=30))
    assert started(only(too_short)) == []  # ten days of history is short of 30: no usage step


def compare_with_history(engine: Engine, new: str, now: datetime, min_history: timedelta) -> Plan:
    with read_only(engine) as conn:
        return compare(conn, (), rules(new), now, min_history=min_history)
