"""Usage brought up to date from new ledger entries equals a full refresh, exactly.

Random ledgers on SQLite and PostgreSQL: accounts with subaccounts, two
currencies, two windows; between refreshes new entries arrive dated now,
back-dated into the window, back-dated before it, dated in the future; top-ups
and refunds; new subaccounts and new balances. After each refresh from changes
every summary row equals what a full refresh computes at the same moment (run
in a transaction that is rolled back).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, update

from balancewatch.evaluate import usage, usage_delta
from balancewatch.store.db import upgrade
from balancewatch.store.tables import ACCOUNT_TABLE, BALANCE_TABLE, LEDGER_TABLE, USAGE_SUMMARY_TABLE
from tests.conftest import T0, postgres_engine

DAY = timedelta(days=1)
MIN_HISTORY = timedelta(days=3)
WINDOWS = {7, 30}
FULL_EVERY = timedelta(days=365)
START = T0 + 60 * DAY

Row = tuple[object, ...]


def summary(engine: Engine) -> dict[tuple[str, str, int], Row]:
    with engine.connect() as conn:
        rows = conn.execute(select(USAGE_SUMMARY_TABLE)).all()
    return {
        (r.account_id, r.currency, r.window_days): (
            r.usage_total,
            r.first_at,
            r.days_counted,
            r.adu,
            r.status,
        )
        for r in rows
    }


def full_refresh_of(engine: Engine, now: datetime) -> dict[tuple[str, str, int], Row]:
    """What a full refresh writes at ``now``, without keeping it."""
    with engine.connect() as conn:
        transaction = conn.begin()
        usage.refresh(conn, now, WINDOWS, MIN_HISTORY)
        rows = conn.execute(select(USAGE_SUMMARY_TABLE)).all()
        transaction.rollback()
    return {
        (r.account_id, r.currency, r.window_days): (
            r.usage_total,
            r.first_at,
            r.days_counted,
            r.adu,
            r.status,
        )
        for r in rows
    }


def catch_up(engine: Engine, now: datetime) -> usage_delta.CaughtUp:
    return usage_delta.catch_up(engine, now, WINDOWS, MIN_HISTORY, FULL_EVERY)


class Platform:
    """A billing system writing accounts, balances and ledger entries at random."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine, self.rng = engine, random.Random(seed)
        self.accounts: list[str] = []
        self.balances: set[tuple[str, str]] = set()

    def add_account(self, now: datetime) -> str:
        name = f"acct-{len(self.accounts):03d}"
        parent = self.rng.choice(self.accounts) if self.accounts and self.rng.random() < 0.3 else None
        with self.engine.begin() as conn:
            parent_id = None
            if parent is not None:
                row = conn.execute(
                    select(ACCOUNT_TABLE.c.parent_id).where(ACCOUNT_TABLE.c.id == parent)
                ).one()
                parent_id = parent if row.parent_id is None else row.parent_id
            conn.execute(
                insert(ACCOUNT_TABLE).values(
                    id=name, name=name, owner_email=f"{name}@example.com", parent_id=parent_id, labels=[]
                )
            )
            if parent_id is None and self.rng.random() < 0.8:
                self._balance(conn, name, self.rng.choice(["USD", "EUR"]), now)
        self.accounts.append(name)
        return name

    def _balance(self, conn: object, account_id: str, currency: str, now: datetime) -> None:
        if (account_id, currency) in self.balances:
            return
        self.balances.add((account_id, currency))
        conn.execute(  # type: ignore[attr-defined]
            insert(BALANCE_TABLE).values(account_id=account_id, currency=currency, amount=0, updated_at=now)
        )

    def entries(self, count: int, now: datetime, since: datetime) -> None:
        """``count`` entries at random times: mostly since ``since``, some back-dated or ahead."""
        rows = []
        for _ in range(count):
            pick = self.rng.random()
            if pick < 0.6:
                at = since + (now - since) * self.rng.random()
            elif pick < 0.8:
                at = now - 35 * DAY * self.rng.random()  # back-dated, inside or before a window
            elif pick < 0.9:
                at = now - 90 * DAY * self.rng.random()
            else:
                at = now + 2 * DAY * self.rng.random()  # future-dated: counts when its time comes
            kind = self.rng.choices(["usage", "top-up", "refund"], [8, 1, 1])[0]
            amount = -self.rng.randint(1, 5000) if kind == "usage" else self.rng.randint(1, 20000)
            if kind == "usage" and self.rng.random() < 0.06:
                amount = self.rng.randint(1, 40000)  # usage reversed: a window's usage may net below zero
            rows.append(
                {
                    "account_id": self.rng.choice(self.accounts),
                    "currency": self.rng.choice(["USD", "USD", "EUR"]),
                    "amount": amount,
                    "kind": kind,
                    "occurred_at": at,
                }
            )
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(LEDGER_TABLE), rows)

    def touch_balances(self, now: datetime, count: int) -> None:
        """Balances the billing system moved (and one new balance)."""
        with self.engine.begin() as conn:
            for account_id, currency in self.rng.sample(
                sorted(self.balances), min(count, len(self.balances))
            ):
                conn.execute(
                    update(BALANCE_TABLE)
                    .where(BALANCE_TABLE.c.account_id == account_id, BALANCE_TABLE.c.currency == currency)
                    .values(amount=self.rng.randint(-100, 100000), updated_at=now)
                )
            self._balance(conn, self.rng.choice(self.accounts), self.rng.choice(["USD", "EUR"]), now)


