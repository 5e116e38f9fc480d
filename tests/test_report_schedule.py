"""When reports are sent: periods, fire times across DST changes, misfires, coalescing, restarts.

Time is passed in: each test drives ``now`` through a daemon instance
(``reportkit.Instance``); a restart is a new instance over the same database.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from cronsim import CronSim

from balancewatch.config import Settings
from balancewatch.reports.periods import PeriodError, parse_period, period_before, period_of, snapshot
from balancewatch.reports.schedule import due, fire_times, next_fire_time
from tests.reportkit import Instance, account, cursor, messages, runs, usage, write_reports

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def at(text: str, zone: str = "UTC") -> datetime:
    """``2026-03-14 08:00`` in ``zone``, as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def hours(start: datetime, end: datetime) -> float:
    return (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() / 3600


def local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M%z")


# --- periods --------------------------------------------------------------------------------------


def test_a_daily_report_covers_the_local_day_before_the_send_time() -> None:
    period = period_before("day", at("2026-03-14 08:00", BERLIN), BERLIN)
    assert (period.kind, period.key, period.timezone) == ("day", "2026-03-13", BERLIN)
    assert (local(period.start, BERLIN), local(period.end, BERLIN)) == (
        "2026-03-13 00:00+0100",
        "2026-03-14 00:00+0100",
    )


def test_the_day_is_the_local_one_even_when_utc_is_still_on_the_day_before() -> None:
    # 00:30 in Berlin on the 15th is 23:30 UTC on the 14th: the complete local day is the 14th.
    assert period_before("day", at("2026-03-14 23:30"), BERLIN).key == "2026-03-14"


def test_a_weekly_report_covers_the_iso_week_monday_to_sunday_before_it() -> None:
    period = period_before("week", at("2026-03-16 08:00", BERLIN), BERLIN)
    assert (period.key, period.first_day, local(period.end, BERLIN)) == (
        "2026-W11",
        date(2026, 3, 9),
        "2026-03-16 00:00+0100",
    )
    assert period_before("week", at("2026-03-22 08:00", BERLIN), BERLIN).key == "2026-W11"


def test_the_first_iso_week_of_a_year_may_start_in_december() -> None:
    period = period_before("week", at("2026-01-05 08:00", BERLIN), BERLIN)
    assert (period.key, period.first_day) == ("2026-W01", date(2025, 12, 29))


def test_a_monthly_report_covers_the_calendar_month_before_it() -> None:
    assert period_before("month", at("2026-01-01 08:00", BERLIN), BERLIN).key == "2025-12"
    march = period_before("month", at("2026-04-01 08:00", BERLIN), BERLIN)
    assert (march.key, march.first_day, local(march.end, BERLIN)) == (
        "2026-03",
        date(2026, 3, 1),
        "2026-04-01 00:00+0200",
    )
    assert hours(march.start, march.end) == 31 * 24 - 1  # the hour clocks sprang forward


@pytest.mark.parametrize(
    ("zone", "day", "length"),
    [
        (BERLIN, "2026-03-29", 23),
        (BERLIN, "2026-10-25", 25),
        (NEW_YORK, "2026-03-08", 23),
        (NEW_YORK, "2026-11-01", 25),
    ],
)
def test_a_dst_day_is_one_period_of_23_or_25_hours(zone: str, day: str, length: int) -> None:
    period = period_of("day", date.fromisoformat(day), zone)
    assert hours(period.start, period.end) == length


def test_a_day_whose_midnight_does_not_exist_starts_when_the_clocks_resume() -> None:
    # Chile springs forward at midnight: 2026-09-06 begins at 01:00 -03, where the 5th ended.
    before = period_of("day", date(2026, 9, 5), "America/Santiago")
    day = period_of("day", date(2026, 9, 6), "America/Santiago")
    assert before.end.astimezone(UTC) == day.start.astimezone(UTC) == at("2026-09-06 04:00")
    assert hours(day.start, day.end) == 23


def test_a_low_balance_snapshot_is_keyed_by_its_local_minute() -> None:
    assert snapshot(at("2026-03-14 08:00:41", BERLIN), BERLIN).key == "2026-03-14T08:00+0100"


NOW = at("2026-03-20 12:00", BERLIN)


@pytest.mark.parametrize(
    ("text", "kind", "key"),
    [
        ("2026-03-14", "day", "2026-03-14"),
        ("2026-W11", "week", "2026-W11"),
        ("2026-02", "month", "2026-02"),
        ("last", "day", "2026-03-19"),
        ("last", "week", "2026-W11"),
        ("last", "month", "2026-02"),
    ],
)
def test_period_names_the_cli_accepts(text: str, kind: str, key: str) -> None:
    assert parse_period(text, kind, BERLIN, NOW).key == key


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        (
            "2026-W11",
            "month",
            "--period 2026-W11 names a week, but this report covers months; write e.g. "
            "--period 2026-03 or --period last",
        ),
        (
            "2026-03",
            "month",
            "--period 2026-03 is not over yet (it ends 2026-04-01 00:00 CEST); a report "
            "covers a complete period",
        ),
        ("2026-02-30", "day", "--period 2026-02-30: no such day"),
        ("2026-W54", "week", "--period 2026-W54: no such week"),
        (
            "yesterday",
            "day",
            "--period yesterday: write a day (2026-03-14), an ISO week (2026-W11), a month (2026-03) or last",
        ),
        (
            "2026-03-14",
            None,
            "--period 2026-03-14: a low-balance report is a snapshot of now; leave --period out",
        ),
    ],
)
def test_a_period_the_cli_cannot_use_says_what_to_write(text: str, kind: str | None, message: str) -> None:
    with pytest.raises(PeriodError) as caught:
        parse_period(text, kind, BERLIN, NOW)
    assert str(caught.value) == message


