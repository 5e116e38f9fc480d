"""Summary rows recomputed from each account's own totals (``usage_member``).

``recompute`` rewrites the rows of the paying accounts a refresh from changes
touched; ``recompute_all`` every row, after a full refresh rebuilt the totals.
Both give the figures ``usage.refresh`` computes from the ledger.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)

from balancewatch.evaluate import usage
from balancewatch.evaluate.usage_change import added_by_pair
from balancewatch.evaluate.usage_payers import CHUNK, DAY, among
from balancewatch.store.bulk import insert_rows
from balancewatch.store.columns import as_written, utc_from, utc_of
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    BALANCE_TABLE,
    USAGE_MEMBER_TABLE,
    USAGE_SUMMARY_TABLE,
)

Pair = tuple[str, str]  # (paying account, currency)
PART = 20_000  # rows computed and written at a time by a full refresh
Rows = dict[Pair, tuple[int, datetime | None]]  # a pair's summary row: (usage, first entry)


def recompute(
    conn: Connection, others: Collection[str], now: datetime, window: int, min_history: timedelta
) -> tuple[set[Pair], int]:
    """Write the summary rows for ``window`` that changed entries (``usage_change``) may have
    moved, and every row of the payers ``others`` (a new balance, say); delete their rows that
    a full refresh would not write. Returns the pairs recomputed from the members' totals, and
    how many rows were written in all.

    A row whose usage was and stays above zero, over a history as long as the window and the
    minimum, takes what changed in place, in the database (``_add_in_place``: a row holds the
    sum of its members' totals, clamped at zero only when it is not above it, and its ADU is
    that sum over the window's days). Every other payer has each of its rows recomputed from
    ``usage_member`` and its balances (``_from_members``). A row keeps its first entry unless
    an earlier one of the payer or an account whose parent it is was counted in; a pair
    without a row gets it by index seeks (``usage.with_firsts``)."""
    not_added, added = _add_in_place(conn, now, window, min_history)
    rest = sorted({*others, *(payer for payer, _currency, _first in not_added)})
    earliest = {(payer, currency): first for payer, currency, first in not_added if first is not None}
    written: set[Pair] = set()
    for i in range(0, len(rest), CHUNK):
        chunk = rest[i : i + CHUNK]
        earlier = {pair: utc_of(earliest[pair]) for pair in _pairs_of(chunk, earliest)}
        existing = _existing(conn, chunk, window)
        written.update(_from_members(conn, chunk, existing, earlier, now, window, min_history))
    return written, added + len(written)


def _pairs_of(payers: Sequence[str], pairs: Collection[Pair]) -> list[Pair]:
    ours = set(payers)
    return [pair for pair in pairs if pair[0] in ours]


def _row(
    pair: tuple[str, str], used: int, first: datetime | None, now: datetime, window: int, minimum: timedelta
) -> dict[str, object]:
    return usage.summary_row(usage.figures_of(pair[0], pair[1], window, used, first, now, minimum), now)


def _add_in_place(
    conn: Connection, now: datetime, window: int, min_history: timedelta
) -> tuple[list[tuple[str, str, Any]], int]:
    """Add what changed (``usage_change``) to each changed row whose usage is above zero before
    and after and whose history (first entry) reaches back the whole window and the minimum:
    its figures are then ``usage.figures_of``'s for the whole window, computed in the
    statement (the ADU, rounded half up, in integers). Returns the changed pairs not written
    so, each with its earliest entry counted in as written (None: none), and how many rows
    were written."""
    oldest = now - max(window * DAY, min_history)  # a row written here has its first entry by then
    given, table = added_by_pair(window, oldest).cte("given"), USAGE_SUMMARY_TABLE
    total = table.c.usage_total + given.c.added
    # ROUND_HALF_UP of a positive total over the window's whole days, as figures_of computes it.
    adu = total // window + case((2 * (total % window) >= window, 1), else_=0)
    first = case(
        (and_(given.c.first.is_not(None), given.c.first < table.c.first_at), given.c.first),
        else_=table.c.first_at,
    )
    statement = (
        update(table)
        .where(
            table.c.account_id == given.c.payer,
            table.c.currency == given.c.currency,
            table.c.window_days == window,
            table.c.usage_total > 0,
            total > 0,
            table.c.first_at <= oldest,
        )
        .values(
            usage_total=total,
            first_at=first,
            days_counted=float(usage.days_counted(now - window * DAY, now, window)),
            adu=adu,
            status=usage.OK,
            computed_at=now,
        )
        .returning(table.c.account_id, table.c.currency)
    )
    if conn.dialect.name != "postgresql":  # no UPDATE inside a WITH: the pairs written come back
        added = set(map(tuple, conn.execute(statement).all()))
        changed = conn.execute(select(given.c.payer, given.c.currency, given.c.earliest)).all()
        return [(p, c, first) for p, c, first in changed if (p, c) not in added], len(added)
    # One statement: the pairs not written, and a last row (payer null) counting those written.
    done = statement.cte("done")
    written = select(done.c.account_id).where(
        done.c.account_id == given.c.payer, done.c.currency == given.c.currency
    )
    rows = conn.execute(
        union_all(
            select(given.c.payer, given.c.currency, given.c.earliest, literal(None, Integer)).where(
                ~written.exists()
            ),
            select(null(), null(), null(), func.count()).select_from(done),
        )
    ).all()
    return [(p, c, first) for p, c, first, _count in rows if p is not None], sum(n or 0 for *_pair, n in rows)


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


def _seeked(
    conn: Connection, payers: Sequence[str], now: datetime, window: int
) -> dict[tuple[str, str], datetime | None]:
    """First entries of ``payers``' pairs by index seeks, one per family member."""
    query = usage.with_firsts(*_member_parts(conn, payers, window, _family(conn, payers)), now)
    return {(r.payer, r.currency): r.first_at for r in conn.execute(query)}


def recompute_all(conn: Connection, now: datetime, window: int, min_history: timedelta) -> int:
    """Replace every summary row of ``window`` with one computed from ``usage_member``.

    Delete and insert, not upsert: the caller holds the refresh lock (``usage_delta``), and
    readers keep seeing the old rows until the transaction commits. The rows are computed and
    written a part at a time (``PART``): a million balances never sit in memory at once.
    """
    computed = conn.execute(usage.with_firsts(*_member_parts(conn, None, window, None), now))
    conn.execute(delete(USAGE_SUMMARY_TABLE).where(USAGE_SUMMARY_TABLE.c.window_days == window))
    written = 0
    for part in computed.partitions(PART):
        rows = [
            usage.summary_row(
                usage.figures_of(r.payer, r.currency, window, int(r.used or 0), r.first_at, now, min_history),
                now,
            )
            for r in part
        ]
        insert_rows(conn, USAGE_SUMMARY_TABLE, rows)
        written += len(rows)
    return written


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
