"""Average daily usage and the steps that follow it, through the real pipeline on SQLite and PostgreSQL.

The ledger is written as a billing system would; ``usage.figures`` shows the
arithmetic, ``usage_summary`` is what evaluation reads, and the outbox what was
decided. Usage summaries refresh at every evaluation here (``usage.refresh``
1ms), so a step's amount is always the one the ledger gives now. Amounts are
in minor units (cents, paise).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from balancewatch.config import Settings
from balancewatch.evaluate import usage
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store import ledger
from balancewatch.store.tables import UsageSummary
from tests.conftest import Clock
from tests.helpers import account, outbox, post, set_balance, states

DAY = timedelta(days=1)
MIN_HISTORY = timedelta(days=3)
SUMMARY = UsageSummary.__table__  # type: ignore[attr-defined]
MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet]
) -> MakePipeline:
    """A pipeline over the test database running ``rules``; usage figures refreshed at every evaluation."""

    def make(rules: str, **env: str) -> Pipeline:
        settings = make_settings(db_url, usage__refresh="1ms", **env)
        return build_pipeline(engine, settings, live_from(rules))

    return make


def entry(
    engine: Engine, account_id: str, amount: int, kind: str, at: datetime, currency: str = "USD"
) -> None:
    """One ledger entry of any kind, posted at ``at``."""
    with Session(engine) as s:
        ledger.post(s, account_id, currency, amount, kind, occurred_at=at, now=at)
        s.commit()


def opened(engine: Engine, clock: Clock, account_id: str, days_ago: int, amount: int = 100_000) -> None:
    """An account whose first ledger entry, a top-up of ``amount``, was ``days_ago`` days ago."""
    account(engine, account_id)
    post(engine, account_id, "USD", amount, clock() - days_ago * DAY)


def daily(
    engine: Engine, account_id: str, per_day: int, days: int, until: datetime, currency: str = "USD"
) -> None:
    """``per_day`` of usage once a day for ``days`` days, the last one an hour before ``until``."""
    with Session(engine) as s:
        for n in range(days, 0, -1):
            at = until - (n - 1) * DAY - timedelta(hours=1)
            ledger.post(s, account_id, currency, -per_day, "usage", occurred_at=at, now=at)
        s.commit()


def figures(engine: Engine, account_id: str, now: datetime, window: int = 30) -> usage.Figures:
    with engine.connect() as conn:
        return usage.figures(conn, account_id, "USD", now, window, MIN_HISTORY)


def summary(engine: Engine, account_id: str, currency: str = "USD") -> dict[int, tuple[int | None, str]]:
    """Stored (adu, status) of one balance, by window."""
    c = SUMMARY.c
    query = select(SUMMARY).where(c.account_id == account_id, c.currency == currency)
    with engine.connect() as conn:
        return {r.window_days: (r.adu, r.status) for r in conn.execute(query)}


def alerts(engine: Engine, account_id: str | None = None) -> list[tuple[str, str, int]]:
    """(rule, currency, step) of every notification decided, in order."""
    return [(s.rule_id, s.currency, s.step) for s in outbox(engine, account_id)]


# --- the arithmetic ------------------------------------------------------------------------------


def test_adu_counts_usage_debits_only_never_top_ups_refunds_or_adjustments(
    engine: Engine, clock: Clock
) -> None:
    opened(engine, clock, "acme", days_ago=40)
    now = clock()
    entry(engine, "acme", -1_000, "usage", now - 20 * DAY)
    entry(engine, "acme", -2_000, "usage", now - 5 * DAY)
    entry(engine, "acme", 500, "refund", now - 4 * DAY)
    entry(engine, "acme", -700, "adjustment", now - 3 * DAY)
    entry(engine, "acme", 5_000, "top-up", now - 2 * DAY)

    f = figures(engine, "acme", now)

    assert (f.usage_total, f.days_counted, f.adu, f.status) == (3_000, Decimal(30), 100, usage.OK)


def test_usage_before_the_window_does_not_count_and_the_window_is_configurable(
    engine: Engine, clock: Clock
) -> None:
    opened(engine, clock, "acme", days_ago=60)
    now = clock()
    entry(engine, "acme", -9_000, "usage", now - 31 * DAY)
    entry(engine, "acme", -1_000, "usage", now - 20 * DAY)
    entry(engine, "acme", -2_000, "usage", now - 5 * DAY)

    assert figures(engine, "acme", now).adu == 100  # 3,000 over 30 days
    assert figures(engine, "acme", now, window=7).adu == 286  # 2,000 over 7 days, rounded half up


def test_days_before_the_first_entry_do_not_count(engine: Engine, clock: Clock) -> None:
    opened(engine, clock, "acme", days_ago=10)
    entry(engine, "acme", -1_500, "usage", clock() - 2 * DAY)

    f = figures(engine, "acme", clock())

    assert (f.days_counted, f.adu) == (Decimal(10), 150)  # 1,500 over 10 days, not over 30


def test_less_history_than_the_minimum_is_short_history_and_no_adu_at_all(
    engine: Engine, clock: Clock
) -> None:
    opened(engine, clock, "acme", days_ago=2)
    entry(engine, "acme", -5_000, "usage", clock() - DAY)

    f = figures(engine, "acme", clock())

    assert (f.adu, f.status, f.usage_total) == (None, usage.SHORT, 5_000)


def test_an_account_without_usage_has_no_adu(engine: Engine, clock: Clock) -> None:
    opened(engine, clock, "acme", days_ago=40)
    entry(engine, "acme", 2_000, "top-up", clock() - DAY)

    assert (figures(engine, "acme", clock()).adu, figures(engine, "acme", clock()).status) == (
        None,
        usage.NONE,
    )


def test_refresh_writes_the_figures_of_every_paying_account_with_one_grouped_query(
    engine: Engine, clock: Clock
) -> None:
    opened(engine, clock, "acme", days_ago=40)
    opened(engine, clock, "globex", days_ago=1)
    opened(engine, clock, "initech", days_ago=40)
    entry(engine, "acme", -3_000, "usage", clock() - DAY)
    entry(engine, "globex", -3_000, "usage", clock() - timedelta(hours=1))

    with engine.begin() as conn:
        written = usage.refresh(conn, clock(), [30, 7], MIN_HISTORY)

    assert written == 6
    assert summary(engine, "acme") == {30: (100, "ok"), 7: (429, "ok")}
    assert summary(engine, "globex") == {30: (None, "short-history"), 7: (None, "short-history")}
    assert summary(engine, "initech") == {30: (None, "no-usage"), 7: (None, "no-usage")}


def test_a_minimum_history_shorter_than_the_days_counted_can_hold_is_short_history_not_a_crash() -> None:
    now = datetime(2026, 3, 1, 9, tzinfo=UTC)
    one_minute_old = now - timedelta(minutes=1)  # 0.0007 days: counted as 0.00

    f = usage.figures_of("acme", "USD", 30, 500, one_minute_old, now, timedelta(seconds=1))

    assert (f.days_counted, f.adu, f.status) == (Decimal(0), None, usage.SHORT)


# --- steps that follow usage ------------------------------------------------------------------------

USAGE_STEP = """
alerts:
  - id: usage
    accounts: {currency: USD}
    below: [{average-daily-usage: {days: 14, times: 2}}]
