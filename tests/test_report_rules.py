"""Report definitions in rule files: what they compile to, and every mistake with its file and line.

Reports go through the loader the alert rules go through, so ``check``, hot
reload and the rule-file schema treat them the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.core.problems import ProblemsError
from balancewatch.rules.crontab import to_cron
from balancewatch.rules.loader import SourceFile, check_files
from balancewatch.rules.reports import CompiledReport
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.reload import Reloader

REPORT_TEMPLATES = Path(__file__).parent / "report_templates"


def load(text: str, path: Path = Path("rules/reports.yaml")) -> tuple[list[CompiledReport], list[str]]:
    _rules, reports, problems = check_files([SourceFile(path, text)])
    return reports, [str(p) for p in problems]


def problems(text: str) -> list[str]:
    reports, found = load(text)
    assert not reports or found, "expected the file to have problems"
    return found


def only(text: str) -> CompiledReport:
    reports, found = load(text)
    assert found == []
    [report] = reports
    return report


# --- what a definition compiles to ---------------------------------------------------------------


def test_a_report_with_only_the_required_fields_gets_the_documented_defaults() -> None:
    report = only("reports:\n  - id: daily-usage\n    schedule: daily at 08:00\n    contents: usage\n")
    assert (report.cron, report.timezone, report.period) == ("0 8 * * *", "account", "day")
    assert (report.notify_owner, report.recipients, report.template) == (True, (), "usage-report")
    assert (report.attach_csv, report.send_empty, report.enabled) == (False, False, True)
    assert (report.source, report.line) == ("rules/reports.yaml", 2)


@pytest.mark.parametrize(
    ("schedule", "cron", "period"),
    [
        ("daily at 07:30", "30 7 * * *", "day"),
        ("weekly on sunday at 18:00", "0 18 * * sun", "week"),
        ("weekly", "0 8 * * mon", "week"),
        ("monthly on 1 at 06:00", "0 6 1 * *", "month"),
        ("0 8 * * *", "0 8 * * *", "day"),
        ("0 8 * * mon-fri", "0 8 * * mon,tue,wed,thu,fri", "day"),
        ("0 9 15 * *", "0 9 15 * *", "month"),
    ],
)
def test_a_schedule_sets_the_default_period_by_how_often_it_sends(
    schedule: str, cron: str, period: str
) -> None:
    report = only(f"reports:\n  - id: r\n    schedule: {schedule!r}\n    contents: usage\n")
    assert (report.cron, report.period) == (cron, period)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("0 8 * * 1", "mon"),
        ("0 8 * * 0", "sun"),
        ("0 8 * * 7", "sun"),
        ("0 8 * * 1-5", "mon,tue,wed,thu,fri"),
        ("0 8 * * 5-7", "fri,sat,sun"),
        ("0 8 * * */2", "tue,thu,sat,sun"),
        ("0 8 * * 0-6", "*"),
    ],
)
def test_cron_weekday_numbers_mean_what_they_mean_in_crontab_not_in_apscheduler(
    written: str, meant: str
) -> None:
    # APScheduler 3 counts 0 as Monday; a crontab's 1 is Monday and 0 or 7 Sunday.
    assert to_cron(written) == f"0 8 * * {meant}"


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("0 8 * * mon-sun", "*"),
        ("0 8 * * fri-0", "fri,sat,sun"),
        ("0 8 * * 7-1", "mon,sun"),
        ("0 8 * * 7-7", "sun"),
        ("0 8 * * 1/2", "mon,wed,fri"),
        ("0 8 * * mon-wed/", "mon,tue,wed"),
    ],
)
def test_weekday_ranges_and_steps_read_as_rule_files_have_always_read_them(written: str, meant: str) -> None:
    # Sunday starts a range as 0 and ends one as 7; a step from one day runs up to Saturday.
    assert to_cron(written) == f"0 8 * * {meant}"


def test_the_last_day_of_the_month_is_written_last_and_sends_monthly() -> None:
    report = only("reports:\n  - id: r\n    schedule: '0 8 last * *'\n    contents: usage\n")
    assert (report.cron, report.period) == ("0 8 L * *", "month")


def test_a_report_names_its_recipients_owner_and_addresses() -> None:
    report = only(
        "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n"
        "    notify: [owner, finance@platform.example]\n    timezone: Asia/Kolkata\n    attach_csv: true\n"
        "    empty: send\n"
    )
    assert (report.notify_owner, report.recipients) == (True, ("finance@platform.example",))
    assert (report.timezone, report.attach_csv, report.send_empty) == ("Asia/Kolkata", True, True)


def test_a_low_balance_report_is_a_snapshot_without_a_period() -> None:
    report = only(
        "reports:\n  - id: low\n    schedule: daily at 09:00\n    contents: low-balance\n"
        "    notify: [ops@platform.example]\n"
    )
    assert (report.period, report.notify_owner, report.template) == (None, False, "low-balance-report")


# --- every mistake, with its file and line -------------------------------------------------------


def test_a_schedule_that_is_neither_cron_nor_shorthand_is_reported_on_its_line() -> None:
    assert problems("reports:\n  - id: r\n    contents: usage\n    schedule: every day at 8\n") == [
        "rules/reports.yaml:4: reports[0].schedule: 'every day at 8' is not a schedule; write 'daily "
        "at 08:00', 'weekly on monday at 08:00', 'monthly on 1 at 08:00', or a cron expression such as "
        "'0 8 * * *'"
    ]


def test_a_cron_expression_out_of_range_says_which_field() -> None:
    [problem] = problems("reports:\n  - id: r\n    contents: usage\n    schedule: '0 25 * * *'\n")
    assert problem.startswith("rules/reports.yaml:4: reports[0].schedule: '0 25 * * *' is not a valid cron ")
    assert "(25) is higher than the maximum value (23)" in problem


def test_a_weekday_that_does_not_exist_is_reported() -> None:
    [problem] = problems("reports:\n  - id: r\n    contents: usage\n    schedule: '0 8 * * 8'\n")
    assert "day of week '8': write 0-7 (0 and 7 are Sunday) or mon ... sun" in problem


def test_a_weekday_without_a_name_is_refused() -> None:
    [problem] = problems("reports:\n  - id: r\n    contents: usage\n    schedule: '0 8 * * mon#2'\n")
    assert "day of week 'mon#2': write 0-7 (0 and 7 are Sunday) or mon ... sun" in problem


def test_a_day_no_month_of_the_schedule_has_is_refused() -> None:
    [problem] = problems("reports:\n  - id: r\n    contents: usage\n    schedule: '0 8 30 2 *'\n")
    assert "'0 8 30 2 *' is not a valid cron expression (no month it names has that day)" in problem


def test_a_cron_expression_restricting_both_days_is_refused_as_ambiguous() -> None:
    assert problems("reports:\n  - id: r\n    contents: usage\n    schedule: '0 8 1 * mon'\n") == [
        "rules/reports.yaml:4: reports[0].schedule: '0 8 1 * mon' restricts both the day of the month and "
        "the day of the week; give one of them (e.g. '0 8 1 * *' or '0 8 * * mon')"
    ]


def test_a_monthly_day_some_months_lack_is_refused() -> None:
    [problem] = problems("reports:\n  - id: r\n    contents: usage\n    schedule: monthly on 31 at 08:00\n")
    assert problem == (
        "rules/reports.yaml:4: reports[0].schedule: monthly on 31: write a day of the month from 1 to 28 "
        "(every month has it)"
    )


def test_a_misspelt_timezone_is_reported_on_its_line() -> None:
    text = (
        "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n    timezone: Europe/Berln\n"
    )
    assert problems(text) == [
        "rules/reports.yaml:5: reports[0].timezone: 'Europe/Berln' is not a time zone; write account or an "
        "IANA zone such as Europe/Berlin"
    ]


def test_a_low_balance_report_to_the_owner_is_refused() -> None:
    text = (
        "reports:\n  - id: low\n    schedule: daily at 08:00\n    contents: low-balance\n"
        "    notify: [owner]\n"
    )
    assert problems(text) == [
        "rules/reports.yaml:5: reports[0].notify: a low-balance report is for operators; name their "
        "addresses, not owner"
    ]


def test_preferences_as_a_report_recipient_is_refused_not_taken_for_an_address() -> None:
    text = (
        "reports:\n  - id: m\n    schedule: daily at 08:00\n    contents: usage\n"
        "    notify: [owner, preferences]\n"
    )
    assert problems(text) == [
        "rules/reports.yaml:5: reports[0].notify: 'preferences' is for alerts (the addresses an owner added "
        "for low-balance emails); a report goes to owner and the addresses named here"
    ]


def test_a_low_balance_report_without_notify_goes_to_the_owner_by_default_and_is_refused() -> None:
    [problem] = problems("reports:\n  - id: low\n    schedule: daily at 08:00\n    contents: low-balance\n")
    assert problem.endswith("a low-balance report is for operators; name their addresses, not owner")


def test_a_low_balance_report_with_a_period_is_refused() -> None:
    text = (
        "reports:\n  - id: low\n    schedule: daily at 08:00\n    contents: low-balance\n"
        "    notify: [ops@platform.example]\n    period: day\n"
    )
    [problem] = problems(text)
    assert problem.endswith("a low-balance report is a snapshot of the moment it is sent; leave period out")


def test_a_daywise_report_of_a_week_is_refused() -> None:
    text = "reports:\n  - id: d\n    schedule: weekly\n    contents: daywise\n    period: week\n"
    [problem] = problems(text)
    assert problem.endswith("a daywise report covers a month, one row per day; not a week")


def test_unknown_contents_are_reported_with_the_choices() -> None:
    text = "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usag\n"
    assert problems(text) == [
        "rules/reports.yaml:4: reports[0].contents: 'usag' is not allowed; write 'usage', 'daywise', "
        "'transactions' or 'low-balance'"
    ]


def test_a_misspelt_field_is_reported_with_a_suggestion() -> None:
    [problem] = problems(
        "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n    atach_csv: true\n"
    )
    assert problem.startswith(
        "rules/reports.yaml:5: reports[0].atach_csv: unknown field 'atach_csv' (did you mean"
    )


def test_two_reports_with_one_id_are_reported_at_the_second() -> None:
    text = (
        "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n"
        "  - id: r\n    schedule: weekly\n    contents: usage\n"
    )
    [problem] = problems(text)
    assert problem.startswith("rules/reports.yaml:5: reports[1].id: ")


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = (
        "reports:\n  - id: a\n    schedule: hourly\n    contents: usage\n"
        "  - id: b\n    schedule: daily at 08:00\n    contents: usage\n    timezone: Mars/Olympus\n"
    )
    assert [p.split(": ")[0] for p in problems(text)] == ["rules/reports.yaml:3", "rules/reports.yaml:8"]


# --- check and reload treat reports like rules -----------------------------------------------------


def test_check_lists_a_bad_report_with_file_and_line_and_exits_1(
    tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rules_dir / "reports.yaml"
    path.write_text(
        "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n    timezone: Europe/Berln\n"
    )
    env = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_RULES_DIR": str(rules_dir),
        "BALANCEWATCH_TEMPLATES_DIR": str(REPORT_TEMPLATES),
    }
    assert main(["check"], env) == 1
    assert f"{path}:5: reports[0].timezone: 'Europe/Berln' is not a time zone" in capsys.readouterr().err


def test_a_report_naming_a_missing_template_is_refused_at_load(rules_dir: Path) -> None:
    (rules_dir / "reports.yaml").write_text(
        "reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n    template: usage-reprot\n"
    )
    with pytest.raises(ProblemsError) as caught:
        load_set(rules_dir, REPORT_TEMPLATES)
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (2, "template")
    assert "template 'usage-reprot' not found" in problem.message


def test_a_reload_with_a_bad_report_keeps_the_reports_running(tmp_path: Path, rules_dir: Path) -> None:
    templates = Path(shutil.copytree(REPORT_TEMPLATES, tmp_path / "templates"))
    path = rules_dir / "reports.yaml"
    path.write_text("reports:\n  - id: r\n    schedule: daily at 08:00\n    contents: usage\n")
    live = load_set(rules_dir, templates)
    swapped = []
    reloader = Reloader(rules_dir, templates, live, swapped.append)
    path.write_text("reports:\n  - id: r\n    schedule: daily at 25:00\n    contents: usage\n")
    status = reloader.reload_now("test")
    assert (status.ok, swapped, reloader.live.reports) == (False, [], live.reports)
    assert f"{path}:3: reports[0].schedule" in status.error
