"""A fresh PostgreSQL database for each test, copied from one upgraded template per test process.

``CREATE DATABASE ... TEMPLATE`` copies an upgraded database in about 25 ms, where creating a
schema and upgrading it takes about 0.4 s; the copy is the template byte for byte, so each test
still starts from exactly what ``upgrade`` makes. Databases are named ``bwtest_<host>_<pid>_...``
after the machine and test process that made them: one left behind by a process of this machine
that died is dropped by the next run (a server shared with other machines keeps theirs). Where
the role may not create databases, each test gets a schema of its own instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from balancewatch.store.db import make_engine, upgrade

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
PREFIX = f"bwtest_{HOST}_"
_OURS = re.compile(rf"^{PREFIX}(\d+)_")


class Databases:
    """Copies of one upgraded database on the server at ``base_url``, made on demand."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.pid = os.getpid()
        self.template = f"{PREFIX}{self.pid}_template_{uuid.uuid4().hex[:8]}"
        self._admin: Engine | None = None
        self._ready: bool | None = None  # None: not tried; False: the role may not create databases

    def url(self, name: str) -> str:
        return make_url(self.base_url).set(database=name).render_as_string(hide_password=False)

    def fresh(self) -> Iterator[str] | None:
        """A new database's URL, dropped afterwards; None where databases cannot be created."""
        if not self._prepare():
            return None
        return self._copy()

    def _copy(self) -> Iterator[str]:
        name = f"{PREFIX}{self.pid}_{uuid.uuid4().hex[:12]}"
        with self._connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY WAL_LOG'))
        try:
            yield self.url(name)
        finally:
            with self._connect() as conn:
                # FORCE: a daemon the test killed may still hold a connection.
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Drop the template (once no test needs it)."""
        if self._ready:
            with self._connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))
        if self._admin is not None:
            self._admin.dispose()

    def _prepare(self) -> bool:
        if self._ready is None:
            try:
                with self._connect() as conn:
                    _drop_left_behind(conn)
                    conn.execute(text(f'CREATE DATABASE "{self.template}"'))
            except DBAPIError as exc:
                if "permission denied" not in str(exc.orig):
                    raise
                self._ready = False
                return False
            engine = make_engine(self.url(self.template))
            try:
                upgrade(engine)
            finally:
                engine.dispose()  # a template with a connection open cannot be copied
            self._ready = True
        return self._ready

    def _connect(self) -> Connection:
        if self._admin is None:
            self._admin = make_engine(self.base_url)
        return self._admin.connect().execution_options(isolation_level="AUTOCOMMIT")


def _drop_left_behind(conn: Connection) -> None:
    """Drop the databases of test processes that are gone."""
    names = conn.execute(
        text("SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)"), {"prefix": PREFIX}
    ).scalars()
    for name in list(names):
        found = _OURS.match(name)
        if found is not None and not _alive(int(found.group(1))):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
