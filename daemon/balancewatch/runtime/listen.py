"""Hearing of changed balances at once on PostgreSQL: ``LISTEN`` on the notification channel.

A thread of its own holds one connection (autocommit, outside the pool) listening on
``database.notify_channel``; each notification, or burst of them, calls ``changed`` in
that thread: the daemon's evaluation, run at once (one at a time with the timed poll's),
after which what arrived meanwhile makes one more. The timed poll goes on beside it, the safety
net for a notification lost with a connection: a broken connection is logged once, and
the listener connects and listens again with backoff (1 s, doubling to 30 s), asking for
a poll each time it is back, since changes made meanwhile were not announced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

WAIT = 1.0  # seconds between looks at ``stopping`` while no notification comes
DRAIN = 0.005  # seconds more to gather the rest of a burst
RETRY_FIRST, RETRY_MOST = 1.0, 30.0


def libpq_dsn(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (its query kept as options)."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class BalanceListener:
    """Listens on ``channel`` of the database at ``url`` until ``stopping`` is set."""

    def __init__(
        self, url: str, channel: str, changed: Callable[[], None], stopping: threading.Event
    ) -> None:
        self.dsn, self.channel, self.changed, self.stopping = libpq_dsn(url), channel, changed, stopping
        self.listening = threading.Event()  # set while a connection listens (tests wait on it)
        self.heard = 0  # notifications received, for status and tests
        # How the connection shows in pg_stat_activity: a sysadmin sees who listens on what.
        self.application_name = f"balancewatch listen {channel}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="listen", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay, failed = RETRY_FIRST, False
        while not self.stopping.is_set():
            try:
                with psycopg.connect(
                    self.dsn, autocommit=True, connect_timeout=10, application_name=self.application_name
                ) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.listening.set()
                    if failed:
                        log.info("listening for balance changes again (NOTIFY %s)", self.channel)
                    else:
                        log.info("listening for balance changes (NOTIFY %s)", self.channel)
                    self.changed()  # what changed while nobody listened
                    delay, failed = RETRY_FIRST, False
                    self._serve(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                if self.stopping.is_set():
                    return
                if not failed:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    log.warning(
                        "cannot listen for balance changes (%s): polling only until the connection is back",
                        reason,
                    )
                failed = True
                self.stopping.wait(delay)
                delay = min(delay * 2, RETRY_MOST)
        self.listening.clear()

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        """Call ``changed`` at each notification until ``stopping`` (the daemon folds a burst
        into one poll); raises psycopg.Error when the connection breaks."""
        while not self.stopping.is_set():
            if list(conn.notifies(timeout=WAIT, stop_after=1)):
                # And whatever came with it (a burst, or what queued during the last poll):
                # one poll for all of them.
                for _more in conn.notifies(timeout=DRAIN):
                    pass
                self.heard += 1
                self.changed()
            else:
                # Nothing within WAIT: make sure the connection is alive (waiting for
                # notifications does not notice a server that went away while idle).
                conn.execute("SELECT 1")