"""


def test_a_usage_step_fires_at_its_multiple_of_the_adu_and_not_a_cent_above(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(USAGE_STEP)
    opened(engine, clock, "acme", days_ago=20, amount=100_000)
    daily(engine, "acme", 500, days=14, until=clock())  # 5.00 a day: 2 x ADU over 14 days is 10.00
    set_balance(engine, "acme", "USD", 1_001, clock())
    pipeline.evaluate(clock())
    assert alerts(engine) == []

    set_balance(engine, "acme", "USD", 1_000, clock.advance(minutes=5))
    pipeline.evaluate(clock())

    assert alerts(engine) == [("usage", "USD", 1_000)]
    [sent] = outbox(engine)
    assert sent.idem_key == "alert/usage/acme/USD/-1/1/0"  # kept under the step's place, not its amount
    assert summary(engine, "acme")[14] == (500, "ok")


def test_runway_fires_when_fewer_than_n_days_of_usage_are_left(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        "alerts:\n  - id: runway\n    accounts: {currency: USD}\n    below: {runway: 3d}\n"
    )
    opened(engine, clock, "acme", days_ago=30)
    daily(engine, "acme", 1_000, days=30, until=clock())  # 10.00 a day: three days is 30.00
    set_balance(engine, "acme", "USD", 3_001, clock())
    pipeline.evaluate(clock())
    assert alerts(engine) == []

    set_balance(engine, "acme", "USD", 2_999, clock.advance(minutes=5))
    pipeline.evaluate(clock())

    assert alerts(engine) == [("runway", "USD", 3_000)]


def test_a_usage_step_follows_usage_as_it_grows(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        "alerts:\n  - id: adu\n    accounts: {currency: USD}\n    below: average-daily-usage\n"
    )
    opened(engine, clock, "acme", days_ago=30)
    daily(engine, "acme", 1_000, days=30, until=clock())  # ADU 10.00
    set_balance(engine, "acme", "USD", 1_500, clock())
    pipeline.evaluate(clock())
    assert alerts(engine) == []

    entry(engine, "acme", -30_000, "usage", clock.advance(minutes=5))  # a busy day: ADU 20.00
    set_balance(engine, "acme", "USD", 1_500, clock())
    pipeline.evaluate(clock())

    assert alerts(engine) == [("adu", "USD", 2_000)]


def test_a_new_account_gets_usage_alerts_once_it_has_three_days_of_history(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(
        "alerts:\n  - id: adu\n    accounts: {currency: USD}\n    below: average-daily-usage\n"
    )
    opened(engine, clock, "fresh", days_ago=0, amount=10_000)
    entry(engine, "fresh", -6_000, "usage", clock.advance(hours=1))  # 40.00 left, 60.00 used
    pipeline.evaluate(clock())
    pipeline.evaluate(clock.advance(days=2, hours=22))  # 2 days 23 hours of history: still too short
    assert alerts(engine) == []
    assert summary(engine, "fresh")[30] == (None, "short-history")

    pipeline.evaluate(clock.advance(hours=1))  # three days: ADU 60.00 / 3 = 20.00

    assert summary(engine, "fresh")[30] == (2_000, "ok")
    assert alerts(engine) == []  # 40.00 is above one day of usage
    set_balance(engine, "fresh", "USD", 1_900, clock.advance(minutes=5))
    pipeline.evaluate(clock())
    assert alerts(engine) == [("adu", "USD", 2_000)]


def test_an_account_without_usage_gets_no_usage_alert_even_at_a_low_balance(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    rules = "alerts:\n  - id: adu\n    accounts: {currency: USD}\n    below: [average-daily-usage, 10]\n"
    pipeline = make_pipeline(rules)
    opened(engine, clock, "idle", days_ago=40, amount=500)

    pipeline.evaluate(clock())

    assert alerts(engine) == [("adu", "USD", 1_000)]  # the fixed step only
    assert summary(engine, "idle")[30] == (None, "no-usage")
    assert set(states(engine, "adu", "idle")) == {1_000}


# --- subaccounts --------------------------------------------------------------------------------------

FAMILY = """
alerts:
  - id: adu
    accounts: {currency: USD}
    below: [average-daily-usage]
    notify: [owner, subaccount-owners]