# --- fire times across DST changes ----------------------------------------------------------------

DST_WEEKS = [
    (BERLIN, "2026-03-26"),  # springs forward on Sunday the 29th, 02:00 -> 03:00
    (BERLIN, "2026-10-22"),  # falls back on Sunday the 25th, 03:00 -> 02:00
    (NEW_YORK, "2026-03-05"),  # springs forward on Sunday the 8th
    (NEW_YORK, "2026-11-01"),  # falls back that day, 02:00 -> 01:00
]


@pytest.mark.parametrize(("zone", "first"), DST_WEEKS)
@pytest.mark.parametrize("cron", ["30 2 * * *", "30 1 * * *", "0 8 * * *"])
def test_a_daily_schedule_fires_once_on_every_local_day_of_a_dst_week(
    zone: str, first: str, cron: str
) -> None:
    start = at(f"{first} 00:00", zone)
    fired = fire_times(cron, zone, start, start + timedelta(days=7))
    days = [f.astimezone(ZoneInfo(zone)).date() for f in fired]
    assert days == [date.fromisoformat(first) + timedelta(days=i) for i in range(7)]


def test_a_send_time_the_clocks_skip_goes_out_when_they_resume() -> None:
    [fired] = fire_times("30 2 * * *", BERLIN, at("2026-03-29 00:00", BERLIN), at("2026-03-29 12:00", BERLIN))
    assert local(fired, BERLIN) == "2026-03-29 03:30+0200"


def test_a_send_time_the_clocks_repeat_goes_out_at_its_first_occurrence_only() -> None:
    fired = fire_times("30 2 * * *", BERLIN, at("2026-10-25 00:00", BERLIN), at("2026-10-25 12:00", BERLIN))
    assert [local(f, BERLIN) for f in fired] == ["2026-10-25 02:30+0200"]
    fired = fire_times(
        "30 1 * * *", NEW_YORK, at("2026-11-01 00:00", NEW_YORK), at("2026-11-01 12:00", NEW_YORK)
    )
    assert [local(f, NEW_YORK) for f in fired] == ["2026-11-01 01:30-0400"]


