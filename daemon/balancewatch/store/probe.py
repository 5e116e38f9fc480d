"""``check --connect``: reach the database and say where its schema stands, creating nothing.

A SQLite file is opened read-only (a missing one is reported, not created, as
``make_engine`` would); PostgreSQL is asked over one plain connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from balancewatch.config import safe_url
from balancewatch.store import db
from balancewatch.store.tables import META_TABLE, SCHEMA_VERSION

CREATES = "`balancewatch run` or `balancewatch db upgrade` creates it"


class DatabaseCheckError(Exception):
    """The database cannot be reached or read, or ``run`` would refuse its schema; ``str()`` is
    one line, the password masked."""


class SchemaMismatchError(Exception):
    """The schema is older or newer than this balancewatch's."""


def probe_database(url: str, timeout: float = 10.0) -> str:
    """``database <url>: <where the schema stands>``, having changed nothing.

    Raises DatabaseCheckError when the server refuses, does not answer within ``timeout``
    seconds, the file is not a database, or ``run`` would refuse the schema.
    """
    shown = f"database {safe_url(url)}"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.exists():
            return f"{shown}: no database file yet: {CREATES}"
        engine = _read_only_sqlite(path)
    else:
        engine = create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            poolclass=NullPool,
            connect_args={"connect_timeout": max(1, round(timeout))},
        )
    try:
        return f"{shown}: {schema_status(engine)}"
    except SchemaMismatchError as exc:
        raise DatabaseCheckError(f"{shown}: {exc}") from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseCheckError(f"{shown}: {reason}") from None
    finally:
        engine.dispose()


def _read_only_sqlite(path: Path) -> Engine:
    # mode=ro: SQLite refuses to create the file or write to it, whatever is asked of it.
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)


def schema_status(engine: Engine) -> str:
    """``schema current``, or that there is none yet (``run`` creates it).

    Raises DatabaseCheckError for a schema ``run`` would refuse: older or newer than this
    balancewatch's.
    """
    upstream = getattr(db, "schema_status", None)  # the migrations' own answer, where they exist
    if callable(upstream):
        status = upstream(engine)
        return _judged(status.state, status.current, status.head)
    with engine.connect() as conn:
        version = db.get_meta(conn, "schema_version") if inspect(conn).has_table(META_TABLE.name) else None
    if version is None:
        return _judged("missing", None, str(SCHEMA_VERSION))
    # Before migrations, `run` brings an older schema up to date itself.
    state = "ahead" if int(version) > SCHEMA_VERSION else "current"
    return _judged(state, version, str(SCHEMA_VERSION))


def _judged(state: str, current: str | None, head: str) -> str:
    if state == "missing":
        return f"no schema yet: {CREATES}"
    if state == "current":
        return f"schema current ({current})"
    if state == "behind":
        raise SchemaMismatchError(
            f"schema at version {current}, this balancewatch needs {head}: run `balancewatch db upgrade`"
        )
    raise SchemaMismatchError(
        f"schema at version {current}, newer than this balancewatch (needs {head}): run a newer balancewatch"
    )
