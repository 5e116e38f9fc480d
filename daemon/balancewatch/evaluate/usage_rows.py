"""Summary rows recomputed from each account's own totals (``usage_member``).

``recompute`` rewrites the rows of the paying accounts a refresh from changes
touched; ``recompute_all`` every row, after a full refresh rebuilt the totals.
Both give the figures ``usage.refresh`` computes from the ledger.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, delete, func, or_, select, true

from balancewatch.evaluate import usage
from balancewatch.evaluate.usage_payers import CHUNK, Deltas, among
from balancewatch.store.bulk import insert_rows
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    BALANCE_TABLE,
    USAGE_MEMBER_TABLE,
    USAGE_SUMMARY_TABLE,
)


def recompute(
    conn: Connection,
    payers: Collection[str],
    deltas: Deltas,
    now: datetime,
    window: int,
    min_history: timedelta,
) -> int:
    """Write the summary rows of ``payers`` for ``window`` from ``usage_member``; delete
    their rows that a full refresh would not write. Returns the rows written.

    A pair (payer, currency) with a row keeps its first entry unless ``deltas`` counted an
    earlier one of the payer or an account whose parent it is; a pair without a row (a new
    balance, a new currency) gets it by index seeks (``usage.with_firsts``)."""
    ordered, written = sorted(payers), 0
    for i in range(0, len(ordered), CHUNK):
        chunk = ordered[i : i + CHUNK]
        family = _family(conn, chunk)
        used_query, balances_query = _member_parts(conn, chunk, window, family)
        used = {(r.payer, r.currency): int(r.used or 0) for r in conn.execute(used_query)}
        pairs = used.keys() | {(r.payer, r.currency) for r in conn.execute(balances_query)}
        existing = _first_entries(conn, chunk, window)
        earlier = _earliest_counted(deltas, family)
        firsts = {pair: _earlier(existing[pair], earlier.get(pair)) for pair in pairs if pair in existing}
        if len(firsts) < len(pairs):
            seek = sorted({payer for payer, currency in pairs if (payer, currency) not in firsts})
            firsts.update(_seeked(conn, seek, now, window))
        rows = [
            usage.summary_row(
                usage.figures_of(
                    payer,
                    currency,
                    window,
                    used.get((payer, currency), 0),
                    firsts.get((payer, currency)),
                    now,
                    min_history,
                ),
                now,
            )
            for payer, currency in sorted(pairs)
        ]
        usage.write_rows(conn, rows)
        _drop_others(conn, existing.keys() - pairs, window)
        written += len(rows)
    return written


def _earlier(first: datetime | None, other: datetime | None) -> datetime | None:
    return other if first is None or (other is not None and other < first) else first


def _first_entries(
    conn: Connection, chunk: Sequence[str], window: int
) -> dict[tuple[str, str], datetime | None]:
    """The chunk's summary rows for ``window``: (payer, currency) -> its first entry."""
    query = select(
        USAGE_SUMMARY_TABLE.c.account_id, USAGE_SUMMARY_TABLE.c.currency, USAGE_SUMMARY_TABLE.c.first_at
    ).where(USAGE_SUMMARY_TABLE.c.window_days == window, among(conn, USAGE_SUMMARY_TABLE.c.account_id, chunk))
    return {(r.account_id, r.currency): r.first_at for r in conn.execute(query)}


def _earliest_counted(deltas: Deltas, family: Sequence[str]) -> dict[tuple[str, str], datetime]:
    """The earliest entry ``deltas`` counted in, per (payer, currency) of the payer itself and
    of the account whose parent it is (the family a first entry is taken over)."""
    members, parent_of = set(family), deltas.payer_of
    out: dict[tuple[str, str], datetime] = {}
    for (account, currency), at in deltas.first.items():
        if account not in members:
            continue
        for payer in {account, parent_of.get(account, account)}:
            key = (payer, currency)
            if key not in out or at < out[key]:
                out[key] = at
    return out


