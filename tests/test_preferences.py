"""Owner preferences on SQLite and PostgreSQL: ``balancewatch prefs`` run in-process, and how
evaluation uses them (``below: owner``, ``notify: [preferences]``, ``unless: owner-configured``).

Exit status: 0 fine, 1 a reported failure, 2 bad usage. Amounts in the table are minor units.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert, select
from sqlmodel import Session

from balancewatch.cli import main
from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store.preferences import Change, set_preferences
from balancewatch.store.tables import OwnerPreference
from tests.conftest import Clock
from tests.helpers import account, outbox, post, set_balance

PREFS = OwnerPreference.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path, db_url: str) -> Iterator[Cli]:
    """Run ``balancewatch ARGV`` against the test database and capture its output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    env = {
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_LOG__LEVEL": "warning",
        "BALANCEWATCH_DATABASE__URL": db_url,
    }

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv), env)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level  # the CLI sets up logging for a whole process


def ok(result: Result) -> str:
    assert (result.code, result.err) == (0, ""), result
    return result.out


def failed(result: Result) -> str:
    assert (result.code, result.out) == (1, ""), result
    return result.err.strip()


def row(engine: Engine, account_id: str = "acme", currency: str = "USD") -> tuple[object, ...] | None:
    """(thresholds, recipients, remind, enabled) as stored, or None."""
    c = PREFS.c
    with engine.connect() as conn:
        r = conn.execute(select(PREFS).where(c.account_id == account_id, c.currency == currency)).first()
    if r is None:
        return None
    return ((r.threshold_1, r.threshold_2, r.threshold_3), list(r.recipients), r.remind, r.enabled)


@pytest.fixture
def acme(engine: Engine, clock: Clock) -> str:
    """acme, en_IN, holding ₹1,00,000.00."""
    account(engine, "acme", name="Acme Ltd", locale="en_IN")
    post(engine, "acme", "INR", 10_000_000, clock())
    return "acme"


# --- the command line ------------------------------------------------------------------------------


def test_prefs_alone_says_the_owner_has_none_and_how_to_set_some(cli: Cli, acme: str) -> None:
    out = ok(cli("prefs", "acme"))

    assert out.splitlines() == [
        "acme (Acme Ltd), owner acme@owner.example",
        "no preferences of its own: the default alerts apply",
        "set some with: balancewatch prefs acme --below 500,100",
    ]


def test_thresholds_and_recipients_are_stored_in_minor_units_and_shown_in_the_accounts_locale(
    cli: Cli, engine: Engine, acme: str
) -> None:
    out = ok(
        cli("prefs", "acme", "--below", "8000,20000.50", "--email", "cfo@acme.example, ops@acme.example")
    )

    assert row(engine, currency="INR") == (
        (2_000_050, 800_000, None),
        ["cfo@acme.example", "ops@acme.example"],
        False,
        True,
    )
    assert out.splitlines() == [
        "saved acme INR preferences",
        "acme (Acme Ltd), owner acme@owner.example",
        "currency  status   thresholds             reminder  also to",
        "INR       enabled  ₹20,000.50, ₹8,000.00  off       cfo@acme.example, ops@acme.example",
    ]


def test_a_fourth_threshold_is_refused_and_nothing_is_written(cli: Cli, engine: Engine, acme: str) -> None:
    err = failed(cli("prefs", "acme", "--below", "50000,20000,8000,800"))

    assert err == (
        "balancewatch prefs: --below: 4 thresholds given (50000, 20000, 8000, 800); an owner may set "
        "at most 3: keep the three that matter most, e.g. 50000,20000,8000"
    )
    assert row(engine, currency="INR") is None


def test_three_thresholds_are_accepted(cli: Cli, engine: Engine, acme: str) -> None:
    ok(cli("prefs", "acme", "--below", "50000,20000,8000"))

    assert row(engine, currency="INR")[0] == (5_000_000, 2_000_000, 800_000)  # type: ignore[index]


def test_disabling_keeps_every_value_and_enabling_restores_them_unchanged(
    cli: Cli, engine: Engine, acme: str
) -> None:
    ok(cli("prefs", "acme", "--below", "20000,8000", "--email", "cfo@acme.example", "--remind", "24h"))
    before = row(engine, currency="INR")

    out = ok(cli("prefs", "acme", "--disable"))
    assert row(engine, currency="INR") == (*before[:3], False)  # type: ignore[index]
    assert "INR       disabled  ₹20,000.00, ₹8,000.00  daily     cfo@acme.example" in out
    assert "disabled preferences are kept but not used; --enable restores them unchanged" in out

    ok(cli("prefs", "acme", "--enable"))
    assert row(engine, currency="INR") == before


