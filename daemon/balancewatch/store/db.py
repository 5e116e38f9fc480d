"""Engines and the schema: SQLite with WAL by default, PostgreSQL at scale; migrations with Alembic."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlmodel import Session, SQLModel

from balancewatch.store import drift, notify
from balancewatch.store.drift import SchemaError
from balancewatch.store.tables import META_TABLE, SCHEMA_VERSION, utcnow

__all__ = ["SchemaError", "SchemaStatus", "make_engine", "schema_status", "upgrade"]

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


# Alembic's INFO lines ("Context impl SQLiteImpl.", "Running upgrade ...") repeat what
# upgrade() announces, less clearly; its warnings still show.
logging.getLogger("alembic").setLevel(logging.WARNING)

# The Alembic environment and revisions, shipped inside the package.
MIGRATIONS = Path(__file__).with_name("migrations")
# Revision ids are the schema versions, zero-padded: "0005" is SCHEMA_VERSION 5.
HEAD = f"{SCHEMA_VERSION:04d}"

SchemaState = Literal["missing", "behind", "current", "ahead"]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands against the migrations this balancewatch ships.

    ``current`` is the revision recorded (in ``alembic_version``, or for a
    database made before migrations, ``schema_version`` in ``balancewatch_meta``
    as ``"000N"``), None when there is no schema; ``pending`` the revisions
    ``upgrade`` would apply, oldest first.
    """

    current: str | None
    head: str
    state: SchemaState
    pending: tuple[str, ...]

    def describe(self) -> str:
        """One line for people: ``0005 (head)``, ``0003; 2 revisions behind: ...``."""
        if self.state == "missing":
            return "no schema: run `balancewatch db upgrade`"
        if self.state == "current":
            return f"{self.current} (head)"
        if self.state == "behind":
            n = len(self.pending)
            behind = f"{n} revision{'s' if n != 1 else ''} behind"
            return f"{self.current}; {behind}: run `balancewatch db upgrade`"
        return f"{self.current}; newer than this balancewatch (head {self.head}): run a newer balancewatch"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini): the shipped scripts, run on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def revision_doc(revision: str) -> str:
    """What a revision does, in a few words (its message)."""
    script = _scripts().get_revision(revision)
    return script.doc if script is not None else ""


def _pending(current: str | None) -> tuple[str, ...] | None:
    """The revisions after ``current`` up to head, oldest first; None if ``current`` is unknown here."""
    scripts = _scripts()
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        return None
    return tuple(reversed([s.revision for s in scripts.iterate_revisions(HEAD, current or "base")]))


def recorded_revision(conn: Connection) -> tuple[str | None, bool]:
    """The revision the database records, and whether it came from the pre-migration ``schema_version``."""
    inspector = inspect(conn)
    if inspector.has_table("alembic_version"):
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        if row is not None:
            return str(row[0]), False
    if inspector.has_table(META_TABLE.name):
        version = get_meta(conn, "schema_version")
        if version is not None:
            return (f"{int(version):04d}" if version.isdigit() else version), True
    return None, False


def _status_of(current: str | None) -> SchemaStatus:
    pending = _pending(current)
    if pending is None:
        return SchemaStatus(current, HEAD, "ahead", ())
    if current is None:
        return SchemaStatus(None, HEAD, "missing", pending)
    return SchemaStatus(current, HEAD, "behind" if pending else "current", pending)


def missing_status() -> SchemaStatus:
    """The status of a database with no schema (or no file) yet."""
    return _status_of(None)