"""


def family(engine: Engine, clock: Clock) -> None:
    """acme (a main account opened 30 days ago) with two subaccounts, all using its balance."""
    opened(engine, clock, "acme", days_ago=30)
    account(engine, "acme-eu", parent_id="acme")
    account(engine, "acme-us", parent_id="acme")
    daily(engine, "acme", 200, days=30, until=clock())
    daily(engine, "acme-eu", 300, days=30, until=clock())
    daily(engine, "acme-us", 500, days=30, until=clock())


def test_subaccount_usage_rolls_up_into_the_main_accounts_adu(engine: Engine, clock: Clock) -> None:
    family(engine, clock)

    assert figures(engine, "acme", clock()).adu == 1_000  # 2.00 + 3.00 + 5.00 a day
    with engine.begin() as conn:
        usage.refresh(conn, clock(), [30], MIN_HISTORY)
    assert summary(engine, "acme") == {30: (1_000, "ok")}
    assert summary(engine, "acme-eu") == {}  # a subaccount has no balance, hence no ADU of its own


def test_the_main_balance_is_evaluated_and_its_owner_and_the_subaccount_owners_are_told(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(FAMILY)
    family(engine, clock)
    set_balance(engine, "acme", "USD", 1_100, clock())
    pipeline.evaluate(clock())
    assert alerts(engine) == []

    entry(engine, "acme-eu", -200, "usage", clock.advance(minutes=5))  # 9.00 left; ADU 10.07
    pipeline.evaluate(clock())

    [sent] = outbox(engine)
    assert (sent.account_id, sent.step) == ("acme", 1_007)
    assert set(sent.recipients) == {"acme@owner.example", "acme-eu@owner.example", "acme-us@owner.example"}


# --- several currencies --------------------------------------------------------------------------------

CURRENCIES = """
alerts:
  - id: ladder
    below:
      USD: [100, average-daily-usage]
      INR: [8000, average-daily-usage]
