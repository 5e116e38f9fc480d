"""The paying accounts whose figures move without a ledger entry, and id lists bound as one value.

A refresh from changes (``usage_delta``) recomputes the payers whose entries changed
(``usage_change``), those with a new balance (``payers_with_new_balances``: it gets its
row) and those whose history is still short (``age_young``: their days counted and
status move with time alone).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    String,
    any_,
    bindparam,
    func,
    select,
)
from sqlalchemy.types import TypeEngine

from balancewatch.evaluate import usage
from balancewatch.store.bulk import array_parameter
from balancewatch.store.columns import as_written, utc_from
from balancewatch.store.tables import (
    ACCOUNT_TABLE,
    BALANCE_TABLE,
    USAGE_SUMMARY_TABLE,
)

DAY = timedelta(days=1)
CHUNK = 2_000  # paying accounts recomputed per query
# A balance's updated_at is its writer's clock, set before its commit: read back this far.
BALANCE_SLACK = timedelta(minutes=5)


class _Marked(Protocol):
    @property
    def marked_at(self) -> datetime: ...


def payers_with_new_balances(
    conn: Connection, mark: _Marked, window: int, changed: FromClause | None = None
) -> set[str]:
    """The paying accounts with a balance changed since ``mark`` in a currency they have no
    summary row for in ``window``: a new balance gets its row (a moved one changes no figure).

    ``changed``, a table of (account_id, currency) whose entries changed (``usage_change``):
    their balances are passed over, as the rows of their payers are written anyway."""
    moved = BALANCE_TABLE.c.updated_at >= mark.marked_at - BALANCE_SLACK
    if changed is not None:
        moved = moved & ~(
            select(changed.c.account_id)
            .where(
                changed.c.account_id == BALANCE_TABLE.c.account_id,
                changed.c.currency == BALANCE_TABLE.c.currency,
            )
            .exists()
        )
    # OFFSET 0: the balances are narrowed down before any account is looked up, whatever the
    # planner guesses of how many moved (beyond its statistics, it guesses one).
    balances = select(BALANCE_TABLE.c.account_id, BALANCE_TABLE.c.currency).where(moved).offset(0).subquery()
    paying = func.coalesce(ACCOUNT_TABLE.c.parent_id, ACCOUNT_TABLE.c.id)
    has_row = (
        select(USAGE_SUMMARY_TABLE.c.account_id)
        .where(
            USAGE_SUMMARY_TABLE.c.window_days == window,
            USAGE_SUMMARY_TABLE.c.account_id == paying,
            USAGE_SUMMARY_TABLE.c.currency == balances.c.currency,
        )
        .exists()
    )
    query = (
        select(paying)
        .select_from(balances.join(ACCOUNT_TABLE, ACCOUNT_TABLE.c.id == balances.c.account_id))
        .where(~has_row)
        .distinct()
    )
    return set(conn.execute(query).scalars())


def age_young(
    conn: Connection,
    skip: Collection[tuple[str, str]],
    mark: _Marked,
    now: datetime,
    window: int,
    min_history: timedelta,
) -> int:
    """Rewrite the summary rows whose figures move with time alone: history shorter than the
    window or the minimum at ``mark`` (their days counted and status move), from the row
    itself (nothing else of theirs changed), except the (payer, currency) rows in ``skip``."""
    young = mark.marked_at - max(window * DAY, min_history)
    query = select(
        USAGE_SUMMARY_TABLE.c.account_id,
        USAGE_SUMMARY_TABLE.c.currency,
        USAGE_SUMMARY_TABLE.c.usage_total,
        as_written(USAGE_SUMMARY_TABLE.c.first_at),
    ).where(USAGE_SUMMARY_TABLE.c.window_days == window, USAGE_SUMMARY_TABLE.c.first_at > young)
    rows = [
        usage.summary_row(
            usage.figures_of(payer, currency, window, total, utc_from(first), now, min_history), now
        )
        for payer, currency, total, first in conn.execute(query)
        if (payer, currency) not in skip
    ]
    usage.write_rows(conn, rows)
    return len(rows)


def among(
    conn: Connection,
    column: ColumnElement[Any],
    values: Sequence[str | int],
    item_type: TypeEngine[Any] | None = None,
) -> ColumnElement[bool]:
    """``column IN values`` with the values bound as one parameter instead of one each
    (thousands per chunk here, each compiled, bound and parsed): on PostgreSQL
    ``column = ANY(array)`` (of ``item_type``, text by default), on SQLite
    ``column IN (SELECT value FROM json_each(list))``, which SQLite answers by key from
    ``column``'s index as it does a list."""
    if conn.dialect.name == "postgresql":  # the array's text: psycopg dumps a list element by element
        return column == any_(array_parameter(values, item_type or String()))
    listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))
