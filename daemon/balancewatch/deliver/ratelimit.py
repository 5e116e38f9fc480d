"""At most so many messages a second through one channel, evenly spaced.

Chat services limit how often a sender may post (Slack about one message a second per
channel, Telegram about thirty a second per bot); a burst of alerts over that gets refused or
dropped. ``RateLimit`` spaces the sends one every ``1/rate`` seconds, with a burst of one:
the first goes at once, each next one no sooner than ``1/rate`` after the one before.
A shutdown ends a wait early, so stopping never waits for the next slot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

# Wait ``seconds``, or less if the event is set; True when it ended because the event was set.
# Tests pass one that advances a fake clock instead of sleeping.
Sleep = Callable[[float, threading.Event | None], bool]


def interruptible_sleep(seconds: float, stopping: threading.Event | None) -> bool:
    """Wait ``seconds`` or until ``stopping`` is set; True if it was set."""
    if stopping is None:
        time.sleep(seconds)
        return False
    return stopping.wait(seconds)


class RateLimit:
    """Lets at most ``rate`` callers a second through ``wait``; ``rate`` 0 means no limit.

    Thread-safe: each caller reserves the next free slot under a lock and waits for it
    outside the lock, so callers pass in the order they asked, one ``1/rate`` apart.
    """

    def __init__(
        self,
        rate: Decimal,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = interruptible_sleep,
    ) -> None:
        if rate < 0:
            raise ValueError(f"a rate is 0 (no limit) or more, not {rate}")
        self.rate = rate
        # Decimal keeps a rate like 0.1 exact until the one conversion to seconds here.
        self.interval = float(1 / rate) if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # when the next caller may pass; None before the first

    def wait(self, stopping: threading.Event | None = None) -> bool:
        """Block until this caller's turn; True when it may send now.

        Returns False at once, or as soon as it is set during the wait, when ``stopping`` is
        set: the caller is to stop instead of sending. Never sleeps when ``rate`` is 0.
        """
        if stopping is not None and stopping.is_set():
            return False
        if not self.interval:
            return True
        with self._lock:
            now = self._clock()
            slot = now if self._next is None else max(now, self._next)
            self._next = slot + self.interval
        # A sleep may end early (a signal, a coarse timer): wait again for what is left.
        while (left := slot - self._clock()) > 0:
            if self._sleep(left, stopping):
                return False
        return not (stopping is not None and stopping.is_set())
