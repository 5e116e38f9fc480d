"""What the models declare that a database lacks: found, repaired where that is safe, reported otherwise.

The migrations build the schema; this module is the safety net after them. A
database made by the hand-written upgrade of older versions may lack an index
that was added without a version change, or one dropped by hand; the repair
puts back what is purely additive (tables, nullable or defaulted columns,
indexes). Whatever else differs is reported, and nothing here ever drops or
rewrites: extra tables, columns and indexes (a billing system's own) are left
alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Index, Table, UniqueConstraint, inspect
from sqlalchemy.engine.interfaces import ReflectedColumn, ReflectedIndex, ReflectedUniqueConstraint
from sqlalchemy.schema import CreateColumn
from sqlmodel import SQLModel


class SchemaError(RuntimeError):
    """The schema cannot be brought to this version's: made by a newer balancewatch, or not repairable.

    The message is one line, fit to show as it is.
    """


@dataclass(frozen=True)
class Reflected:
    """What the database has of the model tables: their names, and by table their columns and
    indexes (by name) and unique constraints. Read in a few queries, whatever the table count:
    every daemon start and ``db upgrade`` reads it."""

    tables: frozenset[str]
    columns: dict[str, dict[str, ReflectedColumn]]
    indexes: dict[str, dict[str, ReflectedIndex]]
    uniques: dict[str, list[ReflectedUniqueConstraint]]


def reflect(conn: Connection) -> Reflected:
    """The model tables as the database has them now."""
    inspector = inspect(conn)
    existing = frozenset(inspector.get_table_names()) & {t.name for t in SQLModel.metadata.sorted_tables}
    if not existing:
        return Reflected(existing, {}, {}, {})
    names = sorted(existing)
    return Reflected(
        existing,
        {
            key[1]: {c["name"]: c for c in found}
            for key, found in inspector.get_multi_columns(filter_names=names).items()
        },
        {
            key[1]: {i["name"]: i for i in found if i["name"]}
            for key, found in inspector.get_multi_indexes(filter_names=names).items()
        },
        {key[1]: found for key, found in inspector.get_multi_unique_constraints(filter_names=names).items()},
    )


def _tables_in_place(found: Reflected) -> Iterator[Table]:
    """Each model table the database already has."""
    for table in SQLModel.metadata.sorted_tables:
        if table.name in found.tables:
            yield table


def missing_tables(found: Reflected) -> list[Table]:
    """Model tables the database does not have."""
    return [table for table in SQLModel.metadata.sorted_tables if table.name not in found.tables]


def missing_columns(found: Reflected) -> list[tuple[Table, Column[Any]]]:
    """Columns the tables in the database lack, compared with the models."""
    out: list[tuple[Table, Column[Any]]] = []
    for table in _tables_in_place(found):
        have = found.columns.get(table.name, {})
        out.extend((table, column) for column in table.columns if column.name not in have)
    return out


def missing_indexes(found: Reflected) -> list[tuple[Table, Index]]:
    """Indexes the models declare that the tables in the database lack, by name, with their table."""
    out: list[tuple[Table, Index]] = []
    for table in _tables_in_place(found):
        have = found.indexes.get(table.name, {})
        out.extend((table, index) for index in table.indexes if index.name not in have)
    return out


def repair(conn: Connection, found: Reflected) -> list[str]:
    """Create the model tables, columns and indexes the database lacks (``found``: the database
    as just reflected); return what was done, one line each.

    Raises :class:`SchemaError` for a missing column that is NOT NULL without a
    server default: the rows already there would have no value for it.
    """
    done = []
    for table in missing_tables(found):
        table.create(conn)  # with its indexes: nothing below looks at it again
        done.append(f"created table {table.name}")
    for table, column in missing_columns(found):
        _add_column(conn, table, column)
        done.append(f"added column {table.name}.{column.name}")
    for table, index in missing_indexes(found):
        index.create(conn)
        done.append(f"created index {index.name} on {table.name}")
    return done


def _add_column(conn: Connection, table: Table, column: Column[Any]) -> None:
    if not column.nullable and column.server_default is None:
        # A NOT NULL column needs a value for the rows already there.
        raise SchemaError(f"cannot add {table.name}.{column.name}: NOT NULL without a server default")
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {conn.dialect.identifier_preparer.quote(table.name)} ADD COLUMN {ddl}")


def differences(conn: Connection, found: Reflected | None = None) -> list[str]:
    """How the database falls short of the models, one line each; empty when it has all they declare.

    Checked: every table, column (and its nullability), index (name, columns,
    uniqueness) and unique constraint (by columns). Types are left to the
    migration tests: each backend spells them its own way. ``found``: the database as
    reflected since its tables last changed (default: reflected now).
    """
    found = found or reflect(conn)
    out = []
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in found.tables:
            out.append(f"table {table.name} is missing")
            continue
        out.extend(_column_differences(found.columns.get(table.name, {}), table))
        out.extend(_index_differences(found.indexes.get(table.name, {}), table))
        out.extend(_unique_differences(found, table))
    return out


def _column_differences(have: dict[str, ReflectedColumn], table: Table) -> list[str]:
    out = []
    for column in table.columns:
        found = have.get(column.name)
        if found is None:
            out.append(f"column {table.name}.{column.name} is missing")
        elif bool(found["nullable"]) != bool(column.nullable) and not column.primary_key:
            want = "nullable" if column.nullable else "NOT NULL"
            out.append(f"column {table.name}.{column.name} should be {want}")
    return out


def _index_differences(have: dict[str, ReflectedIndex], table: Table) -> list[str]:
    out = []
    for index in table.indexes:
        found = have.get(str(index.name))
        columns = [c.name for c in index.columns]
        if found is None:
            out.append(f"index {index.name} on {table.name} is missing")
        elif list(found["column_names"]) != columns or bool(found["unique"]) != bool(index.unique):
            out.append(f"index {index.name} on {table.name} should be on ({', '.join(columns)})")
    return out


def _unique_differences(found: Reflected, table: Table) -> list[str]:
    """Unique constraints by their columns: SQLite leaves a column's ``unique=True`` unnamed."""
    have = {tuple(sorted(u["column_names"])) for u in found.uniques.get(table.name, [])}
    # An expression in an index has no column name (None): it cannot stand for a unique column.
    have |= {
        tuple(sorted(name for name in i["column_names"] if name is not None))
        for i in found.indexes.get(table.name, {}).values()
        if i["unique"]
    }
    out: list[str] = []
    for columns in _declared_uniques(table):
        if columns not in have:
            out.append(f"unique constraint on {table.name} ({', '.join(columns)}) is missing")
    return out


def _declared_uniques(table: Table) -> list[tuple[str, ...]]:
    out = [
        tuple(sorted(c.name for c in constraint.columns))
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint)
    ]
    out.extend((c.name,) for c in table.columns if c.unique)
    return sorted(set(out))
