"""Job failures as a sysadmin wants to read them: an outage is one warning a minute, not a
traceback a second, and its end is logged once.

The daemon's jobs run every few seconds; while the database is down every one
of them fails every time. ``FailureLog`` turns that into: one warning when the
database becomes unreachable, one a minute while it stays so, one when it
answers again (with how long it was away). Any other failure is logged with
its traceback the first time and then at most once a minute per job while it
keeps failing the same way, with the count of repeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from balancewatch.core.durations import format_duration

log = logging.getLogger("balancewatch.runtime.service")

REPEAT_EVERY = 60.0  # seconds between two lines about the same ongoing failure


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached or used right now (rather than a bug)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def first_line(exc: BaseException) -> str:
    """The error without its SQL, parameters or traceback: what a log line shows."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0]}" if text else type(inner).__name__


@dataclass
class _Repeating:
    since: float
    last_logged: float
    count: int = 1


class FailureLog:
    """Thread-safe; ``clock`` is monotonic seconds (passed in for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = REPEAT_EVERY) -> None:
        self.clock, self.every = clock, every
        self._lock = threading.Lock()
        self._down: _Repeating | None = None
        self._failing: dict[str, _Repeating] = {}

    @property
    def database_down(self) -> bool:
        with self._lock:
            return self._down is not None

    def failed(self, job: str, exc: BaseException) -> None:
        """Log that ``job`` failed with ``exc``, unless the same was said less than a minute ago."""
        now = self.clock()
        with self._lock:
            if database_unavailable(exc):
                self._database_failed(job, exc, now)
            else:
                self._job_failed(job, exc, now)

    def succeeded(self, job: str) -> None:
        """``job`` ran through: the database answers; a failure it had is over."""
        now = self.clock()
        with self._lock:
            down, self._down = self._down, None
            failing = self._failing.pop(job, None)
        if down is not None:
            log.warning(
                "database reachable again after %s; carrying on where the jobs left off",
                _span(now - down.since),
            )
        if failing is not None:
            log.info("%s works again after %d failures", job, failing.count)

    def _database_failed(self, job: str, exc: BaseException, now: float) -> None:
        if self._down is None:
            self._down = _Repeating(now, now)
            log.warning(
                "database unreachable (%s: %s); every job waits and retries, nothing is lost",
                job,
                first_line(exc),
            )
            return
        self._down.count += 1
        if now - self._down.last_logged >= self.every:
            self._down.last_logged = now
            log.warning(
                "database still unreachable after %s (%s)", _span(now - self._down.since), first_line(exc)
            )

    def _job_failed(self, job: str, exc: BaseException, now: float) -> None:
        failing = self._failing.get(job)
        if failing is None:
            self._failing[job] = _Repeating(now, now)
            log.error("%s failed; retrying at its next run", job, exc_info=exc)
            return
        failing.count += 1
        if now - failing.last_logged >= self.every:
            failing.last_logged = now
            log.error("%s still failing (%d times so far): %s", job, failing.count, first_line(exc))


def _span(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))
