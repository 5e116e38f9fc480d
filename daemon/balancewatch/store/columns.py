"""Column types and helpers every table module shares: row ids, UTC times, Core tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, DateTime, Integer, String, Table, TypeDecorator, type_coerce
from sqlalchemy.engine import Dialect
from sqlmodel import SQLModel

# SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid alias).
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; timestamptz on PostgreSQL, naive UTC on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(DateTime(timezone=False))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_written(column: ColumnElement[datetime]) -> ColumnElement[Any]:
    """``column`` (a ``UTCDateTime``) read as the database gives it, without SQLAlchemy's parsing:
    for hot paths reading many rows, with ``utc_from`` applied to each value."""
    return type_coerce(column, String)


def utc_from(value: Any) -> datetime | None:
    """A value of ``as_written`` as ``UTCDateTime`` reads it (``utc_of``), or None."""
    return None if value is None else utc_of(value)


def utc_of(value: str | datetime) -> datetime:
    """A value of ``as_written``, not null, as ``UTCDateTime`` reads it: SQLite's text
    (``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC: docs/schema.md) parsed at a fraction of the cost,
    PostgreSQL's timestamptz in UTC."""
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def core_table(model: type[SQLModel]) -> Table:
    """The Core table of ``model``, typed (SQLModel does not declare ``__table__``)."""
    return SQLModel.metadata.tables[str(model.__tablename__)]
