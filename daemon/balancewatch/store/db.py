"""Engines and the schema: SQLite with WAL by default, PostgreSQL at scale."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, Index, Table, create_engine, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Inspector, make_url
from sqlalchemy.schema import CreateColumn
from sqlmodel import Session, SQLModel

from balancewatch.store.tables import SCHEMA_VERSION, Meta, utcnow

META = Meta.__table__  # type: ignore[attr-defined]

# The PostgreSQL advisory lock that serialises schema upgrades. Its key is the
# first 8 bytes of SHA-256 of this name, as a signed 64-bit integer
# (-6869452749315585844; pg_locks shows it as classid 2695548190, objid
# 3551971532, objsubid 1). Never change the name: every balancewatch version
# sharing a database must take the same lock. Advisory locks are per
# database, so instances in different schemas of one database also take turns.
SCHEMA_LOCK_NAME = "balancewatch.schema-upgrade"
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(SCHEMA_LOCK_NAME.encode()).digest()[:8], "big", signed=True)


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys.

    ``postgresql://`` URLs use psycopg 3 whatever driver they name.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_size=pool_size, pool_pre_ping=True, echo=echo)
    return create_engine(parsed, echo=echo)


def _sqlite_engine(url: Any, echo: bool) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and breaks
        # SAVEPOINT; SQLAlchemy emits BEGIN itself (see its SQLite notes).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so two writers queue on
        # busy_timeout instead of failing to upgrade a read lock mid-transaction.
        # Connections marked readonly=True only read and need no lock.
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def upgrade(engine: Engine) -> int:
    """Create every missing table, column and index; return the schema version.

    ``engine`` comes from :func:`make_engine`. The return value is the version
    now in place (``SCHEMA_VERSION``), also recorded as ``schema_version`` in
    ``balancewatch_meta``. Changes are additive only (balancewatch never drops
    or rewrites a column), so a database written by an older version keeps its
    data. On a database already up to date nothing is written.

    Safe to run concurrently, from any number of processes: the whole upgrade
    is one transaction that first takes a lock (PostgreSQL: an advisory lock on
    ``SCHEMA_LOCK_KEY``; SQLite: the database's write lock, which ``BEGIN
    IMMEDIATE`` takes). Others wait for it, then find the work done and return
    the same version.

    Raises ``RuntimeError`` if a missing column is NOT NULL without a server
    default, and SQLAlchemy's ``OperationalError`` if the database cannot be
    reached or (SQLite) the write lock is not free within the busy timeout;
    either way nothing is changed.
    """
    postgres = is_postgres(engine)
    with engine.connect() as conn:
        if postgres:
            # Under READ COMMITTED each statement after the lock sees what the
            # previous holder committed; a snapshot taken before the wait
            # (REPEATABLE READ) would miss its tables and create them again.
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if postgres:
                # Transaction-scoped: released by the commit or rollback, even if
                # this process dies. Taken before anything is inspected, so
                # create_all's "does it exist, then create" cannot race.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            # On SQLite the begin above was BEGIN IMMEDIATE (see _sqlite_engine),
            # which took the write lock: a second process waits on busy_timeout
            # and then sees the finished schema.
            SQLModel.metadata.create_all(conn)
            for table, column in missing_columns(conn):
                _add_column(conn, table, column)
            for index in missing_indexes(conn):
                index.create(conn)
            if get_meta(conn, "schema_version") != str(SCHEMA_VERSION):
                set_meta(conn, "schema_version", str(SCHEMA_VERSION))
    return SCHEMA_VERSION


def _tables_in_place(conn: Connection) -> Iterator[tuple[Table, Inspector]]:
    """Each model table the database already has, with an inspector of the database."""
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    for table in SQLModel.metadata.sorted_tables:
        if table.name in existing:
            yield table, inspector


def missing_indexes(conn: Connection) -> list[Index]:
    """Indexes the models declare that the tables in the database lack (a table created by an
    older version gets the ones added since), by name."""
    out = []
    for table, inspector in _tables_in_place(conn):
        have = {i["name"] for i in inspector.get_indexes(table.name)}
        out.extend(index for index in table.indexes if index.name not in have)
    return out


def missing_columns(conn: Connection) -> list[tuple[Table, Column[Any]]]:
    """Columns the tables in the database lack, compared with the models."""
    out = []
    for table, inspector in _tables_in_place(conn):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        out.extend((table, column) for column in table.columns if column.name not in have)
    return out


def _add_column(conn: Connection, table: Table, column: Column[Any]) -> None:
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    if not column.nullable and column.server_default is None:
        # A NOT NULL column needs a value for the rows already there.
        raise RuntimeError(f"cannot add {table.name}.{column.name}: NOT NULL without a server default")
    conn.exec_driver_sql(f"ALTER TABLE {conn.dialect.identifier_preparer.quote(table.name)} ADD COLUMN {ddl}")


def get_meta(session: Session | Connection, name: str) -> str | None:
    row = session.execute(select(META.c.value).where(META.c.name == name)).first()
    return row[0] if row is not None else None


def set_meta(conn: Session | Connection, name: str, value: str, now: datetime | None = None) -> None:
    """Insert or update one named value (an upsert: safe when instances start together)."""
    bind = conn if isinstance(conn, Connection) else conn.get_bind()
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    now = now or utcnow()
    stmt = dialect.insert(META).values(name=name, value=value, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[META.c.name],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
    )
    conn.execute(stmt)
