"""Sending reports exactly once: claims, leases, several instances, what a report carries, and the CLI.

Every test that touches storage runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from balancewatch.cli import main
from balancewatch.config import Settings
from balancewatch.core.problems import Problem
from balancewatch.liveset import LiveSet
from balancewatch.reports import claims
from balancewatch.reports.periods import period_before
from balancewatch.reports.runner import ReportStats, run_now
from tests.reportkit import (
    OUTBOX,
    REPORT_TEMPLATES,
    RUN,
    Instance,
    account,
    cursor,
    messages,
    runs,
    usage,
    write_reports,
)

FIRE = datetime(2026, 3, 14, 8, 0, tzinfo=UTC)
DAILY = """
reports:
  - id: daily-usage
    schedule: daily at 08:00
    timezone: UTC
    contents: usage
"""


@pytest.fixture
def instances(db_url: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Instance]]:
    """Start daemon instances on the test's database (each with its own engine); closed afterwards."""
    started: list[Instance] = []

    def start(live: LiveSet, worker: str = "instance-1", **env: str) -> Instance:
        settings = make_settings(db_url, templates_dir=str(REPORT_TEMPLATES), **env)
        instance = Instance(db_url, settings, live, worker)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.close()


def started_before_0800(instance: Instance) -> Instance:
    instance.run(FIRE - timedelta(minutes=10))
    return instance


# --- one claim, one report ----------------------------------------------------------------------------


