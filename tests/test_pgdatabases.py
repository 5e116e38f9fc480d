"""The test suite's PostgreSQL databases: copies of an upgraded one, and none left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, inspect, text

from balancewatch.store import drift
from balancewatch.store.db import make_engine
from tests.conftest import PG_URL, require_postgres
from tests.pgdatabases import PREFIX, Databases, _drop_left_behind

pytestmark = pytest.mark.postgres


@pytest.fixture
def admin() -> Iterator[Connection]:
    require_postgres()
    engine = make_engine(PG_URL)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn
    engine.dispose()


def databases(conn: Connection) -> set[str]:
    return set(conn.execute(text("SELECT datname FROM pg_database")).scalars())


def test_a_copy_has_the_whole_schema_and_is_dropped_afterwards(admin: Connection) -> None:
    made = Databases(PG_URL)
    try:
        fresh = made.fresh()
        assert fresh is not None
        url = next(fresh)
        engine = make_engine(url)
        with engine.connect() as conn:
            assert drift.differences(conn) == []
            assert "alembic_version" in inspect(conn).get_table_names()
        engine.dispose()
        name = url.rsplit("/", 1)[1]
        assert name in databases(admin)
        fresh.close()  # the test is over
        assert name not in databases(admin)
    finally:
        made.close()
    assert made.template not in databases(admin)


def test_the_databases_of_a_test_process_that_died_are_dropped_and_others_kept(admin: Connection) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead, alive = f"{PREFIX}{int(gone.stdout)}_left", f"{PREFIX}{os.getpid()}_kept"
    for name in (dead, alive):
        admin.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        _drop_left_behind(admin)
        found = databases(admin)
        assert dead not in found and alive in found
    finally:
        for name in (dead, alive):
            admin.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
