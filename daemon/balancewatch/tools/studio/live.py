"""The catalogue a preview serves, kept in step with the files, and the clients told of each change.

A ``Studio`` holds the latest ``Snapshot``: a ``Catalogue`` (itself an immutable snapshot of the
templates directory) and its generation number. A watchdog ``Observer`` on the templates
directory (and the rules directory, which says what each template is used for) wakes a debounce
thread; once the files have been quiet for ``debounce`` seconds it loads a new catalogue and
swaps the snapshot in one assignment, so a request always sees one whole catalogue, never a mix.
A directory that cannot be read keeps the previous catalogue on show with the reason beside it.

``Changes`` carries the generation from that thread to the event streams of the web server,
which wait on it in their event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from watchdog.events import FileSystemEvent

from balancewatch.config import Settings
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.runtime.watch import DirectoryWatch
from balancewatch.tools.studio.accounts import AccountPreviewError, account_previews
from balancewatch.tools.studio.catalogue import Catalogue, Preview

log = logging.getLogger(__name__)

DEBOUNCE = 0.05  # seconds of quiet after a file event: an editor's save is several events, ms apart
STALE_RETRY = 1.0  # seconds between loads while the templates directory cannot be read


class Changes:
    """A generation number that one thread advances and any number of asyncio tasks wait on.

    ``publish`` and ``close`` may be called from any thread (or a signal handler); ``wait`` runs
    in an event loop. Once closed, every wait returns at once: the streams end, so a server
    shutting down never waits for a client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._closed = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self) -> int:
        """Advance the generation and wake every waiter; returns the new generation."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self._wake()
        return generation

    def close(self) -> None:
        """Wake every waiter for good: the server is stopping."""
        with self._lock:
            self._closed = True
        self._wake()

    async def wait(self, seen: int, timeout: float) -> int:
        """The generation, once it differs from ``seen``, the changes are closed, or ``timeout``
        seconds passed (then it is still ``seen``)."""
        key = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._generation != seen or self._closed:
                return self._generation
            self._waiters.add(key)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(key[1].wait(), timeout)
        finally:
            with self._lock:
                self._waiters.discard(key)
        return self._generation

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            # A loop already closed has no waiter left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)


@dataclass(frozen=True)
class AccountSource:
    """The account ``preview --account`` shows, and the database it is read from (read only)."""

    engine: Engine
    id: str


@dataclass(frozen=True)
class Snapshot:
    """What the preview shows: ``catalogue`` as of ``generation``. ``stale`` says why the files
    as they are now could not be loaded (the catalogue shown is then the last one that could)."""

    catalogue: Catalogue
    generation: int
    stale: tuple[Problem, ...] = ()


class Studio:
    """The snapshot being served, reloaded after every change to the files.

    The first catalogue is loaded by the constructor (raising ProblemsError when the templates
    directory cannot be read); ``start`` begins watching, ``stop`` ends the watch and closes
    ``changes``. ``clients`` counts the event streams open (kept by the web server)."""

    def __init__(
        self,
        settings: Settings,
        templates_dir: Path | None = None,
        *,
        debounce: float = DEBOUNCE,
        stale_retry: float = STALE_RETRY,
        account: AccountSource | None = None,
    ) -> None:
        self.settings = settings
        self.account = account
        self.templates_dir = (templates_dir or settings.templates_dir).resolve()
        self.debounce, self.stale_retry = debounce, stale_retry
        self.changes = Changes()
        self.clients = 0
        self._snapshot = Snapshot(Catalogue.load(settings, self.templates_dir), 0)
        self._loading = threading.Lock()  # one load and swap at a time
        self._wake = threading.Condition()
        self._due: float | None = None
        self._stopping = False
        self._dirs = DirectoryWatch(self._on_event, _unwatchable)
        self._thread: threading.Thread | None = None

    def account_messages(self, template: str) -> tuple[list[Preview], str | None]:
        """The messages ``template`` would make for the ``--account`` account, rendered with the
        current snapshot, and why there are none (None when there is no account to show)."""
        if self.account is None:
            return [], None
        catalogue = self.snapshot.catalogue
        try:
            found = account_previews(
                catalogue, self.account.engine, template, self.account.id, datetime.now(UTC)
            )
        except AccountPreviewError as exc:
            return [], str(exc)
        except SQLAlchemyError as exc:  # the samples stay served while the database is away
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            return [], f"the database cannot be read now: {reason}"
        return found, None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def start(self) -> None:
        """Watch the templates (and rules) directories and reload after each change."""
        self._dirs.start()
        self._watch()
        self._thread = threading.Thread(target=self._loop, name="preview-reload", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        """Watch the templates and rules directories, anew where one was replaced; a missing one
        is watched once it is back (a stale snapshot is retried)."""
        self._dirs.follow((self.templates_dir, self.settings.rules_dir))

    def stop(self) -> None:
        """Stop watching and end every event stream; a load in progress finishes first."""
        self.changes.close()
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._dirs.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self) -> Snapshot:
        """Load the files as they are now, swap the snapshot and tell the clients (not when the
        directory is still unreadable for the reason already shown)."""
        with self._loading:
            return self._reload()

    def _reload(self) -> Snapshot:
        self._watch()
        try:
            catalogue = Catalogue.load(self.settings, self.templates_dir)
            stale: tuple[Problem, ...] = ()
        except ProblemsError as exc:
            catalogue, stale = self._snapshot.catalogue, tuple(exc.problems)
        except Exception as exc:  # a bug in a load must not end live reload for the session
            log.exception("loading %s failed", self.templates_dir)
            catalogue = self._snapshot.catalogue
            stale = (Problem(str(self.templates_dir), 0, "", f"internal error while loading: {exc!r}"),)
        if stale and stale == self._snapshot.stale:
            return self._snapshot  # still unreadable, for the same reason: nothing new to show
        # The generation is published after the swap: a client told of it fetches the new one.
        self._snapshot = Snapshot(catalogue, self.changes.generation + 1, stale)
        self.changes.publish()
        return self._snapshot

    def _on_event(self, event: FileSystemEvent) -> None:
        log.debug("file event: %s %s", event.event_type, event.src_path)
        with self._wake:
            self._due = time.monotonic() + self.debounce
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._snapshot.stale and self._due is None:
                    # No event comes from a directory that is gone: look again until it is back.
                    self._due = time.monotonic() + self.stale_retry
                while not self._stopping and (self._due is None or time.monotonic() < self._due):
                    self._wake.wait(None if self._due is None else self._due - time.monotonic())
                if self._stopping:
                    return
                self._due = None
            self.reload()


def _unwatchable(directory: Path, exc: OSError) -> None:
    # inotify limits: the preview still serves, without live reload.
    log.warning("cannot watch %s (%s): reload the page after editing", directory, exc.strerror or exc)