"""


def test_each_currency_of_an_account_alerts_on_its_own_with_its_own_thresholds(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(CURRENCIES)
    opened(engine, clock, "globex", days_ago=30, amount=50_000)
    post(engine, "globex", "INR", 2_000_000, clock() - 30 * DAY)
    daily(engine, "globex", 1_000, days=30, until=clock())  # USD: 10.00 a day
    daily(engine, "globex", 50_000, days=30, until=clock(), currency="INR")  # INR: ₹500.00 a day
    set_balance(engine, "globex", "USD", 20_000, clock())
    set_balance(engine, "globex", "INR", 1_000_000, clock())
    pipeline.evaluate(clock())
    assert alerts(engine) == []

    set_balance(engine, "globex", "INR", 700_000, clock.advance(minutes=5))  # ₹7,000: below ₹8,000
    pipeline.evaluate(clock())
    assert alerts(engine) == [("ladder", "INR", 800_000)]

    set_balance(engine, "globex", "USD", 900, clock.advance(minutes=5))  # $9: below $100 and $10 ADU
    pipeline.evaluate(clock())
    assert alerts(engine)[1:] == [("ladder", "USD", 1_000)]

    set_balance(engine, "globex", "INR", 49_000, clock.advance(minutes=5))  # ₹490: below ₹500 ADU
    pipeline.evaluate(clock())
    assert alerts(engine)[2:] == [("ladder", "INR", 50_000)]
    assert "₹490.00" in outbox(engine)[-1].subject


# --- restored -----------------------------------------------------------------------------------------

RESTORED = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [100, average-daily-usage]
    restored: true
"""


def test_one_restored_notice_when_credit_lifts_the_balance_above_every_fired_step(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(RESTORED)
    opened(engine, clock, "acme", days_ago=30)
    daily(engine, "acme", 1_000, days=30, until=clock())  # ADU 10.00
    set_balance(engine, "acme", "USD", 500, clock())
    pipeline.evaluate(clock())
    assert alerts(engine) == [("ladder", "USD", 1_000)]  # one email for both steps, the lowest

    entry(engine, "acme", 10_000, "top-up", clock.advance(minutes=5))  # 105.00: above 100, not 110
    pipeline.evaluate(clock())
    assert [s.kind for s in outbox(engine)] == ["alert"]

    entry(engine, "acme", 1_000, "top-up", clock.advance(minutes=5))  # 115.00: above every re-arm point
    pipeline.evaluate(clock())
    entry(engine, "acme", 1_000, "top-up", clock.advance(minutes=5))
    pipeline.evaluate(clock())

    # The usage step re-armed at 105.00 already; the notice is about the last step to re-arm.
    assert [(s.kind, s.step) for s in outbox(engine)] == [("alert", 1_000), ("restored", 10_000)]
    restored = outbox(engine)[-1]
    assert restored.idem_key == "alert/ladder/acme/USD/10000/1/restored"
    assert "$115.00" in restored.subject
    # It names the credit: both top-ups since the alert, the second one after them not yet posted.
    assert "2 credits of $110.00 in all arrived" in restored.text
    assert "we wrote about on Mar 1, 2026, 9:00:00" in restored.text  # the alert's time, not now
    assert restored.text.count("top-up") == 2