def test_a_report_is_claimed_once_so_a_second_instance_sends_nothing(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    live = write_reports(rules_dir, DAILY + "    empty: send\n")
    one = started_before_0800(instances(live, "one"))
    two = instances(live, "two")
    for name in ("a", "b", "c"):
        account(one.engine, name)
    assert one.run(FIRE).sent == {"daily-usage": 3}
    assert two.run(FIRE + timedelta(seconds=1)).sent == {}
    assert [m.idem_key for m in messages(one.engine)] == [
        "report/daily-usage/a/2026-03-13",
        "report/daily-usage/b/2026-03-13",
        "report/daily-usage/c/2026-03-13",
    ]
    assert {(r.status, r.claimed_by, r.idem_key) for r in runs(one.engine)} == {
        ("sent", "one", f"report/daily-usage/{n}/2026-03-13") for n in "abc"
    }


def test_two_daemons_running_at_once_send_each_report_once(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    live = write_reports(rules_dir, DAILY + "    empty: send\n")
    daemons = [started_before_0800(instances(live, f"daemon-{i}", reports__batch_size="7")) for i in (1, 2)]
    names = [f"acct-{i:03d}" for i in range(60)]
    for name in names:
        account(daemons[0].engine, name)
    barrier = threading.Barrier(2)
    results: dict[str, list[ReportStats]] = {}
    errors: list[BaseException] = []

    def serve(daemon: Instance) -> None:
        try:
            barrier.wait(timeout=10)
            results[daemon.worker] = [daemon.run(FIRE + timedelta(minutes=m)) for m in (0, 1)]
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(d,)) for d in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    sent = sorted(m.account_id for m in messages(daemons[0].engine))
    assert sent == names  # each account once, none missing
    assert sum(s.sent["daily-usage"] for r in results.values() for s in r) == 60
    assert {r.status for r in runs(daemons[0].engine)} == {"sent"}
    assert cursor(daemons[0].engine, "daily-usage", "UTC").pending_fire is None


def test_a_claim_left_by_a_dead_instance_is_taken_over_once_its_lease_has_passed(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    live = write_reports(rules_dir, DAILY + "    empty: send\n")
    daemon = started_before_0800(instances(live, "alive"))
    for name in ("a", "b", "c", "d"):
        account(daemon.engine, name)
    # Another instance claimed b and c at 08:00 and died before building them.
    with daemon.engine.begin() as conn:
        period = period_before("day", FIRE, "UTC")
        claims.claim(conn, "daily-usage", ["b", "c"], period, FIRE, "dead", FIRE, timedelta(minutes=10))
    assert daemon.run(FIRE + timedelta(minutes=1)).sent == {"daily-usage": 2}
    assert cursor(daemon.engine, "daily-usage", "UTC").pending_fire == FIRE  # not finished: b, c held
    assert daemon.run(FIRE + timedelta(minutes=5)).sent == {}  # the lease has not passed yet
    assert daemon.run(FIRE + timedelta(minutes=11)).sent == {"daily-usage": 2}
    assert sorted(m.account_id for m in messages(daemon.engine)) == ["a", "b", "c", "d"]
    assert [(r.account_id, r.claimed_by) for r in runs(daemon.engine)] == [
        ("a", "alive"),
        ("b", "alive"),
        ("c", "alive"),
        ("d", "alive"),
    ]
    assert cursor(daemon.engine, "daily-usage", "UTC").pending_fire is None
    assert daemon.run(FIRE + timedelta(minutes=12)).sent == {}


def test_a_takeover_is_a_compare_and_set_so_only_one_instance_gets_the_claim(
    db_url: str, engine: object
) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    period = period_before("day", FIRE, "UTC")
    lease = timedelta(minutes=10)
    with engine.begin() as conn:
        assert claims.claim(conn, "r", ["a"], period, FIRE, "dead", FIRE, lease) == {"a"}
    later = FIRE + timedelta(minutes=11)
    with engine.begin() as conn:
        assert claims.claim(conn, "r", ["a"], period, later, "one", later, lease) == {"a"}
    with engine.begin() as conn:
        assert claims.claim(conn, "r", ["a"], period, later, "two", later, lease) == set()
    with engine.begin() as conn:  # the dead instance, back, cannot record its outcome any more
        assert (
            claims.finish(conn, "r", period.key, "dead", [claims.ClaimOutcome("a", claims.SENT, "k")], later)
            == set()
        )


# --- what a report carries ---------------------------------------------------------------------------


def test_an_empty_period_is_skipped_by_default(instances: Callable[..., Instance], rules_dir: Path) -> None:
    daemon = started_before_0800(instances(write_reports(rules_dir, DAILY)))
    account(daemon.engine, "busy")
    account(daemon.engine, "idle")
    usage(daemon.engine, "busy", FIRE - timedelta(hours=12))
    usage(daemon.engine, "idle", FIRE - timedelta(days=2))  # before the period
    stats = daemon.run(FIRE)
    assert (stats.sent, stats.skipped) == ({"daily-usage": 1}, {"daily-usage": 1})
    assert [m.account_id for m in messages(daemon.engine)] == ["busy"]
    assert [(r.account_id, r.status, r.note) for r in runs(daemon.engine)] == [
        ("busy", "sent", None),
        ("idle", "skipped", "nothing happened in this period"),
    ]


def test_a_report_that_asks_for_it_says_there_was_no_usage(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = started_before_0800(instances(write_reports(rules_dir, DAILY + "    empty: send\n")))
    account(daemon.engine, "idle")
    assert daemon.run(FIRE).sent == {"daily-usage": 1}
    [message] = messages(daemon.engine)
    assert "No usage in this period." in message.text


def test_attach_csv_attaches_the_reports_rows_as_a_csv_file(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = started_before_0800(instances(write_reports(rules_dir, DAILY + "    attach_csv: true\n")))
    account(daemon.engine, "acme")
    usage(daemon.engine, "acme", FIRE - timedelta(hours=12), amount=275)
    daemon.run(FIRE)
    [message] = messages(daemon.engine)
    [attachment] = message.attachments
    assert (attachment["filename"], attachment["content_type"]) == (
        "daily-usage-acme-2026-03-13.csv",
        "text/csv",
    )
    header, *rows = attachment["content"].splitlines()
    assert header.startswith("date,currency,account_id")
    assert any("2026-03-13" in row and "2.75" in row for row in rows)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # no SQL the other tests do not run
def test_a_report_without_attach_csv_has_no_attachment(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = started_before_0800(instances(write_reports(rules_dir, DAILY + "    empty: send\n")))
    account(daemon.engine, "acme")
    daemon.run(FIRE)
    assert [m.attachments for m in messages(daemon.engine)] == [[]]


def test_the_owner_and_the_reports_addresses_receive_it_and_subaccounts_get_none_of_their_own(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    body = DAILY + "    empty: send\n    notify: [owner, finance@platform.example]\n"
    daemon = started_before_0800(instances(write_reports(rules_dir, body)))
    account(daemon.engine, "acme")
    account(daemon.engine, "acme-eu", parent_id="acme")
    daemon.run(FIRE)
    [message] = messages(daemon.engine)
    assert (message.account_id, message.recipients) == (
        "acme",
        ["acme@owner.example", "finance@platform.example"],
    )
    assert (message.kind, message.rule_id, message.subject) == (
        "report",
        "daily-usage",
        "daily-usage 2026-03-13 for Acme",
    )


def test_a_low_balance_report_sends_operators_one_message_per_send_time(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    body = (
        "reports:\n  - id: low\n    schedule: daily at 08:00\n    timezone: Europe/Berlin\n"
        "    contents: low-balance\n    notify: [ops@platform.example]\n    empty: send\n"
    )
    daemon = instances(write_reports(rules_dir, body))
    daemon.run(FIRE - timedelta(hours=2))
    account(daemon.engine, "acme")
    for day in range(3):
        daemon.run(FIRE - timedelta(hours=1) + timedelta(days=day))  # 08:00 in Berlin
        daemon.run(FIRE + timedelta(days=day))
    found = messages(daemon.engine)
    assert [(m.idem_key, m.account_id, m.recipients) for m in found] == [
        (f"report/low/*/2026-03-{14 + d}T08:00+0100", None, ["ops@platform.example"]) for d in range(3)
    ]


def test_a_template_error_fails_that_report_only_and_report_run_sends_it_once_fixed(
    instances: Callable[..., Instance], rules_dir: Path, tmp_path: Path
) -> None:
    templates = Path(shutil.copytree(REPORT_TEMPLATES, tmp_path / "templates"))
    subject = templates / "usage-report" / "subject.txt"
    subject.write_text("{{ report.id }} for {{ account.name }} ({{ account.labels.tier }})\n")
    broken = write_reports(rules_dir, DAILY + "    empty: send\n", templates)
    daemon = started_before_0800(instances(broken))
    account(daemon.engine, "gold", labels={"tier": "gold"})
    account(daemon.engine, "plain")  # no tier label: the subject cannot render
    stats = daemon.run(FIRE)
    assert (stats.sent, stats.failed) == ({"daily-usage": 1}, {"daily-usage": 1})
    failed = {r.account_id: r for r in runs(daemon.engine)}["plain"]
    assert failed.status == "failed"
    assert failed.note is not None and f"{subject}:1:" in failed.note
    subject.write_text("{{ report.id }} for {{ account.name }}\n")
    fixed = write_reports(rules_dir, DAILY + "    empty: send\n", templates)
    [run] = run_now(daemon.engine, fixed, daemon.settings, fixed.reports[0], FIRE + timedelta(hours=1), "cli")
    assert [p.outcome.account_id for p in run.done] == ["plain"]
    assert sorted(run.before) == ["gold"]
    assert sorted(m.account_id for m in messages(daemon.engine)) == ["gold", "plain"]


def test_a_contents_failure_fails_its_reports_and_the_other_reports_still_go_out(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    body = (
        DAILY + "    empty: send\n  - id: other\n    schedule: daily at 08:00\n    timezone: UTC\n"
        "    contents: usage\n    empty: send\n"
    )
    live = write_reports(rules_dir, body)
    bad = dataclasses.replace(live.reports[0], contents="no-such-contents")
    daemon = started_before_0800(instances(dataclasses.replace(live, reports=(bad, live.reports[1]))))
    account(daemon.engine, "acme")
    stats = daemon.run(FIRE)
    assert (stats.sent, stats.failed) == ({"other": 1}, {"daily-usage": 1})
    [failed] = runs(daemon.engine, "daily-usage")
    assert failed.note is not None and "not a report contents kind" in failed.note


# --- the CLI ------------------------------------------------------------------------------------------

PAST = "2025-01-15"  # a complete day whatever today is
CLI_REPORT = """
reports:
  - id: daily-usage
    schedule: daily at 08:00
    contents: usage
    attach_csv: true
  - id: paused
    schedule: daily at 08:00
    contents: usage
    enabled: false
"""


@pytest.fixture
def cli_env(tmp_path: Path, rules_dir: Path, db_url: str) -> dict[str, str]:
    (rules_dir / "reports.yaml").write_text(CLI_REPORT)
    return {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_RULES_DIR": str(rules_dir),
        "BALANCEWATCH_TEMPLATES_DIR": str(REPORT_TEMPLATES),
        "BALANCEWATCH_DATABASE__URL": db_url,
        "BALANCEWATCH_LOG__LEVEL": "warning",
    }


@pytest.fixture
def cli(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv), cli_env)
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke  # type: ignore[misc]
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def acme(engine: object) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    account(engine, "acme", "Europe/Berlin")
    account(engine, "quiet", "America/New_York")
    usage(engine, "acme", datetime(2025, 1, 15, 10, 0, tzinfo=UTC), amount=1234)


def count(engine: object, table: object) -> int:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_report_run_dry_run_prints_what_would_be_sent_and_writes_nothing(
    cli: Callable[..., tuple[int, str, str]], acme: None, engine: object, tmp_path: Path
) -> None:
    code, out, err = cli("report", "run", "daily-usage", "--period", PAST, "--dry-run")
    assert (code, err) == (0, "")
    assert "--- report daily-usage, account acme, period 2025-01-15 (Europe/Berlin)\n" in out
    assert "To: acme@owner.example\nSubject: daily-usage 2025-01-15 for Acme\n" in out
    assert "Attachment: daily-usage-acme-2025-01-15.csv (text/csv, " in out
    assert "Report daily-usage for Acme (acme), day 2025-01-15." in out
    assert "daily-usage: account quiet: skipped: nothing happened in this period" in out
    assert "daily-usage 2025-01-15 (Europe/Berlin): would send 1, skipped 0, failed 0, already done 0" in out
    assert (count(engine, RUN), count(engine, OUTBOX)) == (0, 0)
    assert not (tmp_path / "state" / "mail").exists()


def test_report_run_sends_through_the_outbox_once(
    cli: Callable[..., tuple[int, str, str]], acme: None, engine: object, tmp_path: Path
) -> None:
    code, out, err = cli("report", "run", "daily-usage", "--account", "acme", "--period", PAST)
    assert (code, err) == (0, "")
    assert out == "daily-usage 2025-01-15 (Europe/Berlin): sent 1, skipped 0, failed 0, already done 0\n"
    [message] = messages(engine)  # type: ignore[arg-type]
    assert (message.idem_key, message.status) == ("report/daily-usage/acme/2025-01-15", "sent")
    [eml] = list((tmp_path / "state" / "mail").glob("*.eml"))
    assert "daily-usage-acme-2025-01-15.csv" in eml.read_text()
    code, out, _ = cli("report", "run", "daily-usage", "--account", "acme", "--period", PAST)
    assert code == 0
    assert out.startswith("daily-usage: account acme: already sent for 2025-01-15 at ")
    assert count(engine, OUTBOX) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("nope",),
            "balancewatch report run: no report 'nope' in the rule files (reports: daily-usage, paused)",
        ),
        (
            ("daily-usage", "--period", "2025-W03"),
            "balancewatch report run: --period 2025-W03 names a week, but this report covers days; write "
            "e.g. --period 2026-03-14 or --period last",
        ),
        (
            ("daily-usage", "--account", "ghost"),
            "balancewatch report run: account 'ghost' does not get report daily-usage: no such account, or "
            "not an enabled paying account its 'accounts' selector matches",
        ),
        (
            ("paused",),
            "balancewatch report run: report paused is disabled (enabled: false); enable it to send it "
            "(or use --dry-run)",
        ),
    ],
)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # no SQL the other tests do not run
def test_report_run_refuses_what_it_cannot_do_with_exit_status_1(
    cli: Callable[..., tuple[int, str, str]], acme: None, argv: tuple[str, ...], message: str
) -> None:
    code, _out, err = cli("report", "run", *argv)
    assert (code, err) == (1, message + "\n")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # no SQL the other tests do not run
def test_report_run_without_an_id_is_bad_usage(cli: Callable[..., tuple[int, str, str]]) -> None:
    assert cli("report", "run")[0] == 2


def test_report_list_shows_each_zone_with_its_next_send_time_and_what_was_sent_last(
    cli: Callable[..., tuple[int, str, str]], acme: None
) -> None:
    assert cli("report", "run", "daily-usage", "--account", "acme", "--period", PAST)[0] == 0
    code, out, err = cli("report", "list", "--json")
    assert (code, err) == (0, "")
    rows = {(r["id"], r["timezone"]): r for r in json.loads(out)}
    assert set(rows) == {
        ("daily-usage", "America/New_York"),
        ("daily-usage", "Europe/Berlin"),
        ("paused", "America/New_York"),
        ("paused", "Europe/Berlin"),
    }
    berlin = rows["daily-usage", "Europe/Berlin"]
    assert berlin["next"].endswith(("08:00 CET", "08:00 CEST"))
    assert (berlin["last_period"], berlin["last_count"]) == ("2025-01-15", 1)
    assert rows["paused", "Europe/Berlin"]["next"] is None
    code, out, _ = cli("report", "list")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ID",
        "CONTENTS",
        "PERIOD",
        "SCHEDULE",
        "TIMEZONE",
        "NEXT",
        "LAST",
        "SENT",
    ]


def test_a_template_suspended_for_overrunning_leaves_the_reports_to_a_later_run_instead_of_failing_them(
    instances: Callable[..., Instance], rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = write_reports(rules_dir, DAILY + "    empty: send\n")
    one = started_before_0800(instances(live))
    for name in ("a", "b", "c"):
        account(one.engine, name)
    template = live.reports[0].template
    problem = Problem("templates/usage-report/body.txt", 3, "", "rendering took longer than 2s")
    for _ in range(3):  # it overran three times in a row (say on other accounts' data)
        live.templates.breaker.overran(template, problem)

    assert one.run(FIRE).sent == {}
    assert {(r.status, r.note) for r in runs(one.engine)} == {("claimed", None)}
    assert "report daily-usage waits for its template" in caplog.text

    live.templates.breaker.finished(template)  # fixed, or its retry time came
    assert one.run(FIRE + timedelta(minutes=1)).sent == {"daily-usage": 3}
    assert {r.status for r in runs(one.engine)} == {"sent"}