def test_apschedulers_own_zone_handling_repeats_the_fall_back_hour_so_wall_times_are_placed_here() -> None:
    # The reason schedule.py asks CronTrigger for wall times only: in the zone itself it
    # fires 02:30 twice on 2026-10-25 (once per offset) and then keeps answering the second.
    trigger = CronTrigger.from_crontab("30 2 * * *", timezone=ZoneInfo(BERLIN))
    first = trigger.get_next_fire_time(None, at("2026-10-25 00:00", BERLIN))
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    assert first is not None and second is not None
    assert (local(first, BERLIN), local(second, BERLIN)) == ("2026-10-25 02:30+0200", "2026-10-25 02:30+0100")


def test_cronsims_own_zone_handling_sends_a_skipped_time_at_0300_so_wall_times_are_placed_here() -> None:
    # The reason schedule.py asks cronsim for naive wall times: given the zone, it follows Debian
    # cron and sends the 02:30 the clocks skip on 2026-03-29 at 03:00, not 03:30.
    fired = next(CronSim("30 2 * * *", datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo(BERLIN))))
    assert local(fired, BERLIN) == "2026-03-29 03:00+0200"


def test_a_last_day_of_the_month_schedule_fires_on_each_months_last_day() -> None:
    fired = fire_times("0 8 L * *", BERLIN, at("2026-01-15 00:00", BERLIN), at("2026-04-15 00:00", BERLIN))
    assert [local(f, BERLIN) for f in fired] == [
        "2026-01-31 08:00+0100",
        "2026-02-28 08:00+0100",
        "2026-03-31 08:00+0200",
    ]


def test_every_half_hour_fires_23_times_2_on_a_spring_day_and_24_times_2_on_a_fall_day() -> None:
    spring = fire_times(
        "*/30 * * * *",
        BERLIN,
        at("2026-03-29 00:00", BERLIN) - timedelta(seconds=1),
        at("2026-03-30 00:00", BERLIN) - timedelta(seconds=1),
    )
    fall = fire_times(
        "*/30 * * * *",
        BERLIN,
        at("2026-10-25 00:00", BERLIN) - timedelta(seconds=1),
        at("2026-10-26 00:00", BERLIN) - timedelta(seconds=1),
    )
    assert (len(spring), len(fall)) == (46, 48)  # the repeated hour fires once, not twice


def test_the_next_fire_time_of_a_leap_day_schedule_is_years_ahead() -> None:
    assert next_fire_time("0 8 29 2 *", "UTC", at("2026-03-01 00:00")) == at("2028-02-29 08:00")


def test_due_sends_the_latest_send_time_within_the_grace_and_misses_the_older_ones() -> None:
    plan = due("0 * * * *", "UTC", at("2026-03-14 03:30"), at("2026-03-14 08:05"), timedelta(hours=2))
    assert plan.fire == at("2026-03-14 08:00")
    assert plan.coalesced == (at("2026-03-14 07:00"),)  # 06:05 is the cut: 07:00 is within the grace
    assert plan.missed == (at("2026-03-14 04:00"), at("2026-03-14 05:00"), at("2026-03-14 06:00"))


# --- the daemon over DST changes ---------------------------------------------------------------------

THREE_DAILIES = """
reports:
  - id: night
    schedule: daily at 01:30
    contents: usage
    empty: send
  - id: early
    schedule: daily at 02:30
    contents: usage
    empty: send
  - id: morning
    schedule: daily at 08:00
    contents: usage
    empty: send
"""


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[[str], Settings]:
    from tests.reportkit import REPORT_TEMPLATES

    def make(db_url: str, **env: str) -> Settings:
        return make_settings(db_url, templates_dir=str(REPORT_TEMPLATES), **env)

    return make