def sqlite_file(url: URL | str) -> Path | None:
    """The file a SQLite URL names (None for PostgreSQL or an in-memory database)."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def schema_status(engine: Engine) -> SchemaStatus:
    """Where the schema of ``engine``'s database stands; creates nothing, writes nothing.

    A SQLite file that does not exist is "missing" without being opened (opening
    would create it). Raises SQLAlchemy's ``OperationalError`` if the database
    cannot be reached.
    """
    file = sqlite_file(engine.url)
    if file is not None and not file.is_file():
        return missing_status()
    # readonly: on SQLite a plain BEGIN, not BEGIN IMMEDIATE: asking takes no write lock.
    with engine.connect().execution_options(readonly=True) as conn:
        current, _ = recorded_revision(conn)
    return _status_of(current)


Announce = Callable[[str], None]


def upgrade(engine: Engine, announce: Announce | None = None, *, notify_channel: str | None = None) -> int:
    """Bring the schema to this version's (Alembic ``upgrade head``); return the version now in place.

    ``engine`` comes from :func:`make_engine`. An empty database gets the whole
    schema. A database the hand-written upgrade of older versions made
    (``schema_version`` N in ``balancewatch_meta``, no ``alembic_version``) is
    first stamped at revision N, then upgraded. After the migrations, whatever
    the models declare and the database lacks (a table, a nullable or defaulted
    column, an index) is created, and ``schema_version`` is recorded in
    ``balancewatch_meta`` for older tools. A revision that replaces a column
    carries its values over first. On a database already up to date nothing
    is written. ``announce`` is told each step as it starts, one line. On PostgreSQL with
    ``notify_channel``, the trigger that announces changed balances on it is installed
    (``store.notify``); with None, one installed before is left as it is.

    Safe to run concurrently, from any number of processes: the whole upgrade
    is one transaction that first takes a lock (PostgreSQL: an advisory lock on
    ``SCHEMA_LOCK_KEY``; SQLite: the database's write lock, which ``BEGIN
    IMMEDIATE`` takes). Others wait for it, then find the work done and return
    the same version.

    Raises :class:`SchemaError` (a ``RuntimeError``, with a one-line message)
    if the database was made by a newer balancewatch, lacks a NOT NULL column
    that has no server default, or still differs from the models after the
    repair; SQLAlchemy's ``OperationalError`` if the database cannot be reached or
    (SQLite) the write lock is not free within the busy timeout; in every case
    nothing is changed.
    """
    say = announce or (lambda _line: None)
    with _locked(engine) as conn:
        current, legacy = recorded_revision(conn)
        status = _status_of(current)
        if status.state == "ahead":
            raise SchemaError(
                f"the database schema is at {current}, newer than this balancewatch knows ({HEAD})"
            )
        if current is None:
            _create(conn, say)
        else:
            if legacy:
                # Made by the hand-written upgrade: its schema_version is the revision it reached.
                command.stamp(alembic_config(conn), current)
            for revision in status.pending:
                say(f"applying {revision}: {revision_doc(revision)}")
                command.upgrade(alembic_config(conn), revision)
        found = drift.reflect(conn)
        repaired = drift.repair(conn, found)
        for line in repaired:
            say(f"repairing: {line}")
        if notify_channel is not None and is_postgres(conn.engine) and notify.install(conn, notify_channel):
            say(f"installing the trigger that announces balance changes (NOTIFY {notify_channel})")
        # Nothing repaired: the tables are as just reflected (the trigger changes none of them).
        left = drift.differences(conn, None if repaired else found)
        if left:
            raise SchemaError(f"after upgrading, the schema still differs from {HEAD}'s: {'; '.join(left)}")
        if get_meta(conn, "schema_version") != str(SCHEMA_VERSION):
            set_meta(conn, "schema_version", str(SCHEMA_VERSION))
    return SCHEMA_VERSION


def _create(conn: Connection, say: Announce) -> None:
    """A database with no schema recorded: every table at head, then stamped head.

    create_all of the models is what the revisions build, step by step
    (tests/test_migrations.py proves it), in one step. It also keeps tables a
    billing system created before balancewatch first ran (``account``,
    ``balance``): the repair then adds what they lack.
    """
    say(f"creating the schema at {HEAD}")
    SQLModel.metadata.create_all(conn)
    command.stamp(alembic_config(conn), HEAD)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction holding the schema lock; committed on leaving, rolled back on error."""
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
                # this process dies. Taken before anything is inspected, so no
                # "does it exist, then create" can race.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            # On SQLite the begin above was BEGIN IMMEDIATE (see _sqlite_engine),
            # which took the write lock: a second process waits on busy_timeout
            # and then sees the finished schema.
            yield conn


def get_meta(session: Session | Connection, name: str) -> str | None:
    row = session.execute(select(META_TABLE.c.value).where(META_TABLE.c.name == name)).first()
    return row[0] if row is not None else None


def set_meta(conn: Session | Connection, name: str, value: str, now: datetime | None = None) -> None:
    """Insert or update one named value (an upsert: safe when instances start together)."""
    bind = conn if isinstance(conn, Connection) else conn.get_bind()
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    now = now or utcnow()
    stmt = dialect.insert(META_TABLE).values(name=name, value=value, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[META_TABLE.c.name],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
    )
    conn.execute(stmt)
