"""Estimated messages left per service and usage per subaccount, on SQLite and PostgreSQL.

Unit prices come from ``prices`` in the configuration (exact, finer than a
cent allowed) or, for a service without one, from the ledger: cost ÷ quantity
of its usage entries over the usage window, subaccounts included. Amounts in
the ledger are minor units (cents).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select
from sqlmodel import Session

from balancewatch.config import Settings, load_settings
from balancewatch.core.problems import ProblemsError
from balancewatch.evaluate import services
from balancewatch.evaluate.services import LedgerPrice, MessagesLeft, SubaccountUsage
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store import ledger
from tests.conftest import Clock
from tests.helpers import OUTBOX, account, outbox, post, set_balance

DAY = timedelta(days=1)
LADDER = "alerts:\n  - id: ladder\n    accounts: {currency: USD}\n    below: [100]\n"
MakePipeline = Callable[..., Pipeline]
PRICES = "sum(ledger_entry.quantity)"  # in the query of ledger prices, and only there
SUBACCOUNTS = "SELECT account.parent_id, account.id, account.name"  # the query of usage per subaccount


@pytest.fixture
def make_pipeline(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet]
) -> MakePipeline:
    """A pipeline over the test database running ``rules``, settings from ``env``."""

    def make(rules: str = LADDER, **env: str) -> Pipeline:
        return build_pipeline(engine, make_settings(db_url, usage__refresh="1ms", **env), live_from(rules))

    return make


def used(
    engine: Engine,
    account_id: str,
    amount: int,
    service: str | None,
    quantity: int | None,
    at: datetime,
    currency: str = "USD",
) -> None:
    """A usage debit of ``amount`` cents for ``quantity`` units of ``service``."""
    with Session(engine) as s:
        ledger.post(
            s,
            account_id,
            currency,
            -amount,
            "usage",
            occurred_at=at,
            now=at,
            service=service,
            quantity=quantity,
        )
        s.commit()


def prices(engine: Engine, keys: list[tuple[str, str]], now: datetime) -> dict[tuple[str, str], dict]:
    with engine.connect() as conn:
        return services.ledger_prices(conn, keys, now, 30)


def html_of_last(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(select(OUTBOX.c.html).order_by(OUTBOX.c.id.desc()).limit(1)).scalar_one()


# --- the arithmetic -----------------------------------------------------------------------------------


def test_a_configured_price_finer_than_a_cent_divides_the_balance_exactly_rounded_down() -> None:
    [sms] = services.messages_left(8_412, "USD", {"sms": Decimal("0.0075")}, {})

    assert sms == MessagesLeft("sms", 11_216, Decimal("0.0075"), "USD", "configured")  # 84.12 / 0.0075


def test_a_price_that_divides_the_balance_exactly_is_not_rounded_away() -> None:
    # 0.07 / 0.0007 is exactly 100; through float it would be 99.99999999999999.
    [sms] = services.messages_left(7, "USD", {"sms": Decimal("0.0007")}, {})

    assert sms.count == 100


def test_nothing_is_left_at_or_below_zero() -> None:
    configured = {"sms": Decimal("0.0075")}
    derived = {"voice": LedgerPrice("voice", 1_400, 1_000)}

    assert [m.count for m in services.messages_left(0, "USD", configured, derived)] == [0, 0]
    assert [m.count for m in services.messages_left(-500, "USD", configured, derived)] == [0, 0]


def test_a_ledger_price_counts_with_the_exact_ratio_and_shows_six_decimals() -> None:
    # $10.00 for 3 units: $3.333333... each; $100.00 buys 30 of them, not 29.
    [unit] = services.messages_left(10_000, "USD", {}, {"api": LedgerPrice("api", 1_000, 3)})

    assert (unit.count, unit.unit_price, unit.source) == (30, Decimal("3.333333"), "ledger")
    assert (unit.cost, unit.quantity) == (1_000, 3)


def test_a_configured_price_wins_over_the_ledgers_and_services_come_sorted() -> None:
    left = services.messages_left(
        10_000,
        "USD",
        {"voice": Decimal("0.02")},
        {"voice": LedgerPrice("voice", 100, 100), "sms": LedgerPrice("sms", 75, 10)},
    )

    assert [(m.service, m.count, m.source) for m in left] == [
        ("sms", 1_333, "ledger"),
        ("voice", 5_000, "configured"),
    ]


def test_a_currency_without_minor_units_is_divided_in_yen() -> None:
    [sms] = services.messages_left(1_001, "JPY", {"sms": Decimal("0.5")}, {})

    assert sms.count == 2_002


# --- prices from the ledger -----------------------------------------------------------------------------


def test_the_ledger_price_is_cost_over_quantity_of_usage_with_a_quantity_in_the_window(
    engine: Engine, clock: Clock
) -> None:
    account(engine, "acme")
    now = clock()
    post(engine, "acme", "USD", 100_000, now - 40 * DAY)
    used(engine, "acme", 750, "sms", 1_000, now - 2 * DAY)
    used(engine, "acme", 1_500, "sms", 2_000, now - 20 * DAY)
    used(engine, "acme", 9_999, "sms", 1, now - 31 * DAY)  # before the window
    used(engine, "acme", 5_000, "sms", None, now - DAY)  # no quantity: a fee, not a price
    used(engine, "acme", 300, None, 10, now - DAY)  # no service
    used(engine, "acme", 1_400, "voice", 1_000, now - 3 * DAY)

    assert prices(engine, [("acme", "USD")], now) == {
        ("acme", "USD"): {
            "sms": LedgerPrice("sms", 2_250, 3_000),  # $0.0075 each
            "voice": LedgerPrice("voice", 1_400, 1_000),
        }
    }


def test_a_subaccounts_usage_prices_its_main_accounts_balance(engine: Engine, clock: Clock) -> None:
    account(engine, "acme")
    account(engine, "acme-eu", parent_id="acme")
    now = clock()
    post(engine, "acme", "USD", 100_000, now - 40 * DAY)
    used(engine, "acme", 800, "sms", 1_000, now - DAY)
    used(engine, "acme-eu", 700, "sms", 1_000, now - DAY)

    found = prices(engine, [("acme", "USD")], now)

    assert found == {("acme", "USD"): {"sms": LedgerPrice("sms", 1_500, 2_000)}}
    assert prices(engine, [("acme-eu", "USD")], now) == {}  # a subaccount has no balance of its own


def test_each_currency_and_account_of_a_chunk_gets_its_own_prices_from_one_query(
    engine: Engine, clock: Clock
) -> None:
    account(engine, "acme")
    account(engine, "globex")
    now = clock()
    post(engine, "acme", "USD", 100_000, now - 40 * DAY)
    post(engine, "acme", "INR", 1_000_000, now - 40 * DAY)
    post(engine, "globex", "USD", 100_000, now - 40 * DAY)
    used(engine, "acme", 750, "sms", 1_000, now - DAY)
    used(engine, "acme", 25_000, "sms", 1_000, now - DAY, currency="INR")
    used(engine, "globex", 900, "sms", 1_000, now - DAY)

    found = prices(engine, [("acme", "USD"), ("acme", "INR"), ("globex", "USD")], now)

    assert {k: v["sms"].cost for k, v in found.items()} == {
        ("acme", "USD"): 750,
        ("acme", "INR"): 25_000,
        ("globex", "USD"): 900,
    }


# --- usage per subaccount ---------------------------------------------------------------------------------


def test_usage_per_subaccount_covers_every_subaccount_most_used_first(engine: Engine, clock: Clock) -> None:
    account(engine, "acme")
    account(engine, "acme-eu", name="Acme Europe", parent_id="acme")
    account(engine, "acme-us", name="Acme US", parent_id="acme")
    account(engine, "acme-jp", name="Acme Japan", parent_id="acme")
    account(engine, "solo")
    now = clock()
    post(engine, "acme", "USD", 100_000, now - 40 * DAY)
    post(engine, "solo", "USD", 100_000, now - 40 * DAY)
    used(engine, "acme-eu", 3_000, "sms", 400, now - DAY)
    used(engine, "acme-us", 5_000, None, None, now - 2 * DAY)
    used(engine, "acme-us", 7_000, None, None, now - 31 * DAY)  # before the window
    used(engine, "acme", 1_000, None, None, now - DAY)  # the main account's own: not a subaccount's

    with engine.connect() as conn:
        found = services.subaccount_usage(conn, [("acme", "USD"), ("solo", "USD")], now, 30)

    assert found == {
        ("acme", "USD"): (
            SubaccountUsage("acme-us", "Acme US", 5_000),
            SubaccountUsage("acme-eu", "Acme Europe", 3_000),
            SubaccountUsage("acme-jp", "Acme Japan", 0),
        )
    }


# --- in the email ---------------------------------------------------------------------------------------


def test_the_email_shows_messages_left_from_the_configured_price_and_the_ledgers(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(prices__usd__sms="0.0075")
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 100_000, clock() - 40 * DAY)
    used(engine, "acme", 1_400, "voice", 1_000, clock() - DAY)
    set_balance(engine, "acme", "USD", 8_412, clock())

    pipeline.evaluate(clock())

    [sent] = outbox(engine)
    assert "What $84.12 buys at current prices:" in sent.text
    assert "- about 11,216 SMS at $0.0075 each\n" in sent.text
    assert (
        "- about 6,008 voice minutes at $0.014 each "
        "(the price you paid recently: $14.00 for 1,000 voice minutes)"
    ) in sent.text
    html = html_of_last(engine)
    assert "<strong>11,216</strong> SMS" in html
    assert "$0.0075 each" in html


def test_an_email_without_any_price_says_nothing_of_messages_left(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    account(engine, "acme")
    post(engine, "acme", "USD", 100_000, clock() - 40 * DAY)
    used(engine, "acme", 1_400, None, None, clock() - DAY)
    set_balance(engine, "acme", "USD", 8_412, clock())

    pipeline.evaluate(clock())

    [sent] = outbox(engine)
    assert "You used $14.00 over the last 30 days" in sent.text
    assert "buys at current prices" not in sent.text
    assert "buys at current prices" not in html_of_last(engine)


def test_the_email_of_a_main_account_lists_its_subaccounts_usage(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    account(engine, "acme", name="Acme Ltd")
    account(engine, "acme-eu", name="Acme Europe", parent_id="acme")
    post(engine, "acme", "USD", 20_000, clock() - 40 * DAY)
    used(engine, "acme-eu", 11_000, None, None, clock() - DAY)

    pipeline.evaluate(clock())

    [sent] = outbox(engine)
    assert "Usage by subaccount over the last 30 days:\n- Acme Europe (acme-eu): $110.00\n" in sent.text
    assert "Acme Europe" in html_of_last(engine)


def test_balances_that_decide_nothing_never_read_prices_or_subaccounts_from_the_ledger(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline()
    account(engine, "acme")
    account(engine, "acme-eu", parent_id="acme")
    post(engine, "acme", "USD", 100_000, clock() - 40 * DAY)
    used(engine, "acme-eu", 1_400, "sms", 1_000, clock() - DAY)
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        pipeline.evaluate(clock())  # $986.00: above the $100 step
        assert [s for s in statements if PRICES in s or SUBACCOUNTS in s] == []

        set_balance(engine, "acme", "USD", 9_000, clock.advance(minutes=1))
        pipeline.evaluate(clock())
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert (
        len([s for s in statements if PRICES in s]),
        len([s for s in statements if SUBACCOUNTS in s]),
    ) == (1, 1)
    [sent] = outbox(engine)
    assert "- about 6,428 SMS at $0.014 each" in sent.text


# --- the prices section of the configuration ----------------------------------------------------------------


def test_prices_are_read_exactly_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("prices:\n  USD: {sms: 0.0075, voice: '0.013'}\n  INR:\n    sms: 0.25\n")

    settings = load_settings(path, {"BALANCEWATCH_PRICES__EUR__SMS": "0.0068"}, ())
    from_env = load_settings(None, {"BALANCEWATCH_PRICES__EUR__SMS": "0.0068"}, ())

    assert settings.prices == {
        "USD": {"sms": Decimal("0.0075"), "voice": Decimal("0.013")},
        "INR": {"sms": Decimal("0.25")},
        "EUR": {"sms": Decimal("0.0068")},  # the environment adds to the file
    }
    assert from_env.prices == {"EUR": {"sms": Decimal("0.0068")}}


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("USD: {sms: -1}", "prices.USD.sms: -1 is not a price; a unit price is above zero, e.g. 0.0075"),
        ("USD: {sms: cheap}", "prices.USD.sms: 'cheap' is not a price; write it exactly, e.g. 0.0075"),
        (
            "USD: {sms: 0.0000000000001}",
            "prices.USD.sms: 0.0000000000001: a unit price has at most 12 decimals",
        ),
        ("DOLLARS: {sms: 1}", "prices.DOLLARS: 'DOLLARS' is not an ISO 4217 currency code"),
    ],
)
def test_a_bad_price_is_refused_with_its_file_line_and_field(
    tmp_path: Path, written: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"log: {{level: info}}\nprices:\n  {written}\n")

    with pytest.raises(ProblemsError) as caught:
        load_settings(path, {}, ())

    [problem] = caught.value.problems
    assert str(problem).startswith(f"{path}:3: ")
    assert message in str(problem)
