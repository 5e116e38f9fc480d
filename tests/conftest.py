"""Shared fixtures: the same tests on SQLite and PostgreSQL, a real SMTP server on loopback.

PostgreSQL tests run against ``$BALANCEWATCH_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``), each in a database of its own, a copy of
one upgraded for the test process (``tests/pgdatabases.py``).
Where the server cannot be reached they are skipped, except under
``CI=true``, where they fail: CI must prove both backends.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from balancewatch.config import Settings, load_settings
from balancewatch.core import shipped
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.store.db import make_engine, upgrade
from tests.pgdatabases import Databases
from tests.smtpserver import SmtpServer

PG_URL = os.environ.get("BALANCEWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# A test still running this long after its timeout (``timeout`` in pyproject.toml: it fails in
# place) is stuck where that cannot reach it, in native code: its worker writes every thread's
# stack to a file the run prints at its end, and ends, which ends the run (``--max-worker-restart
# 0``) rather than the run waiting for ever.
STUCK_AFTER_S = 240
_STUCK_DIR = "PYTEST_STUCK_DUMP_DIR"  # not BALANCEWATCH_: the daemon reads those
_STUCK_FILE: list[TextIO] = []


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the run itself: its workers inherit this
        os.environ[_STUCK_DIR] = tempfile.mkdtemp(prefix="balancewatch-stuck-")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if not _STUCK_FILE:
        _STUCK_FILE.append((Path(os.environ[_STUCK_DIR]) / f"{os.getpid()}.txt").open("w"))
    stuck = _STUCK_FILE[0]
    stuck.seek(0)
    stuck.truncate()
    stuck.write(f"{item.nodeid} still running after {STUCK_AFTER_S}s; every thread's stack:\n")
    stuck.flush()
    faulthandler.dump_traceback_later(STUCK_AFTER_S, exit=True, file=stuck)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()
        stuck.seek(0)
        stuck.truncate()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    directory = os.environ.get(_STUCK_DIR)
    if "PYTEST_XDIST_WORKER" in os.environ or not directory:
        return
    for path in sorted(Path(directory).glob("*.txt")):
        text = path.read_text()
        if text:
            terminalreporter.section(f"stuck test (worker process {path.stem})", sep="+")
            terminalreporter.write(text)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ and os.environ.get(_STUCK_DIR):
        shutil.rmtree(os.environ.pop(_STUCK_DIR), ignore_errors=True)


# The loopback SMTP server's thread logs each closed connection, sometimes after
# pytest has closed the stream it captured: noise, not a finding.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def _pg_unavailable() -> str | None:
    try:
        engine = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to reach the server means the same thing here
        return f"PostgreSQL at {PG_URL} unavailable: {exc}"
    return None


_PG_REASON: list[str | None] = []


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when PostgreSQL cannot be reached."""
    if not _PG_REASON:
        _PG_REASON.append(_pg_unavailable())
    reason = _PG_REASON[0]
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)


def _schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def postgres_engine(schema: str) -> Iterator[Engine]:
    """An engine whose tables live in a fresh schema, dropped afterwards."""
    require_postgres()
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(_schema_url(schema))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file just upgraded, copied for each test: the copy is what ``upgrade`` makes."""
    path = tmp_path_factory.mktemp("template") / "balancewatch.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    assert [p.name for p in path.parent.iterdir()] == [path.name], "the template is one file"
    return path


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    databases = Databases(PG_URL)
    yield databases
    databases.close()


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database URL on the parametrized backend, with the schema created."""
    if backend == "sqlite":
        path = tmp_path / "balancewatch.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    require_postgres()
    fresh = request.getfixturevalue("pg_databases").fresh()
    if fresh is not None:
        yield from fresh
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    for engine in postgres_engine(schema):
        upgrade(engine)
        yield _schema_url(schema)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    path = tmp_path / "rules"
    path.mkdir()
    return path


def write_rules(directory: Path, body: str, name: str = "rules.yaml") -> Path:
    path = directory / name
    path.write_text(body)
    return path


@pytest.fixture
def make_settings(tmp_path: Path, rules_dir: Path) -> Callable[..., Settings]:
    """Settings for a test: state in tmp_path, the test's rules, the shipped templates."""

    def make(db: str | None = None, **env: str) -> Settings:
        environ = {
            "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
            "BALANCEWATCH_RULES_DIR": str(rules_dir),
            "BALANCEWATCH_TEMPLATES_DIR": str(shipped.templates_dir()),
            "BALANCEWATCH_DELIVERY__FROM": "Balance alerts <alerts@platform.example>",
        }
        if db:
            environ["BALANCEWATCH_DATABASE__URL"] = db
        environ.update({f"BALANCEWATCH_{k.upper()}": v for k, v in env.items()})
        return load_settings(None, environ)

    return make


@pytest.fixture
def live_from(rules_dir: Path) -> Callable[[str], LiveSet]:
    """Write a rule file and load the live set from it (with the shipped templates)."""

    def load(body: str) -> LiveSet:
        write_rules(rules_dir, body)
        return load_set(rules_dir, shipped.templates_dir())

    return load


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


class Clock:
    """A clock the test moves; nothing sleeps."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: Any) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()