def test_values_can_be_edited_while_disabled_and_stay_disabled(cli: Cli, engine: Engine, acme: str) -> None:
    ok(cli("prefs", "acme", "--below", "20000", "--disable"))

    ok(cli("prefs", "acme", "--below", "15000"))

    assert row(engine, currency="INR") == ((1_500_000, None, None), [], False, False)


def test_below_none_or_empty_clears_the_thresholds_and_keeps_the_rest(
    cli: Cli, engine: Engine, acme: str
) -> None:
    ok(cli("prefs", "acme", "--below", "20000", "--email", "cfo@acme.example"))

    ok(cli("prefs", "acme", "--below", "none"))
    assert row(engine, currency="INR") == ((None, None, None), ["cfo@acme.example"], False, True)
    ok(cli("prefs", "acme", "--below", "20000"))
    ok(cli("prefs", "acme", "--below", "", "--email", ""))
    assert row(engine, currency="INR") == ((None, None, None), [], False, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--email", "cfo@acme.example,not-an-address"],
            "--email: 'not-an-address' is not a valid email address: An email address must have an @-sign.",
        ),
        (
            ["--email", "a@acme.example; b@acme.example"],
            "--email: 'a@acme.example; b@acme.example': separate addresses with commas, not ';'",
        ),
        (
            ["--below", "0"],
            "--below: 0 is not above zero; write the amounts at which to be told, e.g. 500,100",
        ),
        (["--below", "100,100"], "--below: 100 appears twice; each threshold may appear once"),
        (["--below", "10.005"], "--below: 10.005 INR has more decimals than INR allows (2)"),
        (["--below", "lots"], "--below: 'lots' is not a number"),
        (
            ["--remind", "12h"],
            "--remind: '12h': an owner's reminder is daily while the balance stays below a threshold; "
            "write 24h to turn it on, or off",
        ),
        (["--currency", "inr", "--below", "5"], "--currency: 'inr': write currency codes in capitals: INR"),
        (
            ["--currency", "USD", "--disable"],
            "--disable: 'acme' has no USD preferences to disable; set thresholds or addresses first",
        ),
    ],
    ids=[
        "email",
        "semicolons",
        "zero",
        "twice",
        "decimals",
        "text",
        "remind",
        "currency",
        "nothing-to-disable",
    ],
)
def test_a_bad_value_is_refused_naming_the_option_and_nothing_is_written(
    cli: Cli, engine: Engine, acme: str, argv: list[str], message: str
) -> None:
    assert failed(cli("prefs", "acme", *argv)) == f"balancewatch prefs: {message}"
    assert row(engine, currency="INR") is None


def test_an_unknown_account_is_refused(cli: Cli) -> None:
    assert failed(cli("prefs", "nobody", "--below", "5", "--currency", "USD")) == (
        "balancewatch prefs: ACCOUNT: no account 'nobody' (add it with `balancewatch accounts add`)"
    )
    assert failed(cli("prefs", "nobody")).endswith(
        "no account 'nobody' (add it with `balancewatch accounts add`)"
    )


def test_a_subaccount_is_sent_to_its_main_account(cli: Cli, engine: Engine, acme: str) -> None:
    account(engine, "acme-eu", parent_id="acme")

    assert failed(cli("prefs", "acme-eu", "--below", "100")) == (
        "balancewatch prefs: ACCOUNT: 'acme-eu' is a subaccount of 'acme' and draws on its balance; "
        "set the preferences of 'acme'"
    )


def test_enable_and_disable_together_is_bad_usage(cli: Cli, acme: str) -> None:
    result = cli("prefs", "acme", "--enable", "--disable")

    assert result.code == 2
    assert "not allowed with argument --enable" in result.err


def test_an_account_holding_several_currencies_needs_currency_and_keeps_one_row_each(
    cli: Cli, engine: Engine, clock: Clock, acme: str
) -> None:
    post(engine, "acme", "USD", 50_000, clock())

    assert failed(cli("prefs", "acme", "--below", "100")) == (
        "balancewatch prefs: --currency: 'acme' holds INR and USD; name one of them"
    )
    ok(cli("prefs", "acme", "--currency", "USD", "--below", "100"))
    ok(cli("prefs", "acme", "--currency", "INR", "--below", "8000", "--remind", "on"))
    ok(cli("prefs", "acme", "--currency", "USD", "--disable"))

    assert row(engine, currency="USD") == ((10_000, None, None), [], False, False)
    assert row(engine, currency="INR") == ((800_000, None, None), [], True, True)
    shown = ok(cli("prefs", "acme")).splitlines()
    assert shown[2:4] == [
        "INR       enabled   ₹8,000.00   daily     -",
        "USD       disabled  $100.00     off       -",
    ]