@pytest.mark.parametrize("seed", range(4))
def test_a_refresh_from_new_entries_equals_a_full_refresh_on_random_ledgers(
    engine: Engine, seed: int
) -> None:
    platform = Platform(engine, seed)
    for _ in range(12):
        platform.add_account(START - 50 * DAY)
    platform.entries(400, START, START - 60 * DAY)
    now = START
    assert catch_up(engine, now).full
    assert summary(engine) == full_refresh_of(engine, now)

    for _ in range(8):
        later = now + timedelta(minutes=platform.rng.randint(1, 3 * 24 * 60))
        if platform.rng.random() < 0.5:
            platform.add_account(later)
        platform.entries(platform.rng.randint(0, 60), later, now)
        platform.touch_balances(later, 3)
        now = later
        caught_up = catch_up(engine, now)
        assert not caught_up.full
        assert summary(engine) == full_refresh_of(engine, now), f"at {now}"


def test_a_refresh_reads_only_what_changed(engine: Engine) -> None:
    platform = Platform(engine, 99)
    for _ in range(30):
        platform.add_account(START - 50 * DAY)
    platform.entries(3000, START, START - 60 * DAY)
    assert catch_up(engine, START).full
    platform.entries(10, START + timedelta(minutes=5), START)
    caught_up = catch_up(engine, START + timedelta(minutes=5))
    assert not caught_up.full
    # 10 new entries, and what the window's start passed in 5 minutes out of 60 days of entries
    assert caught_up.entries < 60
    assert summary(engine) == full_refresh_of(engine, START + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda: (START + 2 * DAY, {7, 30}, 2 * DAY), "the full refresh is due"),
        (lambda: (START + timedelta(hours=1), {30}, FULL_EVERY), "the windows changed"),
        (lambda: (START - timedelta(hours=1), {7, 30}, FULL_EVERY), "the clock went back"),
        (lambda: (START + 8 * DAY, {7, 30}, 100 * DAY), "more than the shortest window passed"),
    ],
)
def test_a_full_refresh_runs_when_reading_changes_would_not_do(
    engine: Engine, change: Callable[[], tuple[datetime, set[int], timedelta]], why: str
) -> None:
    platform = Platform(engine, 5)
    for _ in range(6):
        platform.add_account(START - 50 * DAY)
    platform.entries(100, START, START - 60 * DAY)
    assert usage_delta.catch_up(engine, START, WINDOWS, MIN_HISTORY, 2 * DAY).full
    now, windows, full_every = change()
    assert usage_delta.catch_up(engine, now, windows, MIN_HISTORY, full_every).full, why


