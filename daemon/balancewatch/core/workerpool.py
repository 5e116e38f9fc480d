"""Worker processes for work that holds the interpreter lock (building and rendering): spawned,
each started by an initializer, each ending itself once its parent is gone.

Spawned, not forked: the daemon's threads (scheduler, watchdog, connections) and their locks stay
out of the workers. A worker whose parent was killed would otherwise wait for work for ever, since
it holds an end of the pipe it waits on itself: a thread of each worker ends it once its parent
has gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PARENT_CHECK = 1.0  # seconds between a worker's looks at whether its parent is still there


def spawned_pool(processes: int, start: Callable[[Any], None], setup: Any) -> ProcessPoolExecutor:
    """A pool of ``processes`` spawned workers, each running ``start(setup)`` first (both
    picklable: a module-level function and plain data)."""
    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_begin,
        initargs=(start, setup),
    )


def _begin(start: Callable[[Any], None], setup: Any) -> None:
    threading.Thread(target=_end_with, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    start(setup)


def _end_with(parent: int) -> None:
    """End this worker once its parent has gone (killed, say)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(0)
