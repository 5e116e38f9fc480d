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
from balancewatch.store.columns import as_written, utc_from
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    BALANCE_TABLE,
    USAGE_MEMBER_TABLE,
    USAGE_SUMMARY_TABLE,
)

Pair = tuple[str, str]  # (paying account, currency)
Rows = dict[Pair, tuple[int, datetime | None]]  # a pair's summary row: (usage, first entry)


def recompute(
    conn: Connection,
    payers: Collection[str],
    deltas: Deltas,
    now: datetime,
    window: int,
    min_history: timedelta,
) -> set[tuple[str, str]]:
    """Write the summary rows of ``payers`` for ``window`` that ``deltas`` may have moved; delete
    their rows that a full refresh would not write. Returns the (payer, currency) rows written.

    A pair with a row whose usage was and stays above zero takes the row's usage plus what
    ``deltas`` added (a row holds the sum of its members' totals, clamped at zero only when it
    is not above it): the summary row alone is read. Every other payer has each of its rows
    recomputed from ``usage_member`` and its balances (``_from_members``). A pair with a row
    keeps its first entry unless ``deltas`` counted an earlier one of the payer or an account
    whose parent it is; a pair without a row gets it by index seeks (``usage.with_firsts``)."""
    earlier, touched = _earliest_counted(deltas), _touched_pairs(deltas)
    ordered, written = sorted(payers), set[tuple[str, str]]()
    for i in range(0, len(ordered), CHUNK):
        chunk = ordered[i : i + CHUNK]
        existing = _existing(conn, chunk, window)
        moved, rest = _moved(chunk, touched, existing)
        rows = [
            _row(pair, used, _earlier(existing[pair][1], earlier.get(pair)), now, window, min_history)
            for pair, used in sorted(moved.items())
        ]
        usage.write_rows(conn, rows)
        written.update(moved)
        if rest:
            written.update(_from_members(conn, rest, existing, earlier, now, window, min_history))
    return written


def _row(
    pair: tuple[str, str], used: int, first: datetime | None, now: datetime, window: int, minimum: timedelta
) -> dict[str, object]:
    return usage.summary_row(usage.figures_of(pair[0], pair[1], window, used, first, now, minimum), now)


def _touched_pairs(deltas: Deltas) -> dict[str, dict[str, int]]:
    """payer -> currency -> usage ``deltas`` added, for every currency whose entries changed."""
    out: dict[str, dict[str, int]] = {}
    for account, currency in deltas.first:
        out.setdefault(deltas.payer_of.get(account, account), {}).setdefault(currency, 0)
    for (account, currency), (used, _count) in deltas.by_key.items():
        by_currency = out.setdefault(deltas.payer_of.get(account, account), {})
        by_currency[currency] = by_currency.get(currency, 0) + used
    return out


def _existing(conn: Connection, chunk: Sequence[str], window: int) -> Rows:
    """The chunk's summary rows for ``window``: (payer, currency) -> (usage, first entry)."""
    query = select(
        USAGE_SUMMARY_TABLE.c.account_id,
        USAGE_SUMMARY_TABLE.c.currency,
        USAGE_SUMMARY_TABLE.c.usage_total,
        as_written(USAGE_SUMMARY_TABLE.c.first_at),
    ).where(USAGE_SUMMARY_TABLE.c.window_days == window, among(conn, USAGE_SUMMARY_TABLE.c.account_id, chunk))
    return {
        (payer, currency): (total, utc_from(first)) for payer, currency, total, first in conn.execute(query)
    }


def _moved(
    chunk: Sequence[str], touched: dict[str, dict[str, int]], existing: Rows
) -> tuple[dict[Pair, int], list[str]]:
    """The pairs of ``chunk`` whose new usage is their row's plus the deltas, and the payers to
    recompute from their members instead."""
    moved: dict[Pair, int] = {}
    rest: list[str] = []
    for payer in chunk:
        found = _added(payer, touched.get(payer, {}), existing)
        if found is None:
            rest.append(payer)
        else:
            moved.update(found)
    return moved, rest


def _added(payer: str, by_currency: dict[str, int], existing: Rows) -> dict[Pair, int] | None:
    """Each touched pair of ``payer`` -> its row's usage plus what was added, when every one has a
    row whose usage is above zero before and after (no clamping hides a part of it); else None."""
    if not by_currency:
        return None  # touched only by a balance: recomputed from its members
    found: dict[Pair, int] = {}
    for currency, added in by_currency.items():
        row = existing.get((payer, currency))
        if row is None or row[0] <= 0 or row[0] + added <= 0:
            return None
        found[(payer, currency)] = row[0] + added
    return found


def _from_members(
    conn: Connection,
    chunk: Sequence[str],
    existing: Rows,
    earlier: dict[Pair, datetime],
    now: datetime,
    window: int,
    min_history: timedelta,
) -> set[Pair]:
    """Every summary row of ``chunk``'s payers from their members' totals and balances
    (``existing``: their rows as read already); the pairs written (the rows a full refresh
    would not write are deleted)."""
    used_query, balances_query = _member_parts(conn, chunk, window, _family(conn, chunk))
    used = {(r.payer, r.currency): int(r.used or 0) for r in conn.execute(used_query)}
    wanted = used.keys() | {(r.payer, r.currency) for r in conn.execute(balances_query)}
    firsts = {pair: _earlier(existing[pair][1], earlier.get(pair)) for pair in wanted if pair in existing}
    if len(firsts) < len(wanted):
        seek = sorted({payer for payer, currency in wanted if (payer, currency) not in firsts})
        firsts.update(_seeked(conn, seek, now, window))
    rows = [
        _row(pair, used.get(pair, 0), firsts.get(pair), now, window, min_history) for pair in sorted(wanted)
    ]
    usage.write_rows(conn, rows)
    ours = set(chunk)
    _drop_others(conn, {pair for pair in existing if pair[0] in ours} - wanted, window)
    return set(wanted)


def _earlier(first: datetime | None, other: datetime | None) -> datetime | None:
    return other if first is None or (other is not None and other < first) else first


def _earliest_counted(deltas: Deltas) -> dict[tuple[str, str], datetime]:
    """The earliest entry ``deltas`` counted in, per (payer, currency) of the payer itself and
    of the account whose parent it is (the family a first entry is taken over)."""
    parent_of = deltas.payer_of
    out: dict[tuple[str, str], datetime] = {}
    for (account, currency), at in deltas.first.items():
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
