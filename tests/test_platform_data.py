"""Data the billing platform writes is untrusted input: it never silences an alert, and no
command fails after it has committed.

Accounts get ``locale``, ``timezone`` and currencies written as a platform would write them
(straight into the table, unchecked). Storage tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select, update
from sqlmodel import Session

from balancewatch.cli import main
from balancewatch.config import Settings
from balancewatch.core.metrics import Metrics
from balancewatch.core.money import format_money, to_major
from balancewatch.evaluate import usage
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store import importcsv, ledger, platform_data
from balancewatch.store.platform_data import WarnedOnce, account_locale, account_timezone
from balancewatch.store.tables import Account, Balance, LedgerEntry
from tests.conftest import Clock
from tests.helpers import account, outbox
from tests.reportkit import REPORT_TEMPLATES, Instance, messages, runs, write_reports

ACCOUNT = Account.__table__  # type: ignore[attr-defined]
BALANCE = Balance.__table__  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
DAY = timedelta(days=1)
MakeSettings = Callable[..., Settings]
LiveFrom = Callable[[str], LiveSet]

INR_LADDER = """
alerts:
  - id: inr
    accounts: {currency: INR}
    below: [200000, 100000, 50000]
    template: low-balance
"""
EXHAUSTED = """
alerts:
  - id: exhausted
    exhausted: true
    template: low-balance
"""
USAGE_RULES = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    template: low-balance
  - id: recommended
    accounts: {currency: USD}
    below: [average-daily-usage]
    template: recommended-threshold
"""


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    """Each test starts as a fresh process would: nothing warned about yet."""
    platform_data.WARNED.clear()
    yield
    platform_data.WARNED.clear()


@pytest.fixture
def make_pipeline(
    engine: Engine, db_url: str, make_settings: MakeSettings, live_from: LiveFrom
) -> Callable[..., Pipeline]:
    def make(rules: str, **env: str) -> Pipeline:
        return build_pipeline(engine, make_settings(db_url, **env), live_from(rules))

    return make


def written_by_platform(engine: Engine, account_id: str, **values: str | None) -> None:
    """Set account columns as the billing platform would: unchecked."""
    with engine.begin() as conn:
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == account_id).values(**values))


def credit(engine: Engine, account_id: str, currency: str, amount: int, at: datetime, now: datetime) -> int:
    """Post ``amount`` minor units at ``at`` (a top-up, or usage when negative), seen at ``now``."""
    kind = "top-up" if amount > 0 else "usage"
    with Session(engine) as s:
        posted = ledger.post(s, account_id, currency, amount, kind, occurred_at=at, now=now)
        s.commit()
    return posted.balance_after


def warnings_about(caplog: pytest.LogCaptureFixture, account_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith(f"account {account_id}:")
    ]


# --- reading the platform's values ----------------------------------------------------------------


@pytest.mark.parametrize("written", ["en-IN", "en_in", "EN-in", "en_IN.UTF-8", " en_IN ", "en_IN@calendar"])
def test_a_locale_in_any_common_spelling_is_read_as_babel_names_it(written: str) -> None:
    assert account_locale(written, "en_US", "acme") == "en_IN"


def test_a_language_alone_is_a_locale_too() -> None:
    assert account_locale("de", "en_US", "acme") == "de"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("xx_YY", "is not a locale Babel knows (e.g. en_US, en_IN, de_DE)"),
        ("klingon", "is not a locale Babel knows (e.g. en_US, en_IN, de_DE)"),
        ("", "is empty"),
        ("   ", "is empty"),
    ],
)
def test_a_locale_babel_does_not_know_is_the_default_with_one_warning_saying_where_to_fix_it(
    caplog: pytest.LogCaptureFixture, written: str, reason: str
) -> None:
    with caplog.at_level(logging.WARNING):
        assert [account_locale(written, "en_US", "acme") for _ in range(3)] == ["en_US"] * 3
    assert warnings_about(caplog, "acme") == [
        f"account acme: locale {written!r} {reason}; using the default en_US instead. Fix account.locale "
        "in the account row the billing platform writes (said once per process)"
    ]


