"""systemd's watchdog: ``WATCHDOG=1`` sent only while the poll loop makes progress.

Under a unit with ``WatchdogSec=``, systemd sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``) and restarts the service when no ping arrives within that
time. A ping that came from a timer thread alone would prove only that the
process exists; these pings prove that balances are still being looked at:
the daemon calls :meth:`Watchdog.progressed` each time an evaluation (a poll
or a sweep, or a batch of a long sweep) ends, successfully or not (a database
that refuses connections is an outage the daemon rides out itself; a restart
would not help). A database that hangs, or a scheduler that no longer runs the
poll, stops the progress, then the pings, and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from balancewatch.core import sdnotify

log = logging.getLogger(__name__)

Notify = Callable[[str], bool]


def interval_from(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """systemd's watchdog timeout in seconds for this process, or None when it asks for no pings.

    ``$WATCHDOG_PID``, when set, must be this process (a child of the service must not ping).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1_000_000


class Watchdog:
    """Pings every ``timeout / 2`` seconds while progress is at most ``patience`` seconds old.

    ``patience`` is how long the poll loop may go without progress before it
    counts as stuck: the poll interval plus half the watchdog timeout, so a
    poll that is late by half a timeout stops the pings and systemd acts
    within one more timeout.
    """

    def __init__(
        self,
        timeout: float,
        patience: float,
        notify: Notify = sdnotify.notify,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = timeout / 2
        self.patience = patience
        self._notify = notify
        self._clock = clock
        self._last = clock()
        self._stuck_logged = False
        self._lock = threading.Lock()

    def progressed(self) -> None:
        """The poll loop moved on: an evaluation, or a batch of one, ended."""
        with self._lock:
            self._last = self._clock()
            if self._stuck_logged:
                log.info("balances are being looked at again: watchdog pings resume")
                self._stuck_logged = False

    def tick(self) -> bool:
        """Ping if progress is recent enough; return whether a ping went out."""
        with self._lock:
            quiet = self._clock() - self._last
            if quiet <= self.patience:
                return self._notify("WATCHDOG=1")
            if not self._stuck_logged:
                log.error(
                    "no poll of balances has ended for %ds: stopping the watchdog pings, "
                    "so systemd restarts balancewatch",
                    int(quiet),
                )
                self._stuck_logged = True
            return False

    def run(self, stopping: threading.Event) -> None:
        """Tick every ``every`` seconds until ``stopping`` is set (a thread's target)."""
        self.tick()
        while not stopping.wait(self.every):
            self.tick()

    def start(self, stopping: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stopping,), name="watchdog", daemon=True)
        thread.start()
        return thread
