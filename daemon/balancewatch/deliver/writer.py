"""A thread of its own that runs a courier's database writes one at a time, so that a write (an
email's outcome, committed: on PostgreSQL a round trip and a wait for the disk) goes on while the
courier builds and starts to send the next message; the courier waits for it before the server
can accept that message (``deliver/records.py``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Job = tuple["Future[Any]", Callable[[], Any]]


class Writer:
    """Runs the jobs given to ``submit`` in order on one daemon thread (started at the first):
    a process exits without waiting for a write that hangs; the courier waits for each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        """``job``'s future: its result, or what it raised."""
        future: Future[Any] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._jobs.put((future, job))
        return future

    def _run(self) -> None:
        while True:
            future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the courier waiting for it
                future.set_exception(exc)