def test_no_locale_at_all_is_the_default_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert account_locale(None, "en_GB", "acme") == "en_GB"
        assert account_timezone(None, "Europe/Berlin", "acme") == "Europe/Berlin"
    assert caplog.records == []


@pytest.mark.parametrize("written", ["Asia/Kolkata", "asia/kolkata", " Asia/Kolkata ", "ASIA/KOLKATA"])
def test_a_zone_is_read_whatever_its_letter_case_or_surrounding_spaces(written: str) -> None:
    assert account_timezone(written, "UTC", "acme") == "Asia/Kolkata"


@pytest.mark.parametrize("written", ["Mars/Olympus", "", "America", "../etc/passwd", "UTC\x00"])
def test_an_unknown_zone_is_the_default_with_one_warning_per_account(
    caplog: pytest.LogCaptureFixture, written: str
) -> None:
    with caplog.at_level(logging.WARNING):
        for account_id in ("acme", "acme", "globex"):
            assert account_timezone(written, "UTC", account_id) == "UTC"
    assert len(warnings_about(caplog, "acme")) == len(warnings_about(caplog, "globex")) == 1
    [said] = warnings_about(caplog, "acme")
    assert f"timezone {written!r}" in said and "using the default UTC" in said and "account.timezone" in said


def test_the_warning_record_is_bounded_and_forgets_the_least_recently_seen_first() -> None:
    seen = WarnedOnce(limit=2)
    assert [seen.first(k) for k in ("a", "b", "a", "c")] == [True, True, False, True]
    # "b" was the least recently seen when "c" came: forgotten, so it is warned about again.
    assert [seen.first("a"), seen.first("b")] == [False, True]


def test_the_warning_record_answers_first_exactly_once_across_threads() -> None:
    seen = WarnedOnce()
    start = threading.Barrier(8)
    answers: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        for _ in range(200):
            answer = seen.first(("acme", "locale", "klingon"))
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(True) == 1 and len(answers) == 1600


def test_money_in_a_code_that_is_not_iso_4217_is_the_code_with_two_decimals() -> None:
    assert to_major(-1234, "XYZ") == to_major(-1234, "USD")
    assert format_money(123_456, "XYZ", "en_US") == "XYZ1,234.56"


def test_money_formatting_never_raises_whatever_the_locale() -> None:
    assert format_money(12_345_600, "INR", "en-IN") == "₹1,23,456.00"
    assert format_money(1250, "USD", "klingon") == "12.50 USD"


# --- alerts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("written", ["en-IN", "en_in"])
def test_an_account_whose_locale_is_written_en_in_gets_its_alert_in_indian_grouping(
    engine: Engine, make_pipeline: Callable[..., Pipeline], clock: Clock, written: str
) -> None:
    pipeline = make_pipeline(INR_LADDER)
    account(engine, "acme", name="Acme Ltd")
    written_by_platform(engine, "acme", locale=written)
    credit(engine, "acme", "INR", 30_000_000, clock(), clock())
    pipeline.evaluate(clock())

    credit(engine, "acme", "INR", -17_654_400, clock(), clock.advance(minutes=1))
    pipeline.evaluate(clock.advance(minutes=1))

    [sent] = outbox(engine)
    assert sent.subject == "Acme Ltd: INR balance ₹1,23,456.00 is below ₹2,00,000.00"
    assert "fallen to ₹1,23,456.00, below the alert threshold of ₹2,00,000.00." in sent.text


