"""A bounded, thread-safe memo of what a pure function made of a key."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """The last ``limit`` results of a pure function, by key, least recently used dropped first.

    For work that depends on a file's text alone (parsing, checking, compiling), which every
    reload repeats for each unchanged file of a directory. Two threads asking for a key not yet
    kept may both compute it; the function is pure, so either result is the one kept."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """What ``make()`` returns for ``key``: computed once while kept."""
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        value = make()
        with self._lock:
            self._kept[key] = value
            while len(self._kept) > self._limit:
                self._kept.popitem(last=False)
        return value