@pytest.mark.postgres
def test_an_entry_committed_after_a_later_id_is_counted_when_it_commits(pg_engine: Engine) -> None:
    """PostgreSQL hands out ids before commits: an open transaction's id is below ids already
    read. The refresh between the two commits must not skip it afterwards."""
    engine = pg_engine
    platform = Platform(engine, 7)
    for _ in range(4):
        platform.add_account(START - 50 * DAY)
    platform.entries(50, START, START - 60 * DAY)
    assert catch_up(engine, START).full
    payer = next(a for a, c in sorted(platform.balances) if c == "USD")
    entry = {"account_id": payer, "currency": "USD", "kind": "usage", "occurred_at": START}
    slow = engine.connect()
    slow_transaction = slow.begin()
    slow.execute(insert(LEDGER_TABLE).values(amount=-700, **entry))  # id n, not committed
    with engine.begin() as conn:
        conn.execute(insert(LEDGER_TABLE).values(amount=-300, **entry))  # id n + 1, committed
    now = START + timedelta(minutes=1)
    assert not catch_up(engine, now).full
    assert summary(engine) == full_refresh_of(engine, now)  # the 300 counts, the 700 cannot yet
    slow_transaction.commit()
    slow.close()
    later = now + timedelta(minutes=1)
    assert not catch_up(engine, later).full
    assert summary(engine) == full_refresh_of(engine, later)  # and now the 700 too


@pytest.mark.postgres
def test_instances_refreshing_together_add_each_entry_once(pg_engine: Engine) -> None:
    engine = pg_engine
    platform = Platform(engine, 11)
    for _ in range(10):
        platform.add_account(START - 50 * DAY)
    platform.entries(500, START, START - 60 * DAY)
    assert catch_up(engine, START).full
    platform.entries(200, START + timedelta(minutes=10), START)
    now = START + timedelta(minutes=10)
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            catch_up(engine, now)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=refresh) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert summary(engine) == full_refresh_of(engine, now)


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A PostgreSQL database of its own (these tests are about PostgreSQL's sequences)."""
    for engine in postgres_engine("t_" + uuid.uuid4().hex[:12]):
        upgrade(engine)
        yield engine


def test_a_payer_whose_usage_moves_in_place_gets_a_row_for_its_new_balance(engine: Engine) -> None:
    """Its USD row takes the new usage in place; its new EUR balance still gets its row."""
    platform = Platform(engine, 7)
    with engine.begin() as conn:
        conn.execute(
            insert(ACCOUNT_TABLE).values(id="payer", name="payer", owner_email="p@example.com", labels=[])
        )
        platform._balance(conn, "payer", "USD", START - 50 * DAY)
    usage_at = [START - day * DAY for day in range(1, 45)]
    rows = [
        {"account_id": "payer", "currency": "USD", "amount": -100, "kind": "usage", "occurred_at": at}
        for at in usage_at
    ]
    with engine.begin() as conn:
        conn.execute(insert(LEDGER_TABLE), rows)
    assert catch_up(engine, START).full
    later = START + timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(
            insert(LEDGER_TABLE),
            [
                {
                    "account_id": "payer",
                    "currency": "USD",
                    "amount": -250,
                    "kind": "usage",
                    "occurred_at": later,
                }
            ],
        )
        platform._balance(conn, "payer", "EUR", later)
    assert not catch_up(engine, later).full
    rows_now = summary(engine)
    assert ("payer", "EUR", 30) in rows_now
    assert rows_now == full_refresh_of(engine, later)


def test_the_ids_missing_below_the_last_read_are_the_gaps(engine: Engine) -> None:
    """Holes between ids are gaps; of a hole wider than MAX_GAPS only its top; none past the end."""
    from balancewatch.evaluate.usage_mark import GAP_PATIENCE, MAX_GAPS, gaps_after

    wide_top = 20 + MAX_GAPS + 5
    present = [11, 12, 15, 16, 20, wide_top, wide_top + 2]
    account = Platform(engine, 1).add_account(START)
    row = {"account_id": account, "currency": "USD", "amount": -1, "kind": "usage", "occurred_at": START}
    with engine.begin() as conn:
        conn.execute(insert(LEDGER_TABLE), [{"id": entry_id, **row} for entry_id in present])
    old = START - 2 * GAP_PATIENCE
    with engine.connect() as conn:
        gaps = gaps_after(conn, 10, wide_top + 2, {3: START, 4: old}, START)
        assert gaps_after(conn, 10, 12, {}, START) == {}
    expected = [3, 13, 14, 17, 18, 19, *range(wide_top - MAX_GAPS, wide_top), wide_top + 1]
    assert sorted(gaps) == expected[-MAX_GAPS:]
    assert set(gaps.values()) == {START}
