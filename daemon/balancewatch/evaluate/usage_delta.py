"""Average daily usage brought up to date from what changed in the ledger since the last refresh.

A full refresh reads every entry of the window: a minute at tens of millions of
entries. ``catch_up`` reads only what changed:

- the entries written since the last refresh, found by their insertion order
  (the id), whatever their ``occurred_at``: a back-dated entry counts in the
  window it falls in, one dated before it only moves the first entry;
- the entries the window's start has passed since (``occurred_at`` between the
  old start and the new), and future-dated entries whose time has come;

adds them up per account in the database (``usage_change``: no entry crosses
to Python) and to each account's own totals (``usage_member``), then rewrites
the summary rows of the paying accounts they belong to (in place where only the
usage moved), of those whose figures move with time alone (history shorter than
the window or the minimum) and of those with a new balance (it gets its row).
The result equals a full refresh at the same moment
(``tests/test_usage_delta.py`` compares them).

The full refresh (``refresh_all``) is one grouped scan of the window by account,
then every summary row from those totals; ``usage.refresh``, the definition
written as one query, gives the same rows (the tests compare them too).

Ids on PostgreSQL come from a sequence and commit out of order: an id below the
last one read may belong to a transaction still open. Every id missing below
the mark is a gap, read again at each refresh for ``GAP_PATIENCE``; an entry
committed later than that counts from the next full refresh. Each refresh reads
one snapshot (REPEATABLE READ), and instances take turns (an advisory lock),
so no entry is added twice.

A full refresh runs instead the first time, when the windows or the minimum
history change, when the clock went back, after more than the shortest window
or ``full_every`` since the last full one, or when the new entries are more than
a tenth of the window's: it also puts right what reading by id cannot see (an account moved
under another parent, an entry edited or deleted, a balance removed).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, delete, func, select

from balancewatch.evaluate import usage_change
from balancewatch.evaluate.usage_mark import Mark, gaps_after, read_mark, shape_of, still_missing, write_mark
from balancewatch.evaluate.usage_payers import DAY, age_young, payers_with_new_balances
from balancewatch.evaluate.usage_rows import PART, recompute, recompute_all
from balancewatch.store.bulk import insert_rows
from balancewatch.store.tables import LEDGER_TABLE, USAGE_MEMBER_TABLE

# More new entries than this share of the window's (and at least MIN_FOR_FULL): one full pass
# costs less than reading each of them and as many leaving (after an outage, say).
NEW_SHARE_FOR_FULL, MIN_FOR_FULL = 0.1, 200_000
LOCK_KEY = zlib.crc32(b"balancewatch usage refresh")  # pg_advisory_lock: one refresh at a time


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """What a refresh did: ``full`` or from changes; entries read; summary rows written."""

    full: bool
    entries: int
    rows: int


def catch_up(
    engine: Engine, now: datetime, windows: set[int], min_history: timedelta, full_every: timedelta
) -> CaughtUp:
    """Bring ``usage_summary`` (every window of ``windows``) up to ``now``, in one transaction."""
    with _one_at_a_time(engine) as conn:
        mark = read_mark(conn)
        shape = shape_of(windows, min_history)
        if mark is not None and _incremental_fits(conn, mark, now, windows, shape, full_every):
            return _from_changes(conn, mark, now, sorted(windows), min_history)
        return _full(conn, now, sorted(windows), min_history, shape)


def _incremental_fits(
    conn: Connection, mark: Mark, now: datetime, windows: set[int], shape: str, full_every: timedelta
) -> bool:
    if mark.shape != shape or now < mark.marked_at or now - mark.full_at >= full_every:
        return False
    if now - mark.marked_at >= min(windows) * DAY:
        return False
    new = conn.execute(select(func.count()).where(LEDGER_TABLE.c.id > mark.last_entry_id)).scalar_one()
    if new <= MIN_FOR_FULL:
        return True
    in_window = select(func.coalesce(func.sum(USAGE_MEMBER_TABLE.c.entries), 0)).where(
        USAGE_MEMBER_TABLE.c.window_days == min(windows)
    )
    return int(new) <= NEW_SHARE_FOR_FULL * int(conn.execute(in_window).scalar_one())


@contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[Connection]:
    """A transaction on one snapshot, no other instance refreshing meanwhile.

    SQLite: its write lock (the store begins with BEGIN IMMEDIATE). PostgreSQL: a session
    advisory lock taken before the REPEATABLE READ transaction starts, so its snapshot
    already holds what the instance before this one wrote; its commit is asynchronous.
    """
    with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            with conn.begin():
                yield conn
            return
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({LOCK_KEY})")
        conn.commit()
        try:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                # Figures derived from the ledger, with the mark in the same transaction: a crash
                # that lost this commit loses what the next refresh writes again; its commit
                # need not wait for the disk (others see it at once all the same).
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK_KEY})")
            conn.commit()


def _full(
    conn: Connection, now: datetime, windows: list[int], min_history: timedelta, shape: str
) -> CaughtUp:
    rows = sum(refresh_all(conn, now, window, min_history) for window in windows)
    last = conn.execute(select(func.max(LEDGER_TABLE.c.id))).scalar_one() or 0
    gaps = gaps_after(conn, max(0, last - 100_000), last, {}, now)
    write_mark(conn, Mark(now, now, last, shape, gaps))
    return CaughtUp(True, 0, rows)


def refresh_all(conn: Connection, now: datetime, window: int, min_history: timedelta) -> int:
    """Recompute ``window`` from its entries: each account's own totals by one grouped scan of
    the window (run first, before this transaction writes, and fetched: a plain read that
    PostgreSQL may run in parallel), then every summary row from them. Returns the rows written.

    The caller holds the refresh lock (``catch_up``): rows are replaced, not upserted. Rows go
    to Python a part at a time (``PART``), so memory does not grow with the accounts.
    """
    scanned = conn.execute(usage_by_account(now, window))
    conn.execute(delete(USAGE_MEMBER_TABLE).where(USAGE_MEMBER_TABLE.c.window_days == window))
    for part in scanned.partitions(PART):
        members = [
            {
                "account_id": r.account_id,
                "currency": r.currency,
                "window_days": window,
                "used": r.used,
                "entries": r.entries,
            }
            for r in part
        ]
        insert_rows(conn, USAGE_MEMBER_TABLE, members)
    return recompute_all(conn, now, window, min_history)


def usage_by_account(now: datetime, window: int) -> Select[Any]:
    """Each account's own usage (``used``) and number of usage entries in the window: the one
    grouped scan of the ledger a full refresh makes."""
    return (
        select(
            LEDGER_TABLE.c.account_id,
            LEDGER_TABLE.c.currency,
            func.sum(-LEDGER_TABLE.c.amount).label("used"),
            func.count().label("entries"),
        )
        .where(
            LEDGER_TABLE.c.kind == "usage",
            LEDGER_TABLE.c.occurred_at >= now - window * DAY,
            LEDGER_TABLE.c.occurred_at <= now,
        )
        .group_by(LEDGER_TABLE.c.account_id, LEDGER_TABLE.c.currency)
    )


def _from_changes(
    conn: Connection, mark: Mark, now: datetime, windows: list[int], min_history: timedelta
) -> CaughtUp:
    collected = usage_change.collect(
        conn, usage_change.Since(mark.marked_at, mark.last_entry_id, mark.gaps), now, windows
    )
    rows = 0
    for window in windows:
        usage_change.add_to_members(conn, window)
        new_balances = payers_with_new_balances(conn, mark, window, usage_change.accounts_changed(window))
        recomputed, written = recompute(conn, new_balances, now, window, min_history)
        rows += written + age_young(conn, recomputed, mark, now, window, min_history)
    usage_change.drop(conn)
    last = collected.last_entry_id
    gaps = gaps_after(conn, mark.last_entry_id, last, still_missing(conn, mark.gaps), now)
    write_mark(conn, Mark(now, mark.full_at, last, mark.shape, gaps))
    return CaughtUp(False, collected.read, rows)