def test_json_gives_every_currency_in_major_and_minor_units(cli: Cli, acme: str) -> None:
    ok(cli("prefs", "acme", "--below", "20000,8000.50", "--email", "cfo@acme.example", "--remind", "24h"))

    data = json.loads(ok(cli("prefs", "acme", "--json")))

    [prefs] = data.pop("preferences")
    assert data == {"account": "acme", "name": "Acme Ltd", "owner_email": "acme@owner.example"}
    prefs.pop("updated_at")
    assert prefs == {
        "currency": "INR",
        "enabled": True,
        "thresholds": ["20000.00", "8000.50"],
        "thresholds_minor": [2_000_000, 800_050],
        "recipients": ["cfo@acme.example"],
        "remind": "24h",
    }


def test_rows_the_platform_wrote_itself_are_shown_highest_first(cli: Cli, engine: Engine, acme: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(PREFS).values(
                account_id="acme",
                currency="INR",
                threshold_1=80_000,
                threshold_2=None,
                threshold_3=2_000_000,
                recipients=[],
                remind=False,
                enabled=True,
                updated_at=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )

    assert "INR       enabled  ₹20,000.00, ₹800.00  off" in ok(cli("prefs", "acme"))


# --- evaluation ------------------------------------------------------------------------------------

PLIVO = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
  - id: recommended
    accounts: {currency: USD}
    below: [150]
    unless: owner-configured
  - id: owner-alerts
    below: owner
    remind: 24h
    notify: [owner, preferences]
"""

MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet]
) -> MakePipeline:
    def make(rules: str = PLIVO) -> Pipeline:
        return build_pipeline(engine, make_settings(db_url), live_from(rules))

    return make


def prefs(
    engine: Engine, at: datetime, account_id: str = "acme", currency: str = "USD", **change: object
) -> None:
    with Session(engine) as s:
        set_preferences(s, account_id, currency, Change(**change), at)  # type: ignore[arg-type]
        s.commit()


def usd(engine: Engine, clock: Clock, account_id: str, amount: int = 60_000) -> None:
    account(engine, account_id, name=account_id.capitalize())
    post(engine, account_id, "USD", amount, clock())


def sent(engine: Engine, account_id: str | None = None) -> list[tuple[str, str, int]]:
    """(rule, kind, step) of every notification decided, in order."""
    return [(s.rule_id, s.kind, s.step) for s in outbox(engine, account_id)]


def test_the_owners_thresholds_alert_the_owner_and_the_addresses_they_added(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "acme")
    prefs(engine, clock(), thresholds=(50_000, 20_000), recipients=("cfo@acme.example",))
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "USD", 45_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())

    [alert] = outbox(engine)
    assert (alert.rule_id, alert.step) == ("owner-alerts", 50_000)
    assert alert.recipients == ("acme@owner.example", "cfo@acme.example")
    assert "$450.00" in alert.subject and "$500.00" in alert.subject


def test_defaults_never_override_an_owner_who_set_thresholds_and_still_apply_to_one_who_did_not(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "acme")
    usd(engine, clock, "globex")
    prefs(engine, clock(), thresholds=(12_000,))
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "USD", 11_000, clock.advance(minutes=5))
    set_balance(engine, "globex", "USD", 11_000, clock())
    pipeline.evaluate(clock())

    assert sent(engine, "acme") == [("ladder", "alert", 25_000), ("owner-alerts", "alert", 12_000)]
    assert sent(engine, "globex") == [("ladder", "alert", 25_000), ("recommended", "alert", 15_000)]


def test_preferences_with_addresses_only_do_not_count_as_owner_configured(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "acme")
    prefs(engine, clock(), recipients=("cfo@acme.example",))
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "USD", 14_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())

    assert sent(engine) == [("ladder", "alert", 25_000), ("recommended", "alert", 15_000)]


def test_thresholds_set_while_the_balance_is_already_below_alert_at_the_next_poll_not_the_next_sweep(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "acme", 30_000)
    pipeline.evaluate(clock())  # the first evaluation is a full sweep; $300 is above every step
    for _ in range(20):  # polls for ten minutes: the balance's change is long past the overlap
        assert not pipeline.evaluate(clock.advance(seconds=30)).full
    assert sent(engine) == []

    prefs(engine, clock.advance(seconds=10), thresholds=(40_000,))  # $400: the balance is below it
    stats = pipeline.evaluate(clock.advance(seconds=20))

    assert not stats.full  # a poll: the next sweep is minutes away
    assert sent(engine) == [("owner-alerts", "alert", 40_000)]


def test_disabled_preferences_give_the_defaults_back_and_enabling_restores_the_owners_thresholds(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "acme")
    prefs(engine, clock(), thresholds=(12_000,), recipients=("cfo@acme.example",))
    prefs(engine, clock(), enabled=False)
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "USD", 14_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    assert sent(engine) == [("ladder", "alert", 25_000), ("recommended", "alert", 15_000)]

    prefs(engine, clock.advance(minutes=5), enabled=True)
    set_balance(engine, "acme", "USD", 11_900, clock())
    pipeline.evaluate(clock())

    assert sent(engine)[2:] == [("owner-alerts", "alert", 12_000)]
    assert outbox(engine)[-1].recipients == ("acme@owner.example", "cfo@acme.example")


def test_owner_thresholds_remind_daily_only_when_the_owner_turned_reminders_on(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "keen")
    usd(engine, clock, "quiet")
    prefs(engine, clock(), "keen", thresholds=(50_000,), remind=True)
    prefs(engine, clock(), "quiet", thresholds=(50_000,), remind=False)
    set_balance(engine, "keen", "USD", 40_000, clock())
    set_balance(engine, "quiet", "USD", 40_000, clock())
    pipeline.evaluate(clock())

    [keen_alert] = outbox(engine, "keen")
    [quiet_alert] = outbox(engine, "quiet")
    assert "remind you every day" in keen_alert.text
    assert "remind you" not in quiet_alert.text

    pipeline.evaluate(clock.advance(hours=23))
    assert len(outbox(engine)) == 2
    pipeline.evaluate(clock.advance(hours=1))
    pipeline.evaluate(clock.advance(days=1))

    assert sent(engine, "keen") == [
        ("owner-alerts", "alert", 50_000),
        ("owner-alerts", "reminder", 50_000),
        ("owner-alerts", "reminder", 50_000),
    ]
    assert sent(engine, "quiet") == [("owner-alerts", "alert", 50_000)]


def test_an_owner_rule_without_remind_still_reminds_daily_the_owners_who_asked(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline("alerts:\n  - id: owner-alerts\n    below: owner\n")
    usd(engine, clock, "keen")
    prefs(engine, clock(), "keen", thresholds=(50_000,), remind=True)
    set_balance(engine, "keen", "USD", 40_000, clock())
    pipeline.evaluate(clock())

    pipeline.evaluate(clock.advance(days=1))

    assert sent(engine) == [("owner-alerts", "alert", 50_000), ("owner-alerts", "reminder", 50_000)]


def test_a_changed_owner_threshold_starts_fresh(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline("alerts:\n  - id: owner-alerts\n    below: owner\n")
    usd(engine, clock, "acme")
    prefs(engine, clock(), thresholds=(50_000,))
    set_balance(engine, "acme", "USD", 45_000, clock())
    pipeline.evaluate(clock())

    prefs(engine, clock.advance(minutes=5), thresholds=(48_000,))
    set_balance(engine, "acme", "USD", 44_000, clock())
    pipeline.evaluate(clock())

    assert sent(engine) == [("owner-alerts", "alert", 50_000), ("owner-alerts", "alert", 48_000)]


def test_each_currency_uses_the_owners_thresholds_for_that_currency(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline("alerts:\n  - id: owner-alerts\n    below: owner\n")
    usd(engine, clock, "acme")
    post(engine, "acme", "INR", 5_000_000, clock())
    prefs(engine, clock(), currency="USD", thresholds=(50_000,))
    prefs(engine, clock(), currency="INR", thresholds=(2_000_000,))
    pipeline.evaluate(clock())

    set_balance(engine, "acme", "INR", 1_900_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    set_balance(engine, "acme", "USD", 49_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())

    assert [(s.currency, s.step) for s in outbox(engine)] == [("INR", 2_000_000), ("USD", 50_000)]


def test_an_owner_who_turns_the_reminder_on_while_low_is_reminded_a_day_after_it_is_seen(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    usd(engine, clock, "acme")
    prefs(engine, clock(), thresholds=(50_000,), remind=False)
    set_balance(engine, "acme", "USD", 40_000, clock())
    pipeline.evaluate(clock())

    prefs(engine, clock.advance(days=2), remind=True)
    pipeline.evaluate(clock())  # the change is seen: the reminder is scheduled a day from now
    pipeline.evaluate(clock.advance(hours=23))
    assert sent(engine) == [("owner-alerts", "alert", 50_000)]
    pipeline.evaluate(clock.advance(hours=1))

    assert sent(engine) == [("owner-alerts", "alert", 50_000), ("owner-alerts", "reminder", 50_000)]
