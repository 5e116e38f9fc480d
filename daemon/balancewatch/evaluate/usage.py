"""Average daily usage (ADU) from the ledger, kept in ``usage_summary``.

ADU of a paying account in a currency, over a window of N days ending now:
the usage debits (kind ``usage`` only; top-ups, refunds and adjustments do not
count) of the account and its subaccounts in the window, divided by the days
counted: N, or fewer when the account's first ledger entry is inside the
window (days before it do not count). With less history than the minimum
(``short-history``) or no usage in the window (``no-usage``) there is no ADU:
never a guess.

``refresh`` computes every account at once with one grouped query and writes
the summary; evaluation reads the summary (set-based, indexed). ``figures``
computes one account on demand, with the arithmetic, for emails and
``balancewatch recommend``. ``current`` reads the summary of a chunk of
balances and computes, with one grouped query and the same arithmetic, the
ones it has no row for yet (an account or a currency new since the last
refresh): an email never says "no usage" only because the summary is behind.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection, Select, and_, delete, func, or_, select, union

from balancewatch.evaluate.load import one_of
from balancewatch.store.bulk import insert_rows
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    BALANCE_TABLE,
    LEDGER_TABLE,
    USAGE_SUMMARY_TABLE,
)

DAY = timedelta(days=1)
OK, SHORT, NONE = "ok", "short-history", "no-usage"


@dataclass(frozen=True, slots=True)
class Figures:
    """ADU of one balance and how it was computed; ``adu`` is None without enough history."""

    account_id: str
    currency: str
    window_days: int
    usage_total: int  # minor units used in the window
    days_counted: Decimal
    first_at: datetime | None
    adu: int | None
    status: str  # ok | short-history | no-usage


def days_counted(first_at: datetime | None, now: datetime, window_days: int) -> Decimal:
    """Days of the window the account existed for, to 0.01 day: N, or since its first entry."""
    if first_at is None:
        return Decimal(0)
    window = timedelta(days=window_days)
    if now - first_at >= window:  # most accounts: the whole window, the same figure every time
        whole = _WHOLE.get(window_days)
        if whole is None:
            whole = _WHOLE[window_days] = _hundredths(window)
        return whole
    return _hundredths(now - first_at)


_WHOLE: dict[int, Decimal] = {}  # window_days -> its days counted


def _hundredths(span: timedelta) -> Decimal:
    return (Decimal(span.total_seconds()) / 86400).quantize(Decimal("0.01"))


def figures_of(
    account_id: str,
    currency: str,
    window_days: int,
    used: int,
    first_at: datetime | None,
    now: datetime,
    min_history: timedelta,
) -> Figures:
    """The ADU arithmetic from the window's usage and the first entry."""
    days = days_counted(first_at, now, window_days)
    if first_at is None or now - first_at < min_history or days <= 0:
        # (days <= 0: under a minimum shorter than the 0.01 day counted, nothing to divide by)
        status, adu = SHORT, None
    elif used <= 0:
        status, adu = NONE, None
    else:
        status = OK
        adu = int((Decimal(used) / days).to_integral_value(ROUND_HALF_UP))
    return Figures(account_id, currency, window_days, max(used, 0), days, first_at, adu, status)


def _grouped(now: datetime, window_days: int, payers: Collection[str] | None = None) -> Select[Any]:
    """Usage in the window and first entry per paying account and currency.

    One row per balance and per paying account and currency with usage in the
    window ``[now - window_days, now]``: ``used`` (null without usage in the
    window), summed over the account and its subaccounts, and ``first_at``, the
    earliest entry of any of them in that currency up to ``now`` (null without
    one). With ``payers``, only those paying accounts (and their subaccounts' entries).

    The window's usage is one grouped scan, the scan a hand-written ``GROUP BY``
    does. Each first entry is one seek per family member into the (account_id,
    currency, occurred_at) index, never a scan of the history before the window.
    """
    start = now - timedelta(days=window_days)
    paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    used = (
        select(paying.label("payer"), LEDGER_TABLE.c.currency, func.sum(-LEDGER_TABLE.c.amount).label("used"))
        .select_from(LEDGER_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == LEDGER_TABLE.c.account_id))
        .where(
            LEDGER_TABLE.c.kind == "usage",
            LEDGER_TABLE.c.occurred_at >= start,
            LEDGER_TABLE.c.occurred_at <= now,
        )
    )
    balances = select(paying.label("payer"), BALANCE_TABLE.c.currency).select_from(
        BALANCE_TABLE.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == BALANCE_TABLE.c.account_id)
    )
    if payers is not None:
        chosen = sorted(set(payers))
        family = (
            select(ACCOUNT_TABLE.c.id)
            .where(or_(ACCOUNT_TABLE.c.id.in_(chosen), ACCOUNT_TABLE.c.parent_id.in_(chosen)))
            .scalar_subquery()
        )
        used = used.where(LEDGER_TABLE.c.account_id.in_(family))
        balances = balances.where(BALANCE_TABLE.c.account_id.in_(chosen))
    return with_firsts(used.group_by(paying, LEDGER_TABLE.c.currency), balances, now)


