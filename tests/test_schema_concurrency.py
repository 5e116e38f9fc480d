"""Instances that start together create and upgrade the schema one at a time.

Each concurrency test starts real `balancewatch db upgrade` processes, lets them
import and set up, and then releases them all at the same instant (they block
reading one pipe; closing its write end wakes every reader). Every wait has a
deadline; nothing sleeps.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from balancewatch.store.db import HEAD, alembic_config, get_meta, make_engine, upgrade
from balancewatch.store.drift import differences
from balancewatch.store.tables import SCHEMA_VERSION
from tests.conftest import _schema_url, postgres_engine, require_postgres

PROCESSES = 6
# Deadlines, reached only when something hangs: starting Python and importing
# balancewatch in six processes at once is slow on a small, busy CI machine.
STARTUP_DEADLINE = 60.0  # seconds until every process is ready
RUN_DEADLINE = 30.0  # seconds from the start signal until every process has exited

# Each process signals that it is ready (imports done), then blocks until the
# start signal: EOF on the "go" pipe, which every process sees at once.
CHILD = """
import os, sys
from balancewatch.cli import main
ready, go = int(sys.argv[1]), int(sys.argv[2])
os.write(ready, b".")
os.close(ready)
os.read(go, 1)
sys.exit(main(["db", "upgrade"]))
"""


@dataclass
class Finished:
    """One `db upgrade` process after it exited."""

    code: int
    out: str
    err: str


def upgrade_at_once(url: str, tmp_path: Path, processes: int = PROCESSES) -> list[Finished]:
    """Run `balancewatch db upgrade` on ``url`` in ``processes`` processes released together."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
    environ |= {
        "BALANCEWATCH_DATABASE__URL": url,
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
        "BALANCEWATCH_LOG__LEVEL": "warning",
    }
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    started: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    try:
        for n in range(processes):
            out, err = tmp_path / f"upgrade-{n}.out", tmp_path / f"upgrade-{n}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(ready_w), str(go_r)],
                    pass_fds=(ready_w, go_r),
                    env=environ,
                    cwd=tmp_path,
                    stdout=stdout,
                    stderr=stderr,
                )
            started.append((process, out, err))
        # Only the children may hold the ready pipe's write end, so that EOF means they all let go of it.
        os.close(ready_w)
        ready_w = -1
        _wait_for_bytes(ready_r, processes, time.monotonic() + STARTUP_DEADLINE)
        os.close(go_w)  # the start signal
        go_w = -1
        deadline = time.monotonic() + RUN_DEADLINE
        finished = []
        for process, out, err in started:
            code = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            finished.append(Finished(code, out.read_text(errors="replace"), err.read_text(errors="replace")))
        return finished
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            if fd >= 0:
                os.close(fd)
        for process, _, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def _wait_for_bytes(fd: int, count: int, deadline: float) -> None:
    """Read ``count`` bytes from ``fd``; fail at ``deadline`` or if every writer closed first."""
    got = 0
    while got < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {got} of {count} processes were ready within {STARTUP_DEADLINE}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, count - got)
            if not chunk:
                raise AssertionError(f"only {got} of {count} processes became ready; the others exited")
            got += len(chunk)


def assert_all_succeeded(finished: list[Finished], first_step: str = "creating the schema") -> None:
    """Every process exited 0 and reported the head revision; exactly one did the work (``first_step``)."""
    failures = [f"exit {f.code}:\n{f.err}" for f in finished if f.code != 0]
    assert failures == [], "\n\n".join(failures)
    assert {f.out.splitlines()[-1].split(" in ")[0] for f in finished} == {f"schema at {HEAD} (head)"}
    workers = [f for f in finished if f.out.startswith(first_step)]
    assert len(workers) == 1, [f.out for f in finished]


def assert_schema_complete(engine: Engine) -> None:
    """Every table, column and named index of the models is there, and the version is recorded both ways."""
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == {*SQLModel.metadata.tables, "alembic_version"}
    for table in SQLModel.metadata.sorted_tables:
        have = {index["name"] for index in inspector.get_indexes(table.name)}
        assert {index.name for index in table.indexes} <= have, table.name
    with engine.connect() as conn:
        assert differences(conn) == []
        assert get_meta(conn, "schema_version") == str(SCHEMA_VERSION)
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]


def assert_one_transaction_did_all_the_work(engine: Engine) -> None:
    """PostgreSQL: one transaction created the schema and recorded its version; the rest had nothing to do.

    xmin names the transaction that last wrote a row: here the catalogue rows
    of every table, index and sequence in the schema, the version's row and the revision's.
    """
    with engine.connect() as conn:
        writers = conn.execute(
            text(
                "SELECT xmin::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                "UNION SELECT xmin::text FROM balancewatch_meta WHERE name = 'schema_version' "
                "UNION SELECT xmin::text FROM alembic_version"
            )
        ).scalars()
        assert len(set(writers)) == 1


def schema_snapshot(engine: Engine) -> dict[str, Any]:
    """Everything an upgrade could change: tables, columns, indexes, meta rows and revision, as stored."""
    inspector = inspect(engine)
    tables = {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
            sorted(
                (i["name"] or "", tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(name)
            ),
        )
        for name in sorted(inspector.get_table_names())
    }
    with engine.connect() as conn:
        meta = conn.execute(text("SELECT name, value, updated_at FROM balancewatch_meta ORDER BY name")).all()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    return {"tables": tables, "meta": [tuple(row) for row in meta], "revision": [tuple(r) for r in revision]}


@pytest.fixture
def empty_postgres() -> Iterator[tuple[str, Engine]]:
    """The URL of a fresh, empty PostgreSQL schema and an engine on it."""
    require_postgres()
    schema = "t_" + uuid.uuid4().hex[:12]
    for engine in postgres_engine(schema):
        yield _schema_url(schema), engine


@pytest.mark.postgres
def test_six_processes_upgrading_an_empty_postgres_database_at_once_all_succeed(
    empty_postgres: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = empty_postgres

    assert_all_succeeded(upgrade_at_once(url, tmp_path))

    assert_schema_complete(engine)
    assert_one_transaction_did_all_the_work(engine)


@pytest.mark.postgres
def test_six_processes_upgrading_a_postgres_database_at_an_older_revision_at_once_apply_each_revision_once(
    empty_postgres: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = empty_postgres
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")

    assert_all_succeeded(upgrade_at_once(url, tmp_path), first_step="applying 0004: ")

    assert_schema_complete(engine)


def test_six_processes_upgrading_an_empty_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'balancewatch.db'}"

    assert_all_succeeded(upgrade_at_once(url, tmp_path))

    engine = make_engine(url)
    try:
        assert_schema_complete(engine)
    finally:
        engine.dispose()


def test_upgrading_an_up_to_date_database_changes_nothing_and_returns_the_same_version(
    engine: Engine,
) -> None:
    before = schema_snapshot(engine)
    assert ("schema_version", str(SCHEMA_VERSION)) in [row[:2] for row in before["meta"]]

    assert upgrade(engine) == SCHEMA_VERSION

    assert schema_snapshot(engine) == before