@pytest.fixture
def instances(db_url: str, settings_for: Callable[..., Settings]) -> Iterator[Callable[..., Instance]]:
    """Start daemon instances on the test's database; all are closed afterwards."""
    started: list[Instance] = []

    def start(live: object, worker: str = "instance-1", **env: str) -> Instance:
        instance = Instance(db_url, settings_for(db_url, **env), live, worker)  # type: ignore[arg-type]
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # time arithmetic only: one backend suffices
@pytest.mark.parametrize(("zone", "first"), DST_WEEKS)
def test_over_a_dst_week_each_local_day_is_reported_once_by_each_daily_report(
    instances: Callable[..., Instance], rules_dir: Path, zone: str, first: str
) -> None:
    daemon = instances(write_reports(rules_dir, THREE_DAILIES))
    account(daemon.engine, "acme", zone)
    start = at(f"{first} 00:00", zone)
    fired: list[tuple[str, str, datetime]] = []
    for step in range(7 * 24):  # every hour, a week long
        fired += daemon.run(start + timedelta(hours=step)).fired
    first_day = date.fromisoformat(first)
    for report_id in ("night", "early", "morning"):
        sent_for = [r.period_key for r in runs(daemon.engine, report_id)]
        # The day before the first is reported on the first day; the week's last day, the day after.
        assert sent_for == [(first_day + timedelta(days=i - 1)).isoformat() for i in range(7)]
        begun = [f for r, _z, f in fired if r == report_id]
        assert Counter(f.astimezone(ZoneInfo(zone)).date() for f in begun) == Counter(
            first_day + timedelta(days=i) for i in range(7)
        )
    assert len(messages(daemon.engine)) == 21


# --- misfires, coalescing, restarts ---------------------------------------------------------------------

DAILY = """
reports:
  - id: daily-usage
    schedule: daily at 08:00
    timezone: UTC
    contents: usage
"""


