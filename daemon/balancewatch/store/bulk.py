"""Writing many rows at once: on PostgreSQL one statement per batch with one array per column.

``executemany`` of an upsert costs PostgreSQL a round of parsing, binding and
conflict checking per row. ``INSERT … SELECT … FROM unnest(:col1, :col2, …)``
binds one array per column and writes the whole batch in one statement; on
SQLite, in-process, ``executemany`` is already the fast way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, Select, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

BATCH = 20_000


def insert_rows(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, object]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    add: Sequence[str] = (),
) -> None:
    """Insert ``rows`` (each with the same keys) into ``table``. With ``conflict`` (the
    columns of a unique key), a row whose key exists instead takes the new row's ``update``
    columns and adds the new row's ``add`` columns to its own."""
    if not rows:
        return
    columns = list(rows[0])
    postgres = conn.dialect.name == "postgresql"
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        if postgres:
            pg = postgresql.insert(table).from_select(columns, _unnested(table, columns, batch))
            conn.execute(_on_conflict(pg, table, conflict, update, add) if conflict else pg)
        else:
            lite = sqlite.insert(table)
            conn.execute(_on_conflict(lite, table, conflict, update, add) if conflict else lite, list(batch))


def _on_conflict(
    stmt: postgresql.Insert | sqlite.Insert,
    table: Table,
    conflict: Sequence[str],
    update: Sequence[str],
    add: Sequence[str],
) -> Any:
    return stmt.on_conflict_do_update(
        index_elements=[table.c[name] for name in conflict],
        set_={
            **{name: stmt.excluded[name] for name in update},
            **{name: table.c[name] + stmt.excluded[name] for name in add},
        },
    )


def _unnested(table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> Select[Any]:
    arrays = [
        bindparam(f"bulk_{name}", [row[name] for row in rows], type_=ARRAY(table.c[name].type))
        for name in columns
    ]
    values = func.unnest(*arrays).table_valued(*columns).render_derived(name="bulk")
    return select(*(values.c[name] for name in columns))
