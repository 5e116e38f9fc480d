"""Which process this is, and whether another process on this machine is gone.

An instance records its identity beside its heartbeat. Another instance on the
same machine (same boot, same PID namespace) can then tell at once that it
died — a kill -9, a crash, an OOM kill — instead of waiting for its heartbeat
to go stale. The start time guards against a reused PID. Anything that cannot
be known (no ``/proc``, another machine, another PID namespace, a ``/proc``
that hides other users' processes) answers "cannot tell", never "gone": a
live instance must never be taken for dead.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

PROC = Path("/proc")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or ''."""
    stat = _read(PROC / str(pid) / "stat")
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _machine() -> str:
    boot = _read(PROC / "sys/kernel/random/boot_id")
    try:
        namespace = str((PROC / "self/ns/pid").readlink())
    except OSError:
        namespace = ""
    return f"{boot}/{namespace}" if boot and namespace else ""


@lru_cache(maxsize=1)
def _identity_of(pid: int) -> str:
    machine, started = _machine(), _start_ticks(pid)
    return f"{machine}/{pid}/{started}" if machine and started else ""


def identity() -> str:
    """This process as ``boot-id/pid-namespace/pid/start-ticks``; '' where /proc cannot tell."""
    return _identity_of(os.getpid())


def gone(process: str | None) -> bool:
    """True only when ``process`` (an ``identity()``) ran on this machine and has ended.

    False when it is alive, or when that cannot be told from here.
    """
    parts = (process or "").split("/")
    if len(parts) != 4 or not parts[2].isdigit() or "/".join(parts[:2]) != _machine():
        return False
    pid, started = int(parts[2]), parts[3]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user; its start time may still say it is another process
    except OSError:
        return False
    now_started = _start_ticks(pid)
    # Unreadable (a /proc hiding other users' processes): alive, as far as we can tell.
    return bool(now_started) and now_started != started


def default_processes() -> int:
    """Worker processes for work that holds the interpreter lock (rendering): one per core; 0
    (work in this process) on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if cores > 1 else 0