def test_a_daemon_stopped_over_0800_and_restarted_at_0805_sends_the_0800_report_once(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    live = write_reports(rules_dir, DAILY)
    first = instances(live)
    account(first.engine, "acme")
    usage(first.engine, "acme", at("2026-03-13 15:00"))
    first.run(at("2026-03-14 07:50"))
    first.run(at("2026-03-14 07:59"))
    first.close()  # stopped over 08:00
    restarted = instances(live)
    assert restarted.run(at("2026-03-14 08:05")).sent == {"daily-usage": 1}
    assert restarted.run(at("2026-03-14 08:06")).sent == {}
    [message] = messages(restarted.engine)
    assert (message.idem_key, message.recipients) == (
        "report/daily-usage/acme/2026-03-13",
        ["acme@owner.example"],
    )


def test_a_send_time_more_than_the_grace_ago_is_not_sent_and_is_logged(
    instances: Callable[..., Instance], rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = write_reports(rules_dir, DAILY)
    daemon = instances(live)
    account(daemon.engine, "acme")
    usage(daemon.engine, "acme", at("2026-03-13 15:00"))
    usage(daemon.engine, "acme", at("2026-03-14 15:00"))
    daemon.run(at("2026-03-14 07:50"))
    with caplog.at_level(logging.WARNING, logger="balancewatch.reports"):
        stats = instances(live).run(at("2026-03-14 09:30"))
    assert (stats.sent, stats.missed) == ({}, {"daily-usage": 1})
    assert (
        "report daily-usage (UTC): send time 2026-03-14 08:00 UTC missed: more than "
        "reports.misfire_grace (1h) ago, not sent" in caplog.text
    )
    assert messages(daemon.engine) == []
    assert daemon.run(at("2026-03-15 08:00")).sent == {"daily-usage": 1}  # the next day goes out as usual


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # scheduling logic: one backend suffices
def test_the_grace_is_a_setting(instances: Callable[..., Instance], rules_dir: Path) -> None:
    live = write_reports(rules_dir, DAILY)
    daemon = instances(live, reports__misfire_grace="3h")
    account(daemon.engine, "acme")
    usage(daemon.engine, "acme", at("2026-03-13 15:00"))
    daemon.run(at("2026-03-14 07:50"))
    assert daemon.run(at("2026-03-14 10:30")).sent == {"daily-usage": 1}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # scheduling logic: one backend suffices
def test_send_times_missed_within_the_grace_are_coalesced_into_the_latest(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    live = write_reports(
        rules_dir,
        "reports:\n  - id: hourly\n    schedule: '0 * * * *'\n    timezone: UTC\n    contents: usage\n"
        "    period: day\n    empty: send\n",
    )
    daemon = instances(live, reports__misfire_grace="6h")
    account(daemon.engine, "acme")
    daemon.run(at("2026-03-14 05:30"))
    stats = daemon.run(at("2026-03-14 08:05"))
    assert [f for _r, _z, f in stats.fired] == [at("2026-03-14 08:00")]
    assert (stats.coalesced, stats.sent) == ({"hourly": 2}, {"hourly": 1})


def test_a_daemon_started_for_the_first_time_after_0800_does_not_send_that_morning(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = instances(write_reports(rules_dir, DAILY))
    account(daemon.engine, "acme")
    usage(daemon.engine, "acme", at("2026-03-13 15:00"))
    usage(daemon.engine, "acme", at("2026-03-14 15:00"))
    assert daemon.run(at("2026-03-14 08:05")).sent == {}
    assert daemon.run(at("2026-03-15 08:00")).sent == {"daily-usage": 1}
    assert [r.period_key for r in runs(daemon.engine)] == ["2026-03-14"]


def test_a_timezone_new_to_a_known_report_still_gets_a_send_time_within_the_grace(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = instances(
        write_reports(
            rules_dir,
            "reports:\n  - id: d\n    schedule: daily at 08:00\n    contents: usage\n    empty: send\n",
        )
    )
    account(daemon.engine, "acme", BERLIN)
    daemon.run(at("2026-03-14 05:00"))
    assert daemon.run(at("2026-03-14 07:05")).sent == {"d": 1}  # 08:05 in Berlin
    account(daemon.engine, "london", "Europe/London")  # 08:00 in London is 08:00 UTC
    stats = instances(daemon.live).run(at("2026-03-14 08:20"))  # a new instance: no cached zones
    assert stats.sent == {"d": 1}
    assert {(r.account_id, r.timezone) for r in runs(daemon.engine)} == {
        ("acme", BERLIN),
        ("london", "Europe/London"),
    }


def test_accounts_are_grouped_by_their_own_timezone_and_the_default(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = instances(
        write_reports(
            rules_dir,
            "reports:\n  - id: d\n    schedule: daily at 08:00\n    contents: usage\n    empty: send\n",
        ),
        defaults__timezone="Asia/Kolkata",
    )
    for name, zone in [("a", BERLIN), ("b", NEW_YORK), ("c", None), ("d", BERLIN)]:
        account(daemon.engine, name, zone)
    account(daemon.engine, "sub", BERLIN, parent_id="a")  # a subaccount's usage is in a's report
    daemon.run(at("2026-03-13 00:00"))
    stats = Counter()
    for step in range(24 * 4):
        stats.update(daemon.run(at("2026-03-14 00:00") + timedelta(minutes=15 * step)).sent)
    assert stats == {"d": 4}
    assert {(r.account_id, r.timezone, r.fire_at) for r in runs(daemon.engine)} == {
        ("a", BERLIN, at("2026-03-14 08:00", BERLIN)),
        ("d", BERLIN, at("2026-03-14 08:00", BERLIN)),
        ("b", NEW_YORK, at("2026-03-14 08:00", NEW_YORK)),
        ("c", "Asia/Kolkata", at("2026-03-14 08:00", "Asia/Kolkata")),
    }


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # scheduling logic: one backend suffices
def test_a_disabled_report_sends_nothing_and_resumes_without_catching_up(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    enabled = write_reports(rules_dir, DAILY + "    empty: send\n")
    disabled = write_reports(rules_dir, DAILY + "    empty: send\n    enabled: false\n")
    daemon = instances(enabled)
    account(daemon.engine, "acme")
    daemon.run(at("2026-03-14 07:00"))
    off = instances(disabled)
    assert off.run(at("2026-03-14 08:00")).sent == {}
    assert off.run(at("2026-03-14 08:10")).sent == {}
    on = instances(enabled)
    assert on.run(at("2026-03-14 08:20")).sent == {}
    assert on.run(at("2026-03-15 08:00")).sent == {"daily-usage": 1}


def test_a_send_time_begun_before_a_restart_is_finished_after_it_however_late(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    from balancewatch.reports import claims, schedule
    from balancewatch.reports.periods import period_before

    live = write_reports(rules_dir, DAILY + "    empty: send\n")
    daemon = instances(live)
    for name in ("a", "b", "c"):
        account(daemon.engine, name)
    daemon.run(at("2026-03-14 07:00"))
    # An instance begins the 08:00 send time, claims a's report, and is killed.
    fire = at("2026-03-14 08:00")
    with daemon.engine.begin() as conn:
        seen = schedule.read_cursor(conn, "daily-usage", "UTC")
        assert seen is not None and schedule.begin(conn, seen, fire, fire)
        period = period_before("day", fire, "UTC")
        claims.claim(conn, "daily-usage", ["a"], period, fire, "killed", fire, timedelta(minutes=10))
    stats = instances(live).run(at("2026-03-14 11:00"))  # three hours later: beyond the grace
    assert stats.sent == {"daily-usage": 3}
    assert [(r.account_id, r.status) for r in runs(daemon.engine)] == [
        ("a", "sent"),
        ("b", "sent"),
        ("c", "sent"),
    ]
    assert cursor(daemon.engine, "daily-usage", "UTC").pending_fire is None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # scheduling logic: one backend suffices
def test_a_stop_request_ends_the_run_before_the_next_report(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    daemon = instances(write_reports(rules_dir, DAILY + "    empty: send\n"))
    account(daemon.engine, "acme")
    daemon.run(at("2026-03-14 07:00"))
    daemon.pipeline.stopping.set()
    from balancewatch.reports.runner import run_due

    stats = run_due(
        daemon.engine,
        daemon.live,
        daemon.settings,
        at("2026-03-14 08:00"),
        "x",
        stopping=daemon.pipeline.stopping,
    )
    assert (stats.interrupted, stats.sent) == (True, {})
    daemon.pipeline.stopping.clear()
    assert daemon.run(at("2026-03-14 08:01")).sent == {"daily-usage": 1}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # scheduling logic: one backend suffices
def test_the_daemons_report_job_sends_what_is_due_and_wakes_delivery(
    instances: Callable[..., Instance], rules_dir: Path
) -> None:
    from balancewatch.runtime.service import Daemon
    from tests.conftest import Clock

    daemon = instances(write_reports(rules_dir, DAILY + "    empty: send\n"))
    account(daemon.engine, "acme")
    clock = Clock(at("2026-03-14 07:58"))
    service = Daemon(daemon.pipeline, clock=clock)
    service.scheduler.add_job(service.deliver_job, "interval", id="deliver", seconds=5)  # as run() adds it
    service.reports_job()
    assert messages(daemon.engine) == []
    clock.advance(minutes=3)
    service.reports_job()
    assert [m.idem_key for m in messages(daemon.engine)] == ["report/daily-usage/acme/2026-03-13"]
    assert service.scheduler.get_job("deliver").next_run_time == clock.now