def with_firsts(used: Select[Any], balances: Select[Any], now: datetime) -> Select[Any]:
    """One row per pair of ``balances`` (payer, currency) and of ``used`` (payer, currency,
    used; grouped): the payer, the currency, ``used`` (null where it has no row) and
    ``first_at``, the earliest entry up to ``now`` of the payer or an account whose parent
    it is, in that currency: one index seek per family member."""
    # Materialized: both the pairs and the final join read it; the scan runs once.
    u = used.cte("window_usage").prefix_with("MATERIALIZED")
    pairs = union(balances, select(u.c.payer, u.c.currency)).subquery("pairs")
    member = ACCOUNT_TABLE.alias("member")
    first = (
        select(func.min(LEDGER_TABLE.c.occurred_at))
        .where(
            LEDGER_TABLE.c.account_id == member.c.id,
            LEDGER_TABLE.c.currency == pairs.c.currency,
            LEDGER_TABLE.c.occurred_at <= now,
        )
        .scalar_subquery()
    )
    firsts = (
        select(pairs.c.payer, pairs.c.currency, func.min(first).label("first_at"))
        .select_from(
            pairs.join(member, or_(member.c.id == pairs.c.payer, member.c.parent_id == pairs.c.payer))
        )
        .group_by(pairs.c.payer, pairs.c.currency)
        .subquery("firsts")
    )
    return select(firsts.c.payer, firsts.c.currency, u.c.used, firsts.c.first_at).select_from(
        firsts.outerjoin(u, and_(u.c.payer == firsts.c.payer, u.c.currency == firsts.c.currency))
    )


def refresh(conn: Connection, now: datetime, windows: Iterable[int], min_history: timedelta) -> int:
    """Recompute ``usage_summary`` for every paying account and window; return the rows written.

    One grouped query per window over the ledger. Every balance gets a row,
    and so does every paying account with usage in the window; an account and
    currency with neither has nothing to watch and gets none (no ADU).
    """
    written = 0
    for window in sorted(set(windows)):
        rows = [
            summary_row(
                figures_of(r.payer, r.currency, window, int(r.used or 0), r.first_at, now, min_history), now
            )
            for r in conn.execute(_grouped(now, window))
        ]
        write_rows(conn, rows)
        conn.execute(
            delete(USAGE_SUMMARY_TABLE).where(
                USAGE_SUMMARY_TABLE.c.window_days == window, USAGE_SUMMARY_TABLE.c.computed_at < now
            )
        )
        written += len(rows)
    return written


_KEY = ("account_id", "currency", "window_days")
_UPDATED = ("usage_total", "first_at", "days_counted", "adu", "status", "computed_at")


def write_rows(conn: Connection, rows: Sequence[dict[str, object]]) -> None:
    """Insert or update summary rows (``summary_row``'s), in batches."""
    # An upsert, not delete-and-insert: instances refreshing together must not collide.
    insert_rows(conn, USAGE_SUMMARY_TABLE, rows, conflict=_KEY, update=_UPDATED)


def summary_row(f: Figures, now: datetime) -> dict[str, object]:
    return {
        "account_id": f.account_id,
        "currency": f.currency,
        "window_days": f.window_days,
        "usage_total": f.usage_total,
        "first_at": f.first_at,
        "days_counted": float(f.days_counted),
        "adu": f.adu,
        "status": f.status,
        "computed_at": now,
    }


