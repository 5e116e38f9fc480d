"""Runs asked for while a job is already running: kept, not dropped.

The scheduler runs each job at most once at a time and drops a run asked for
while one is in progress. For delivery that loses the request: a poll that
decides alerts while the delivery job is in its last batch asks for a run, the
request is dropped, the running job ends without looking again, and the new
alerts wait for the next tick (``delivery.interval``). ``Reruns`` remembers
such a request and the running job goes round once more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Reruns:
    """Which jobs are running, and which were asked to run again meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()

    def request(self, name: str) -> bool:
        """Ask for ``name`` to run. True: it is running and will run once more when this run
        ends (however many requests came); False: it is not running, the caller schedules it."""
        with self._lock:
            if name in self._running:
                self._again.add(name)
                return True
            return False

    def run(self, name: str, work: Callable[[], None], stopping: threading.Event) -> None:
        """Run ``work``, and again for as long as runs were asked for while it ran (never once
        ``stopping`` is set). An exception ends the runs; the job's next tick tries again."""
        with self._lock:
            self._running.add(name)
        try:
            while True:
                work()
                with self._lock:
                    # Checked, cleared and left under the lock ``request`` takes: a request
                    # either lands before this (one more round) or finds the job not running.
                    if name not in self._again or stopping.is_set():
                        self._running.discard(name)
                        self._again.discard(name)
                        return
                    self._again.discard(name)
        except BaseException:
            with self._lock:
                self._running.discard(name)
                self._again.discard(name)
            raise
