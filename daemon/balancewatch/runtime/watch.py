"""Watching directories for writes: what the daemon's hot reload and the template preview share.

A :class:`DirectoryWatch` watches directories recursively (a ConfigMap's files
live in a ``..data`` subdirectory) for writes, renames and removals only:
opening and reading a file, which every check does, must not wake a watcher,
or it would wake itself. A watch follows the directory it was made on, so
``follow`` is called before each check: a directory replaced since (renamed
over, re-created, a symlink pointed elsewhere) is watched anew.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger(__name__)

WRITE_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    DirModifiedEvent,
]


class FileEvents(FileSystemEventHandler):
    """Passes every file event that may change a file to ``seen``; reads are left out."""

    def __init__(self, seen: Callable[[FileSystemEvent], None]) -> None:
        self.seen = seen

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads change nothing
        self.seen(event)


class DirectoryWatch:
    """Calls ``seen`` for each write under the directories it follows.

    ``unwatchable(directory, error)`` is told when a directory cannot be watched
    (inotify limits); the caller says what notices changes instead. Not
    thread-safe: call ``follow`` from one thread at a time.
    """

    def __init__(
        self, seen: Callable[[FileSystemEvent], None], unwatchable: Callable[[Path, OSError], None]
    ) -> None:
        self._handler = FileEvents(seen)
        self._unwatchable = unwatchable
        self._observer: BaseObserver | None = None
        self._watched: dict[Path, tuple[ObservedWatch | None, tuple[int, int]]] = {}

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer

    def follow(self, directories: Iterable[Path]) -> None:
        """Watch each of ``directories`` not watched yet, or replaced since it was; a missing
        one is left until it is back. Does nothing before ``start``."""
        if self._observer is None:
            return
        for directory in dict.fromkeys(d.resolve() for d in directories):
            try:
                st = directory.stat()
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            watched = self._watched.get(directory)
            if watched is not None and watched[1] == ident:
                continue
            if watched is not None and watched[0] is not None:
                log.info("%s was replaced: watching the new directory", directory)
                with contextlib.suppress(KeyError):  # already gone with its directory
                    self._observer.unschedule(watched[0])
            try:
                watch: ObservedWatch | None = self._observer.schedule(
                    self._handler, str(directory), recursive=True, event_filter=WRITE_EVENTS
                )
            except OSError as exc:
                self._unwatchable(directory, exc)
                watch = None
            self._watched[directory] = (watch, ident)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
