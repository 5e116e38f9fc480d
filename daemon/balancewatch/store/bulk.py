"""Writing many rows at once, at the database's cost rather than the driver's.

``executemany`` of an upsert costs PostgreSQL a round of parsing, binding and
conflict checking per row. ``INSERT … SELECT … FROM json_populate_recordset(…)``
binds the batch as one JSON parameter and writes it in one statement. SQLite,
in-process, inserts a row in a few microseconds; SQLAlchemy's handling of each
row's parameters costs several times that, so the statement is compiled once
and the rows, each value already as the column's type stores it, go straight to
the driver's ``executemany``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Connection, Select, String, Table, bindparam, cast, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from balancewatch.store.columns import UTCDateTime

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
            pg = postgresql.insert(table).from_select(columns, _from_json(table, columns, batch))
            conn.execute(_on_conflict(pg, table, conflict, update, add) if conflict else pg)
        else:
            lite = sqlite.insert(table)
            statement = _on_conflict(lite, table, conflict, update, add) if conflict else lite
            compiled = statement.compile(dialect=conn.dialect, column_keys=columns)
            if list(compiled.positiontup or ()) != columns:  # the driver's parameters are positional
                raise ValueError(f"cannot bind {columns} to {compiled.positiontup}")
            conn.exec_driver_sql(compiled.string, _sqlite_rows(conn, table, columns, batch))


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


def _sqlite_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, object]]
) -> list[tuple[Any, ...]]:
    """Each row's values in ``columns``' order, as the columns' types store them (SQLite)."""
    encoders = [(name, _sqlite_encoder(table.c[name].type, conn.dialect)) for name in columns]
    return [
        tuple([row[name] if encode is None else encode(row[name]) for name, encode in encoders])
        for row in rows
    ]


def _sqlite_encoder(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What turns a value into what SQLite stores for ``type_``: the type's own bind processing,
    but for UTC times, written here as SQLite's DATETIME writes them at a fifth of its cost."""
    return _sqlite_utc_text if isinstance(type_, UTCDateTime) else type_._cached_bind_processor(dialect)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """An aware time as ``UTCDateTime`` stores it on SQLite: naive UTC, microseconds always."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # nearly always: the times read back and ``now`` are
        return value.isoformat(" ", "microseconds")[:26]
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware UTC time")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _from_json(table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> Select[Any]:
    """The rows as a SELECT over one JSON parameter (PostgreSQL): ``json_populate_recordset``
    gives each value the type of ``table``'s column of its name. (Arrays, one per column, cost
    the driver more than the insert: psycopg writes each element of a list in Python.)"""
    encoded = json.dumps([{name: row[name] for name in columns} for row in rows], default=_json_value)
    as_rows: Any = literal_column(f"NULL::{table.name}")  # the table's row type: the columns' types
    listed = func.json_populate_recordset(as_rows, cast(bindparam("bulk_rows", encoded, type_=String), JSON))
    values = listed.table_valued(*columns).render_derived(name="bulk")
    return select(*(values.c[name] for name in columns))


def _json_value(value: object) -> str | int:
    """What ``json`` cannot write itself: aware times, and PostgreSQL's sums (Decimal)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    raise TypeError(f"{value!r} cannot be written in bulk: aware times, text, numbers, true/false")
