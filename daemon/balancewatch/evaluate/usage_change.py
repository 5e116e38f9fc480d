"""What the ledger entries a refresh reads change, added up by the database.

A refresh from changes (``usage_delta``) reads three kinds of entries: those
written since the last refresh (by id, whatever their date), those read before
whose date has come since (future-dated), and, per window, the usage the
window's start has passed. ``collect`` groups them per (account, currency) into
a temporary table, ``usage_change``, one set of rows per window, with each
account's paying account; no entry crosses to Python. From that table
``add_to_members`` adds each account's change to its own totals
(``usage_member``), ``added_by_pair`` gives what changed per (payer, currency)
for the summary rows (``usage_rows``), and ``accounts_changed`` the pairs whose
balances need no other look (``usage_payers``).

Rows of ``usage_change`` (per window): ``used`` and ``entries``, what to add to the
account's totals (negative for entries leaving); ``first_at``, its earliest entry
dated by now among those counted in (null for those leaving); ``payer``, the
account that pays for it (null: no such account); ``read``, the entries the row
stands for, counted in one window only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Subquery,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    literal,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite

from balancewatch.evaluate.usage_payers import among
from balancewatch.store.columns import UTCDateTime, as_written
from balancewatch.store.tables import ACCOUNT_TABLE, LEDGER_TABLE, USAGE_MEMBER_TABLE

DAY = timedelta(days=1)

CHANGE_TABLE = Table(
    "usage_change",
    MetaData(),
    Column("account_id", String, nullable=False),
    Column("currency", String, nullable=False),
    Column("payer", String),
    Column("window_days", Integer, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("entries", BigInteger, nullable=False),
    Column("first_at", UTCDateTime()),
    Column("read", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)

# Created with the table: balances are passed over by it (``accounts_changed``).
CHANGE_KEY = Index(
    "usage_change_key", CHANGE_TABLE.c.account_id, CHANGE_TABLE.c.currency, CHANGE_TABLE.c.window_days
)


@dataclass(frozen=True, slots=True)
class Collected:
    """What ``collect`` read: the entries (each once) and the last id among those written since."""

    read: int
    last_entry_id: int


@dataclass(frozen=True, slots=True)
class Since:
    """Where the last refresh stopped: its time, the last id it read, the ids missing below it."""

    marked_at: datetime
    last_entry_id: int
    gaps: Collection[int]


def collect(conn: Connection, since: Since, now: datetime, windows: Sequence[int]) -> Collected:
    """Fill ``usage_change`` (created here, dropped with ``drop``) for each of ``windows`` with
    what changed since ``since`` up to ``now``, one row per (account, currency, window).
    Entries dated after ``now`` are read (their id moves the mark) but counted only when their
    date comes."""
    CHANGE_TABLE.create(conn)
    new = LEDGER_TABLE.c.id > since.last_entry_id
    if since.gaps:
        new = new | _among_ids(conn, since.gaps)
    before = and_(LEDGER_TABLE.c.id <= since.last_entry_id, ~_among_ids(conn, since.gaps))
    arrived = before & (LEDGER_TABLE.c.occurred_at > since.marked_at)
    for i, window in enumerate(windows):
        start = now - window * DAY
        leaving = and_(
            before,
            LEDGER_TABLE.c.kind == "usage",
            LEDGER_TABLE.c.occurred_at >= since.marked_at - window * DAY,
            LEDGER_TABLE.c.occurred_at < start,
        )
        counted = [_counted_in(which, now, start, counts_read=i == 0) for which in (new, arrived)]
        _insert(conn, _per_account(union_all(*counted, _leaving(leaving)).subquery("entry"), window))
    read = conn.execute(select(func.coalesce(func.sum(CHANGE_TABLE.c.read), 0))).scalar_one()
    last = conn.execute(select(func.max(LEDGER_TABLE.c.id)).where(new)).scalar_one()
    return Collected(int(read), max(since.last_entry_id, int(last or 0)))


def drop(conn: Connection) -> None:
    """Remove ``usage_change`` (PostgreSQL drops it at commit; SQLite keeps it for the session)."""
    if conn.dialect.name != "postgresql":
        CHANGE_TABLE.drop(conn)


def _insert(conn: Connection, rows: Select[Any]) -> None:
    conn.execute(CHANGE_TABLE.insert().from_select([column.name for column in CHANGE_TABLE.c], rows))


def _counted_in(
    which: ColumnElement[bool], now: datetime, start: datetime, *, counts_read: bool
) -> Select[Any]:
    """Entries of ``which`` dated by ``now``: usage in the window from ``start`` to be added;
    each a possible first entry."""
    in_window = and_(LEDGER_TABLE.c.kind == "usage", LEDGER_TABLE.c.occurred_at >= start)
    return _entries(
        which & (LEDGER_TABLE.c.occurred_at <= now),
        used=case((in_window, -LEDGER_TABLE.c.amount), else_=0),
        entries=case((in_window, 1), else_=0),
        first_at=LEDGER_TABLE.c.occurred_at,
        read=literal(1 if counts_read else 0, BigInteger),
    )


def _leaving(which: ColumnElement[bool]) -> Select[Any]:
    """Usage entries of ``which`` (left the window), to be taken away."""
    return _entries(
        which,
        used=LEDGER_TABLE.c.amount,
        entries=literal(-1, BigInteger),
        first_at=literal(None, UTCDateTime()),
        read=literal(1, BigInteger),
    )


def _entries(which: ColumnElement[bool], **values: ColumnElement[Any]) -> Select[Any]:
    return select(
        LEDGER_TABLE.c.account_id,
        LEDGER_TABLE.c.currency,
        *(value.label(name) for name, value in values.items()),
    ).where(which)


def _per_account(entry: Subquery, window: int) -> Select[Any]:
    """``entry`` added up per (account, currency), with the account that pays for it."""
    payer = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)  # null: no such account
    return (
        select(
            entry.c.account_id,
            entry.c.currency,
            payer,
            literal(window, Integer),
            func.sum(entry.c.used),
            func.sum(entry.c.entries),
            func.min(entry.c.first_at),
            func.sum(entry.c.read),
        )
        .select_from(entry.outerjoin(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == entry.c.account_id))
        .group_by(entry.c.account_id, entry.c.currency, payer)
    )


def _among_ids(conn: Connection, ids: Collection[int]) -> ColumnElement[bool]:
    return among(conn, LEDGER_TABLE.c.id, sorted(ids), BigInteger()) if ids else false()


def add_to_members(conn: Connection, window: int) -> None:
    """Add each account's change in ``window`` to its totals (``usage_member``); drop the rows
    entries leaving left with none."""
    changed = select(
        CHANGE_TABLE.c.account_id,
        CHANGE_TABLE.c.currency,
        CHANGE_TABLE.c.window_days,
        CHANGE_TABLE.c.used,
        CHANGE_TABLE.c.entries,
    ).where(  # a WHERE before ON CONFLICT, which SQLite needs (else it reads a join's ON)
        CHANGE_TABLE.c.window_days == window, (CHANGE_TABLE.c.used != 0) | (CHANGE_TABLE.c.entries != 0)
    )
    postgres = conn.dialect.name == "postgresql"
    insert = (postgresql.insert if postgres else sqlite.insert)(USAGE_MEMBER_TABLE)
    statement = insert.from_select(["account_id", "currency", "window_days", "used", "entries"], changed)
    upsert = statement.on_conflict_do_update(
        index_elements=[USAGE_MEMBER_TABLE.c[name] for name in ("account_id", "currency", "window_days")],
        set_={name: USAGE_MEMBER_TABLE.c[name] + statement.excluded[name] for name in ("used", "entries")},
    )
    member = USAGE_MEMBER_TABLE
    if postgres:  # the rows left with no entry, as the upsert returns them: no second look
        written = upsert.returning(member.c.account_id, member.c.currency, member.c.entries).cte("written")
        empty = conn.execute(select(written.c.account_id, written.c.currency).where(written.c.entries == 0))
    else:  # in-process: each leaving account looked up again by key
        conn.execute(upsert)
        left = select(CHANGE_TABLE.c.account_id, CHANGE_TABLE.c.currency).where(
            CHANGE_TABLE.c.window_days == window, CHANGE_TABLE.c.entries < 0
        )
        empty = conn.execute(
            select(member.c.account_id, member.c.currency).where(
                member.c.window_days == window,
                member.c.entries == 0,
                tuple_(member.c.account_id, member.c.currency).in_(left),
            )
        )
    keys = [{"account": account, "currency": currency} for account, currency in empty]
    if keys:
        conn.execute(
            delete(member).where(
                member.c.account_id == bindparam("account"),
                member.c.currency == bindparam("currency"),
                member.c.window_days == window,
            ),
            keys,
        )


def accounts_changed(window: int) -> Subquery:
    """The (account_id, currency) pairs whose entries changed in ``window``."""
    return (
        select(CHANGE_TABLE.c.account_id, CHANGE_TABLE.c.currency)
        .where(CHANGE_TABLE.c.window_days == window)
        .subquery("changed")
    )


def added_by_pair(window: int, oldest: datetime) -> Select[Any]:
    """Per (payer, currency) changed in ``window``: the usage added (``added``), the earliest entry
    counted in when it is before ``oldest`` (``first``; else null: a later one cannot be the
    first of a row whose first entry is by ``oldest``), and in any case as the database writes
    it (``earliest``; ``utc_from`` reads it)."""
    earliest = func.min(CHANGE_TABLE.c.first_at)
    return (
        select(
            CHANGE_TABLE.c.payer,
            CHANGE_TABLE.c.currency,
            cast(func.sum(CHANGE_TABLE.c.used), BigInteger).label("added"),  # PostgreSQL: sum is numeric
            case((earliest < oldest, earliest), else_=None).label("first"),
            as_written(earliest).label("earliest"),
        )
        .where(CHANGE_TABLE.c.window_days == window, CHANGE_TABLE.c.payer.is_not(None))
        .group_by(CHANGE_TABLE.c.payer, CHANGE_TABLE.c.currency)
    )
