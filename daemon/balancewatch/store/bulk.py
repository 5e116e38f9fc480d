"""Writing many rows at once, at the database's cost rather than the driver's.

``executemany`` of an upsert costs PostgreSQL a round of parsing, binding and
conflict checking per row. ``INSERT … SELECT … FROM unnest(…)`` binds the batch
as one array parameter per column, written here as the text of an array literal
(``array_literal``), and writes it in one statement. SQLite,
in-process, inserts a row in a few microseconds; SQLAlchemy's handling of each
row's parameters costs several times that, so the statement is compiled once
and the rows, each value already as the column's type stores it, go straight to
the driver's ``executemany``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import NullType, TypeEngine

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
            pg = postgresql.insert(table).from_select(columns, _from_arrays(conn, table, columns, batch))
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


def _from_arrays(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, object]]
) -> Select[Any]:
    """The rows as a SELECT over one array parameter per column (PostgreSQL): ``unnest`` of each
    column's values, written as the text of an array literal here and cast by the server to an
    array of the column's type. (psycopg dumps a list element by element in Python; a JSON
    document costs ``json.dumps`` several microseconds a row.)"""
    types = {name: table.c[name].type for name in columns}
    listed = _unnested(types, [[row[name] for row in rows] for name in columns], "bulk")
    return select(*(listed.c[name] for name in columns))


def _unnested(
    types: Mapping[str, TypeEngine[Any]], values: Sequence[Sequence[object]], name: str
) -> TableValuedAlias:
    """``unnest`` of one array parameter per column of ``types`` (``values``: each column's
    values, in the same order), as a table ``name`` with those columns."""
    arrays = [
        array_parameter(column, item_type) for column, item_type in zip(values, types.values(), strict=True)
    ]
    return func.unnest(*arrays).table_valued(*types).render_derived(name=name)


def array_parameter(values: Sequence[object], item_type: TypeEngine[Any]) -> ColumnElement[Any]:
    """``values`` as one PostgreSQL array parameter of ``item_type``: ``array_literal``'s text,
    bound without a type of its own, so that the server reads it as the array (a constant the
    planner sees) instead of casting a text at run time (once per row in a filter)."""
    return cast(bindparam(None, array_literal(values), type_=NullType()), postgresql.ARRAY(item_type))


def array_literal(values: Sequence[object]) -> str:
    """``values`` as PostgreSQL reads an array literal of them: text quoted (``"`` and ``\\``
    escaped), times in ISO 8601 with their offset, numbers as written, None as NULL. Raises
    TypeError for any other value."""
    kinds = {type(value) for value in values}
    if kinds <= {str}:
        texts: Sequence[str] = values  # type: ignore[assignment]
        joined = "".join(texts)
        if "\\" in joined or '"' in joined:
            return "{" + ",".join(map(_quoted, texts)) + "}"
        return '{"' + '","'.join(texts) + '"}' if texts else "{}"
    if kinds <= {int} or kinds <= {float} or kinds <= {Decimal}:
        return "{" + ",".join(map(str, values)) + "}"
    return "{" + ",".join(map(_element, values)) + "}"


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()
    if isinstance(value, (bool, int, float, Decimal)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise TypeError(f"{value!r} cannot be written in bulk: aware times, text, numbers, true/false")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