@pytest.mark.parametrize(
    ("column", "written", "shown"),
    [
        ("locale", "xx_YY", "Your INR balance has fallen to ₹123,456.00"),
        ("locale", "klingon", "Your INR balance has fallen to ₹123,456.00"),
        ("timezone", "Mars/Olympus", "(UTC)"),
    ],
)
def test_an_unknown_locale_or_zone_is_the_default_with_one_warning_per_account_over_many_cycles(
    engine: Engine,
    make_pipeline: Callable[..., Pipeline],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    column: str,
    written: str,
    shown: str,
) -> None:
    pipeline = make_pipeline(INR_LADDER)
    account(engine, "acme", name="Acme Ltd")
    written_by_platform(engine, "acme", **{column: written})
    credit(engine, "acme", "INR", 30_000_000, clock(), clock())
    pipeline.evaluate(clock())

    with caplog.at_level(logging.WARNING):
        for debit in (-17_654_400, -3_000_000, -5_000_000):  # below 200000, 100000, then 50000
            credit(engine, "acme", "INR", debit, clock(), clock.advance(minutes=1))
            pipeline.evaluate(clock.advance(minutes=1))

    sent = outbox(engine)
    assert [s.step for s in sent] == [20_000_000, 10_000_000, 5_000_000]
    assert shown in sent[0].text
    [warning] = warnings_about(caplog, "acme")
    assert f"{column} {written!r}" in warning and f"Fix account.{column}" in warning


def test_values_replaced_by_the_default_are_counted_once_per_account_and_value_for_prometheus(
    engine: Engine, make_pipeline: Callable[..., Pipeline], clock: Clock
) -> None:
    pipeline = make_pipeline(INR_LADDER, metrics__listen="127.0.0.1:9100")
    assert isinstance(pipeline.metrics, Metrics)
    registry = pipeline.metrics.registry

    def fallbacks(field: str) -> float | None:
        return registry.get_sample_value("balancewatch_platform_data_fallbacks_total", {"field": field})

    before = {field: fallbacks(field) or 0 for field in ("locale", "timezone", "currency")}
    for name, locale in (("one", "klingon"), ("two", "klingon"), ("three", "en-IN")):
        account(engine, name)
        written_by_platform(engine, name, locale=locale)
        credit(engine, name, "INR", 30_000_000, clock(), clock())
    for debit in (-17_654_400, -3_000_000, -5_000_000):  # below 200000, 100000, then 50000
        for name in ("one", "two", "three"):
            credit(engine, name, "INR", debit, clock(), clock.advance(minutes=1))
        pipeline.evaluate(clock.advance(minutes=1))

    assert len(outbox(engine)) == 9  # every alert went out
    assert fallbacks("locale") == before["locale"] + 2  # en-IN is a locale; klingon, once per account
    assert (fallbacks("timezone"), fallbacks("currency")) == (before["timezone"], before["currency"])