def _seeked(
    conn: Connection, payers: Sequence[str], now: datetime, window: int
) -> dict[tuple[str, str], datetime | None]:
    """First entries of ``payers``' pairs by index seeks, one per family member."""
    query = usage.with_firsts(*_member_parts(conn, payers, window, _family(conn, payers)), now)
    return {(r.payer, r.currency): r.first_at for r in conn.execute(query)}


def recompute_all(conn: Connection, now: datetime, window: int, min_history: timedelta) -> int:
    """Replace every summary row of ``window`` with one computed from ``usage_member``.

    Delete and insert, not upsert: the caller holds the refresh lock (``usage_delta``), and
    readers keep seeing the old rows until the transaction commits.
    """
    rows = [
        usage.summary_row(
            usage.figures_of(r.payer, r.currency, window, int(r.used or 0), r.first_at, now, min_history), now
        )
        for r in conn.execute(usage.with_firsts(*_member_parts(conn, None, window, None), now))
    ]
    conn.execute(delete(USAGE_SUMMARY_TABLE).where(USAGE_SUMMARY_TABLE.c.window_days == window))
    insert_rows(conn, USAGE_SUMMARY_TABLE, rows)
    return len(rows)


def _family(conn: Connection, payers: Sequence[str]) -> list[str]:
    """``payers`` and the accounts whose parent they are."""
    children = select(ACCOUNT_TABLE.c.id).where(among(conn, ACCOUNT_TABLE.c.parent_id, payers))
    return sorted({*payers, *conn.execute(children).scalars()})


def _member_parts(
    conn: Connection, chunk: Sequence[str] | None, window: int, family: Sequence[str] | None
) -> tuple[Select[Any], Select[Any]]:
    """The members' totals grouped by (payer, currency) for the accounts paid by ``chunk``
    (None: every paying account; pairs with usage entries only), and their balances' pairs.
    ``family`` (``_family`` of the chunk) lets both databases read the members' rows by key
    instead of every row of the window."""
    paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    paid_by_chunk = (
        true()
        if chunk is None
        else or_(
            among(conn, ACCOUNT_TABLE.c.parent_id, chunk),
            # Not ``parent_id IS NULL``: SQLite would read every main account through the
            # parent_id index for it, per chunk; this leaves it the primary key.
            and_(among(conn, ACCOUNT_TABLE.c.id, chunk), paying == ACCOUNT_TABLE.c.id),
        )
    )
    members_of = true() if family is None else among(conn, USAGE_MEMBER_TABLE.c.account_id, family)
    balances_of = true() if family is None else among(conn, BALANCE_TABLE.c.account_id, family)
    used = (
        select(
            paying.label("payer"),
            USAGE_MEMBER_TABLE.c.currency,
            func.sum(USAGE_MEMBER_TABLE.c.used).label("used"),
        )
        .select_from(
            USAGE_MEMBER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == USAGE_MEMBER_TABLE.c.account_id)
        )
        .where(USAGE_MEMBER_TABLE.c.window_days == window, members_of, paid_by_chunk)
        .group_by(paying, USAGE_MEMBER_TABLE.c.currency)
        .having(func.sum(USAGE_MEMBER_TABLE.c.entries) > 0)
    )
    balances = (
        select(paying.label("payer"), BALANCE_TABLE.c.currency)
        .select_from(BALANCE_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == BALANCE_TABLE.c.account_id))
        .where(balances_of, paid_by_chunk)
    )
    return used, balances


def _drop_others(conn: Connection, stale: Collection[tuple[str, str]], window: int) -> None:
    """Delete the summary rows of ``stale`` (account, currency) for ``window``, by key."""
    if stale:
        conn.execute(
            delete(USAGE_SUMMARY_TABLE).where(
                USAGE_SUMMARY_TABLE.c.window_days == window,
                USAGE_SUMMARY_TABLE.c.account_id == bindparam("account"),
                USAGE_SUMMARY_TABLE.c.currency == bindparam("currency"),
            ),
            [{"account": account, "currency": currency} for account, currency in sorted(stale)],
        )