def figures(
    conn: Connection, payer: str, currency: str, now: datetime, window_days: int, min_history: timedelta
) -> Figures:
    """The ADU of one paying account, computed now from the ledger (not the summary)."""
    for r in conn.execute(_grouped(now, window_days, [payer])):
        if r.currency == currency:
            return figures_of(payer, currency, window_days, int(r.used or 0), r.first_at, now, min_history)
    return figures_of(payer, currency, window_days, 0, None, now, min_history)


def stored(
    conn: Connection, keys: Sequence[tuple[str, str]], windows: Iterable[int]
) -> dict[tuple[str, str, int], int]:
    """Stored ADU (minor units) by (account, currency, window) for ``keys``; missing: no ADU.

    The summary only: a balance new since the last refresh has none here (``current`` computes it).
    """
    wanted = sorted(set(windows))
    if not keys or not wanted:
        return {}
    query = select(
        USAGE_SUMMARY_TABLE.c.account_id,
        USAGE_SUMMARY_TABLE.c.currency,
        USAGE_SUMMARY_TABLE.c.window_days,
        USAGE_SUMMARY_TABLE.c.adu,
    ).where(
        one_of(conn, USAGE_SUMMARY_TABLE.c.account_id, (k[0] for k in keys)),
        USAGE_SUMMARY_TABLE.c.window_days.in_(wanted),
        USAGE_SUMMARY_TABLE.c.adu.isnot(None),
    )
    keyset = set(keys)
    return {
        (r.account_id, r.currency, r.window_days): r.adu
        for r in conn.execute(query)
        if (r.account_id, r.currency) in keyset
    }


def _stored(r: Any) -> Figures:
    return Figures(
        r.account_id,
        r.currency,
        r.window_days,
        r.usage_total,
        Decimal(str(r.days_counted)).quantize(Decimal("0.01")),
        r.first_at,
        r.adu,
        r.status,
    )


def computed(
    conn: Connection, keys: Sequence[tuple[str, str]], now: datetime, window_days: int, min_history: timedelta
) -> dict[tuple[str, str], Figures]:
    """The figures of ``keys`` (paying account, currency) computed now from the ledger, as
    ``refresh`` would store them: one grouped query for all of them."""
    if not keys:
        return {}
    wanted = set(keys)
    out = {
        (r.payer, r.currency): figures_of(
            r.payer, r.currency, window_days, int(r.used or 0), r.first_at, now, min_history
        )
        for r in conn.execute(_grouped(now, window_days, {k[0] for k in wanted}))
        if (r.payer, r.currency) in wanted
    }
    # A key with neither a balance nor an entry: what refresh would say if it wrote a row.
    for account_id, currency in wanted - out.keys():
        out[(account_id, currency)] = figures_of(account_id, currency, window_days, 0, None, now, min_history)
    return out


def current(
    conn: Connection,
    keys: Sequence[tuple[str, str]],
    windows: Iterable[int],
    now: datetime,
    min_history: timedelta,
) -> dict[int, dict[tuple[str, str], Figures]]:
    """The figures of every one of ``keys`` for each of ``windows``: window -> key -> Figures.

    The stored summary where it has a row (one query for every window); for
    the keys it has none for yet, computed now from the ledger (``computed``,
    one grouped query per window that misses any), so the summary being behind
    never reads as "no usage". Keys with a row cost nothing more.
    """
    wanted = sorted(set(windows))
    out: dict[int, dict[tuple[str, str], Figures]] = {w: {} for w in wanted}
    if not keys or not wanted:
        return out
    keyset = set(keys)
    query = select(USAGE_SUMMARY_TABLE).where(
        one_of(conn, USAGE_SUMMARY_TABLE.c.account_id, (k[0] for k in keys)),
        USAGE_SUMMARY_TABLE.c.window_days.in_(wanted),
    )
    for r in conn.execute(query):
        if (r.account_id, r.currency) in keyset:
            out[r.window_days][(r.account_id, r.currency)] = _stored(r)
    for window in wanted:
        missing = sorted(keyset - out[window].keys())
        if missing:
            out[window].update(computed(conn, missing, now, window, min_history))
    return out


def adu_of(by_window: Mapping[int, Mapping[tuple[str, str], Figures]]) -> dict[tuple[str, str, int], int]:
    """The ADU of ``current``'s figures keyed as ``stored`` keys it: (account, currency, window)."""
    return {
        (key[0], key[1], window): f.adu
        for window, figures in by_window.items()
        for key, f in figures.items()
        if f.adu is not None
    }
