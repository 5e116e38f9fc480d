"""``usage.refresh`` against the ADU definition, on SQLite and PostgreSQL.

The ledger is written straight into ``ledger_entry`` (as a billing system
would), so entries can sit exactly where the definition draws its lines: the
window's start, ``now``, the minimum history. Every summary row is also
checked against ``usage.figures`` (the same arithmetic, one account at a time)
and, for a seeded random ledger, against a plain Python reading of the
definition. Amounts are in minor units.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, insert, select, update

from balancewatch.evaluate import usage
from balancewatch.store.tables import Account, Balance, LedgerEntry, UsageSummary
from tests.conftest import T0
from tests.helpers import account

DAY = timedelta(days=1)
MIN_HISTORY = timedelta(days=3)
NOW = T0 + 100 * DAY
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
SUMMARY = UsageSummary.__table__  # type: ignore[attr-defined]
ACCOUNT = Account.__table__  # type: ignore[attr-defined]
BALANCE = Balance.__table__  # type: ignore[attr-defined]

Entry = tuple[str, str, int, str, datetime]  # account, currency, amount, kind, occurred_at


def write(engine: Engine, entries: Iterable[Entry]) -> None:
    """Insert ledger rows as they are, without moving any balance."""
    rows = [
        {"account_id": a, "currency": c, "amount": amount, "kind": kind, "occurred_at": at}
        for a, c, amount, kind, at in entries
    ]
    with engine.begin() as conn:
        conn.execute(insert(LEDGER), rows)


def balances(engine: Engine, keys: Iterable[tuple[str, str]]) -> None:
    """Give each (account, currency) a balance row, as the billing system keeping the ledger does."""
    with engine.begin() as conn:
        conn.execute(
            insert(BALANCE),
            [{"account_id": a, "currency": c, "amount": 0, "updated_at": NOW} for a, c in keys],
        )


def refresh(engine: Engine, now: datetime = NOW, windows: Iterable[int] = (30,)) -> int:
    with engine.begin() as conn:
        return usage.refresh(conn, now, windows, MIN_HISTORY)


def summary(engine: Engine) -> dict[tuple[str, str, int], usage.Figures]:
    """Every stored row, as Figures."""
    with engine.connect() as conn:
        rows = conn.execute(select(SUMMARY)).all()
    return {
        (r.account_id, r.currency, r.window_days): usage.Figures(
            r.account_id,
            r.currency,
            r.window_days,
            r.usage_total,
            Decimal(str(r.days_counted)).quantize(Decimal("0.01")),
            r.first_at,
            r.adu,
            r.status,
        )
        for r in rows
    }


def one(engine: Engine, payer: str, currency: str = "USD", window: int = 30) -> usage.Figures:
    """The stored row of one balance, checked against ``usage.figures`` computed from the ledger."""
    stored = summary(engine)[(payer, currency, window)]
    with engine.connect() as conn:
        assert usage.figures(conn, payer, currency, NOW, window, MIN_HISTORY) == stored
    return stored


def test_only_usage_debits_count_never_top_ups_refunds_or_adjustments(engine: Engine) -> None:
    account(engine, "acme")
    write(
        engine,
        [
            ("acme", "USD", 50_000, "top-up", NOW - 40 * DAY),
            ("acme", "USD", -1_000, "usage", NOW - 20 * DAY),
            ("acme", "USD", -2_000, "usage", NOW - 5 * DAY),
            ("acme", "USD", 500, "refund", NOW - 4 * DAY),
            ("acme", "USD", -700, "adjustment", NOW - 3 * DAY),
            ("acme", "USD", 5_000, "top-up", NOW - 2 * DAY),
        ],
    )

    assert refresh(engine) == 1
    f = one(engine, "acme")

    assert (f.usage_total, f.days_counted, f.adu, f.status) == (3_000, Decimal(30), 100, usage.OK)
    assert f.first_at == NOW - 40 * DAY


def test_days_before_the_first_entry_do_not_count_whatever_its_kind(engine: Engine) -> None:
    account(engine, "acme")
    account(engine, "globex")
    write(
        engine,
        [
            ("acme", "USD", 10_000, "top-up", NOW - 10 * DAY),  # the first entry is a top-up
            ("acme", "USD", -1_500, "usage", NOW - 2 * DAY),
            ("globex", "USD", -1_000, "usage", NOW - 5 * DAY),  # ... or usage
        ],
    )

    refresh(engine)

    acme, globex = one(engine, "acme"), one(engine, "globex")
    assert (acme.first_at, acme.days_counted, acme.adu) == (NOW - 10 * DAY, Decimal(10), 150)
    assert (globex.first_at, globex.days_counted, globex.adu) == (NOW - 5 * DAY, Decimal(5), 200)


def test_history_shorter_than_the_minimum_gives_no_adu_and_the_minimum_itself_does(
    engine: Engine,
) -> None:
    account(engine, "young")
    account(engine, "exactly")
    write(
        engine,
        [
            ("young", "USD", -5_000, "usage", NOW - MIN_HISTORY + timedelta(seconds=1)),
            ("exactly", "USD", -6_000, "usage", NOW - MIN_HISTORY),
        ],
    )

    refresh(engine)

    young, exactly = one(engine, "young"), one(engine, "exactly")
    assert (young.adu, young.status, young.usage_total) == (None, usage.SHORT, 5_000)
    assert (exactly.adu, exactly.status, exactly.days_counted) == (2_000, usage.OK, Decimal(3))


def test_a_balance_whose_entries_are_all_older_than_the_window_has_a_no_usage_row(engine: Engine) -> None:
    account(engine, "initech")
    balances(engine, [("initech", "USD")])
    write(
        engine,
        [
            ("initech", "USD", 2_000, "top-up", NOW - 50 * DAY),
            ("initech", "USD", -900, "usage", NOW - 31 * DAY),
        ],
    )

    refresh(engine)

    f = one(engine, "initech")
    assert (f.adu, f.status, f.usage_total, f.days_counted) == (None, usage.NONE, 0, Decimal(30))
    assert f.first_at == NOW - 50 * DAY


def test_an_entry_exactly_at_the_window_start_counts_and_one_a_moment_before_does_not(
    engine: Engine,
) -> None:
    account(engine, "acme")
    start = NOW - 30 * DAY
    write(
        engine,
        [
            ("acme", "USD", -7_000, "usage", start - timedelta(microseconds=1)),
            ("acme", "USD", -3_000, "usage", start),
            ("acme", "USD", -6_000, "usage", NOW),  # now itself is inside the window
            ("acme", "USD", -8_000, "usage", NOW + timedelta(microseconds=1)),  # not yet
        ],
    )

    refresh(engine)

    f = one(engine, "acme")
    assert (f.usage_total, f.days_counted, f.adu) == (9_000, Decimal(30), 300)
    assert f.first_at == start - timedelta(microseconds=1)


def test_entries_after_now_are_not_history_yet(engine: Engine) -> None:
    account(engine, "acme")
    account(engine, "later")
    write(
        engine,
        [
            ("acme", "USD", -1_000, "usage", NOW - 5 * DAY),
            ("acme", "USD", 50_000, "top-up", NOW + DAY),
            ("later", "USD", -1_000, "usage", NOW + DAY),  # nothing yet: no row
        ],
    )

    assert refresh(engine) == 1
    assert one(engine, "acme").first_at == NOW - 5 * DAY


def test_subaccounts_roll_up_into_their_main_account_with_the_familys_first_entry(engine: Engine) -> None:
    account(engine, "acme")
    account(engine, "acme-eu", parent_id="acme")
    account(engine, "acme-us", parent_id="acme")
    write(
        engine,
        [
            ("acme", "USD", 10_000, "top-up", NOW - 6 * DAY),
            ("acme", "USD", -600, "usage", NOW - DAY),
            ("acme-eu", "USD", -1_200, "usage", NOW - 12 * DAY),  # the family's first entry
            ("acme-us", "USD", -1_800, "usage", NOW - 2 * DAY),
            ("acme-us", "USD", 400, "refund", NOW - DAY),
        ],
    )

    assert refresh(engine) == 1

    f = one(engine, "acme")
    assert (f.usage_total, f.first_at, f.days_counted, f.adu) == (3_600, NOW - 12 * DAY, Decimal(12), 300)
    assert set(summary(engine)) == {("acme", "USD", 30)}  # a subaccount has no ADU of its own


def test_each_currency_and_each_window_is_its_own_row(engine: Engine) -> None:
    account(engine, "acme")
    write(
        engine,
        [
            ("acme", "USD", 9_000, "top-up", NOW - 35 * DAY),
            ("acme", "USD", -3_000, "usage", NOW - 20 * DAY),
            ("acme", "USD", -700, "usage", NOW - 3 * DAY),
            ("acme", "EUR", -1_000, "usage", NOW - 40 * DAY),
            ("acme", "EUR", -1_400, "usage", NOW - DAY),
        ],
    )

    assert refresh(engine, windows=[30, 7]) == 4

    assert (one(engine, "acme").adu, one(engine, "acme", window=7).adu) == (123, 100)
    assert (one(engine, "acme", "EUR").adu, one(engine, "acme", "EUR", window=7).adu) == (47, 200)


def test_a_refresh_replaces_the_previous_figures_and_drops_rows_that_no_longer_apply(
    engine: Engine,
) -> None:
    account(engine, "acme")
    account(engine, "globex")
    write(
        engine,
        [
            ("acme", "USD", -3_000, "usage", NOW - 40 * DAY),
            ("acme", "USD", -3_000, "usage", NOW - 10 * DAY),
            ("globex", "USD", -3_000, "usage", NOW - 10 * DAY),
        ],
    )
    refresh(engine, NOW - 12 * DAY)
    refresh(engine, NOW - DAY)
    with engine.begin() as conn:  # globex becomes a subaccount: its usage is acme's now
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.id == "globex").values(parent_id="acme"))

    assert refresh(engine) == 1

    assert set(summary(engine)) == {("acme", "USD", 30)}
    f = one(engine, "acme")
    assert (f.usage_total, f.adu) == (6_000, 200)
    with engine.connect() as conn:
        assert conn.execute(select(SUMMARY.c.computed_at)).scalar_one() == NOW


def test_the_summary_matches_the_definition_for_a_random_ledger(engine: Engine) -> None:
    """A seeded ledger of every kind, subaccounts and two currencies, against a plain reading."""
    rng = random.Random(7)
    parents: dict[str, str | None] = {}
    for i in range(40):
        mains = [a for a, p in parents.items() if p is None]
        parent = rng.choice(mains) if mains and rng.random() < 0.25 else None
        parents[f"a{i:02d}"] = parent
        account(engine, f"a{i:02d}", parent_id=parent)
    entries: list[Entry] = []
    for aid in parents:
        history = rng.choice([60, 60, 20, 2])  # days; some accounts are too young for an ADU
        for _ in range(rng.randint(0, 12)):
            kind = rng.choice(["usage", "usage", "usage", "top-up", "refund", "adjustment"])
            amount = rng.randint(1, 5_000) * (1 if kind in ("top-up", "refund") else -1)
            at = NOW - timedelta(seconds=rng.randint(-86_400, history * 86_400))
            if rng.random() < 0.05:
                at = NOW - rng.choice([30, 7]) * DAY  # on a window's start
            entries.append((aid, rng.choice(["USD", "USD", "EUR"]), amount, kind, at))
    write(engine, entries)
    # Most paying accounts hold a balance in the currencies they use; the rest
    # get a row only for usage in the window.
    held = sorted({(parents[a] or a, c) for a, c, *_ in entries})
    balances(engine, held[::3] + held[1::3])

    refresh(engine, windows=[30, 7])

    held_set = set(held[::3] + held[1::3])
    expected: dict[tuple[str, str, int], usage.Figures] = {}
    for window in (30, 7):
        start = NOW - window * DAY
        first: dict[tuple[str, str], datetime] = {}
        used: dict[tuple[str, str], int] = {}
        for aid, currency, amount, kind, at in entries:
            if at > NOW:
                continue
            key = (parents[aid] or aid, currency)
            first[key] = min(first.get(key, at), at)
            if kind == "usage" and at >= start:
                used[key] = used.get(key, 0) - amount
        # A row for every balance (one with no entry yet has no first entry) and
        # for every paying account with usage in the window.
        for payer, currency in held_set | set(used):
            expected[(payer, currency, window)] = usage.figures_of(
                payer,
                currency,
                window,
                used.get((payer, currency), 0),
                first.get((payer, currency)),
                NOW,
                MIN_HISTORY,
            )
    assert summary(engine) == expected
    statuses = {f.status for f in expected.values()}
    assert statuses == {usage.OK, usage.SHORT, usage.NONE}  # the seed exercises every case
    for payer, currency, window in expected:
        one(engine, payer, currency, window)