def test_a_balance_in_a_currency_that_is_not_iso_4217_still_gets_its_alert(
    engine: Engine, make_pipeline: Callable[..., Pipeline], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = make_pipeline(EXHAUSTED)
    account(engine, "acme", name="Acme Ltd")
    with engine.begin() as conn:  # as the platform would write it: no check on the code
        conn.execute(
            insert(BALANCE).values(account_id="acme", currency="XYZ", amount=-150, updated_at=clock())
        )
    with caplog.at_level(logging.WARNING):
        pipeline.evaluate(clock.advance(minutes=1))
        pipeline.evaluate(clock.advance(days=2))  # a daily reminder would render it again

    [sent] = outbox(engine)
    assert sent.subject == "Acme Ltd: your XYZ balance is used up (-XYZ1.50)"
    [warning] = warnings_about(caplog, "acme")
    assert "currency 'XYZ'" in warning and "not an ISO 4217 code" in warning


# --- reports -----------------------------------------------------------------------------------------

DAILY_BY_ACCOUNT = """
reports:
  - id: daily
    schedule: daily at 08:00
    contents: usage
    empty: send
"""


@pytest.fixture
def instance(db_url: str, make_settings: MakeSettings, rules_dir: Path) -> Iterator[Instance]:
    settings = make_settings(db_url, templates_dir=str(REPORT_TEMPLATES))
    daemon = Instance(db_url, settings, write_reports(rules_dir, DAILY_BY_ACCOUNT))
    yield daemon
    daemon.close()


def test_a_report_for_an_account_with_a_bad_zone_or_locale_still_goes_out(
    instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    engine = instance.engine
    for name, zone, locale in [
        ("mars", "Mars/Olympus", "klingon"),  # neither is known: the default zone and locale
        ("india", " asia/kolkata", "en-IN"),  # both known, spelled loosely
        ("plain", None, None),
    ]:
        account(engine, name)
        written_by_platform(engine, name, timezone=zone, locale=locale)
    instance.run(datetime(2026, 3, 13, 0, 0, tzinfo=UTC))
    with caplog.at_level(logging.WARNING):
        for step in range(24 * 4):  # every 15 minutes of 14 March (UTC)
            instance.run(datetime(2026, 3, 14, 0, 0, tzinfo=UTC) + timedelta(minutes=15 * step))

    sent = {(r.account_id, r.timezone, r.period_key, r.status) for r in runs(engine, "daily")}
    assert sent == {
        ("india", "Asia/Kolkata", "2026-03-13", "sent"),
        ("mars", "UTC", "2026-03-13", "sent"),
        ("plain", "UTC", "2026-03-13", "sent"),
    }
    assert len(messages(engine)) == 3
    assert len(warnings_about(caplog, "mars")) == 2  # its zone and its locale, once each
    assert warnings_about(caplog, "india") == []


# --- ledger post -------------------------------------------------------------------------------------


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], db_url: str, tmp_path: Path) -> Iterator[Cli]:
    """Run ``balancewatch ARGV`` in-process on the test's database: (exit status, stdout, stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    env = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_LOG__LEVEL": "warning",
        "BALANCEWATCH_DATABASE__URL": db_url,
    }

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv), env)
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke
    root.handlers[:], root.level = handlers, level


def entries(engine: Engine, account_id: str = "acme") -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        query = select(LEDGER.c.id, LEDGER.c.amount, LEDGER.c.reference).where(
            LEDGER.c.account_id == account_id
        )
        return [tuple(r) for r in conn.execute(query.order_by(LEDGER.c.id))]


def balance_of(engine: Engine, account_id: str = "acme", currency: str = "USD") -> int | None:
    with engine.connect() as conn:
        c = BALANCE.c
        return conn.execute(
            select(c.amount).where(c.account_id == account_id, c.currency == currency)
        ).scalar_one_or_none()


@pytest.fixture
def acme(engine: Engine) -> str:
    account(engine, "acme")
    return "acme"


def test_ledger_post_on_an_account_whose_locale_is_written_en_in_exits_0_and_prints_rupees(
    cli: Cli, engine: Engine, acme: str
) -> None:
    written_by_platform(engine, acme, locale="en-IN")
    assert cli("ledger", "post", acme, "123456", "--currency", "INR") == (
        0,
        "posted #1: top-up ₹1,23,456.00; acme balance ₹1,23,456.00\n",
        "",
    )


def test_ledger_post_on_an_account_with_an_unknown_locale_posts_once_and_says_so_in_the_default(
    cli: Cli, engine: Engine, acme: str
) -> None:
    written_by_platform(engine, acme, locale="klingon")
    code, out, err = cli("ledger", "post", acme, "12.50")
    assert (code, out) == (0, "posted #1: top-up $12.50; acme balance $12.50\n")
    assert "locale 'klingon'" in err and "Traceback" not in err
    assert entries(engine) == [(1, 1250, None)]


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["balance", "show", "acme"], "INR       ₹1,23,456.00"),
        (["recommend", "acme"], "  balance:      ₹1,23,456.00"),
        (["prefs", "acme", "--currency", "INR", "--below", "500"], "INR       enabled  ₹500.00"),
    ],
    ids=["balance-show", "recommend", "prefs"],
)
def test_commands_that_show_money_show_it_in_an_account_locale_written_en_in(
    cli: Cli, engine: Engine, acme: str, argv: list[str], shown: str
) -> None:
    written_by_platform(engine, acme, locale="en-IN")
    cli("ledger", "post", acme, "123456", "--currency", "INR")
    code, out, err = cli(*argv)
    assert (code, err) == (0, "")
    assert any(line.startswith(shown) for line in out.splitlines()), out


def test_posting_a_reference_again_with_the_same_details_posts_nothing_and_says_it_was_posted(
    cli: Cli, engine: Engine, acme: str
) -> None:
    assert cli("ledger", "post", acme, "100", "--reference", "ch_1")[0] == 0
    assert cli("ledger", "post", acme, "100", "--reference", "ch_1", "--kind", "top-up") == (
        0,
        "already posted #1 (reference 'ch_1'): top-up $100.00; acme balance $100.00\n",
        "",
    )
    assert entries(engine) == [(1, 10_000, "ch_1")]
    assert balance_of(engine) == 10_000


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["90"], "an other amount"),
        (["100", "--kind", "refund"], "an other kind"),
        (["100", "--currency", "EUR"], "an other currency"),
    ],
)
def test_posting_a_reference_again_with_other_details_exits_1_with_one_line(
    cli: Cli, engine: Engine, acme: str, argv: list[str], why: str
) -> None:
    cli("ledger", "post", acme, "100", "--reference", "ch_1")
    assert cli("ledger", "post", acme, *argv, "--reference", "ch_1") == (
        1,
        "",
        "balancewatch ledger post: reference: 'ch_1' is already used by entry #1 of acme "
        "(top-up $100.00); nothing posted\n",
    ), why
    assert entries(engine) == [(1, 10_000, "ch_1")]
    assert balance_of(engine, currency="EUR") is None


def writing_the_balance(engine: Engine, thread: str) -> threading.Event:
    """Set when ``thread`` sends its balance upsert: by then it has looked for the reference.

    On SQLite writers take turns from their first statement (BEGIN IMMEDIATE), so a second
    writer cannot get this far while the first is open: the event is set at once there.
    """
    reached = threading.Event()
    if engine.dialect.name != "postgresql":
        reached.set()
        return reached

    def seen(*args: Any) -> None:
        if threading.current_thread().name == thread and str(args[2]).startswith("INSERT INTO balance"):
            reached.set()

    event.listen(engine, "before_cursor_execute", seen)
    return reached


@pytest.mark.parametrize("look_first", [True, False], ids=["looked-up-first", "left-to-the-constraint"])
def test_two_concurrent_posts_of_one_reference_make_one_entry_and_the_other_is_told(
    engine: Engine, acme: str, clock: Clock, look_first: bool
) -> None:
    first = Session(engine)
    posted = ledger.post(
        first, acme, "USD", 10_000, "top-up", occurred_at=clock(), now=clock(), reference="r"
    )
    outcome: list[object] = []
    reached = writing_the_balance(engine, "second")

    def second() -> None:
        with Session(engine) as s:
            try:
                # Waits for the first transaction: on the balance row (PostgreSQL), on the
                # write lock (SQLite).
                ledger.post(
                    s,
                    acme,
                    "USD",
                    10_000,
                    "top-up",
                    occurred_at=clock(),
                    now=clock(),
                    reference="r",
                    check_reference=look_first,
                )
                s.commit()
                outcome.append("posted")
            except ledger.AlreadyPostedError as exc:
                outcome.append(exc.entry)

    thread = threading.Thread(target=second, name="second")
    thread.start()
    assert reached.wait(timeout=60)  # it did not see the first's entry: not committed yet
    first.commit()
    first.close()
    thread.join(timeout=120)

    assert outcome == [ledger.Known(posted.entry_id, acme, "USD", 10_000, "top-up", 10_000)]
    assert entries(engine) == [(posted.entry_id, 10_000, "r")]
    assert balance_of(engine) == 10_000


def test_an_import_running_alongside_a_post_of_one_of_its_references_skips_it(
    engine: Engine, acme: str, clock: Clock
) -> None:
    first = Session(engine)
    ledger.post(first, acme, "USD", 5_000, "top-up", occurred_at=clock(), now=clock(), reference="r-1")
    rows = [
        importcsv.Row(2, acme, "USD", 5_000, "top-up", None, None, clock(), "r-1"),
        importcsv.Row(3, acme, "USD", -1_000, "usage", "sms", 10, clock(), "r-2"),
    ]
    result: list[importcsv.ImportResult] = []
    reached = writing_the_balance(engine, "import")

    def run_import() -> None:
        with Session(engine) as s:
            result.append(importcsv.import_rows(s, rows, clock()))

    thread = threading.Thread(target=run_import, name="import")
    thread.start()
    assert reached.wait(timeout=60)  # it looked for r-1 before the post of r-1 committed
    first.commit()
    first.close()
    thread.join(timeout=120)

    assert result == [importcsv.ImportResult(posted=1, skipped=1)]
    assert [e[1:] for e in entries(engine)] == [(5_000, "r-1"), (-1_000, "r-2")]
    assert balance_of(engine) == 4_000


# --- usage the summary does not have yet --------------------------------------------------------------


def new_account_with_history(engine: Engine, clock: Clock) -> None:
    """An account added after the last refresh, with ten days of history ($29.00 a day) imported
    now: $300.00 credited ten days ago, $10.00 left."""
    account(engine, "newco", name="Newco")
    seen = clock()
    credit(engine, "newco", "USD", 30_000, seen - 10 * DAY, seen)
    for days_ago in range(10, 0, -1):
        credit(engine, "newco", "USD", -2_900, seen - days_ago * DAY + timedelta(hours=1), seen)


def test_an_account_new_since_the_last_refresh_is_told_its_real_usage_and_its_usage_step_fires(
    engine: Engine, make_pipeline: Callable[..., Pipeline], clock: Clock
) -> None:
    pipeline = make_pipeline(USAGE_RULES)
    pipeline.evaluate(clock())  # refreshes the usage summary: nothing to summarize yet
    new_account_with_history(engine, clock)
    clock.advance(minutes=1)

    stats = pipeline.evaluate(clock.advance(minutes=1))  # the next refresh is an hour away

    assert dict(stats.decided) == {"ladder": 1, "recommended": 1}
    ladder, recommended = sorted(outbox(engine, "newco"), key=lambda s: s.rule_id)
    assert "You used $290.00 over the 10 days since your first ledger entry, an average of $29.00 a day" in (
        ladder.text
    )
    assert "no usage" not in ladder.text
    assert (recommended.rule_id, recommended.step) == ("recommended", 2_900)


def test_figures_computed_for_a_missing_summary_are_those_a_refresh_stores(
    engine: Engine, clock: Clock
) -> None:
    new_account_with_history(engine, clock)
    key, now, history = ("newco", "USD"), clock(), timedelta(days=3)
    with engine.connect() as conn:
        computed = usage.current(conn, [key], [30, 7], now, history)
    with engine.begin() as conn:
        usage.refresh(conn, now, [30, 7], history)
    with engine.connect() as conn:
        stored = usage.current(conn, [key], [30, 7], now, history)
    assert computed == stored
    assert (computed[30][key].adu, computed[7][key].adu) == (2_900, 2_900)


def test_only_balances_without_a_summary_are_computed(engine: Engine, clock: Clock) -> None:
    new_account_with_history(engine, clock)
    now = clock.advance(hours=1)
    with engine.begin() as conn:
        usage.refresh(conn, now, [30], timedelta(days=3))
    account(engine, "later")
    credit(engine, "later", "USD", 1_000, now, now)
    grouped: list[str] = []

    def count(*args: Any) -> None:
        if "window_usage" in str(args[2]):
            grouped.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.connect() as conn:
            refreshed = usage.current(conn, [("newco", "USD")], [30], now, timedelta(days=3))
            assert grouped == []
            both = usage.current(conn, [("newco", "USD"), ("later", "USD")], [30], now, timedelta(days=3))
            assert len(grouped) == 1
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert both[30][("newco", "USD")] == refreshed[30][("newco", "USD")]
    assert both[30][("later", "USD")].status == usage.SHORT
