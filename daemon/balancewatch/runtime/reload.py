"""Hot reload: file events -> debounce -> re-read the whole set -> validate -> swap.

Every file event only means "something may have changed". After a quiet
period (``debounce``) the whole rules and templates set is fingerprinted; an
unchanged fingerprint ends there. A changed one is loaded with every check
(``liveset.load_set``) before anything live is touched, then swapped in one
step; on any problem the running set stays and every problem is logged with
file:line. File events can be lost (queue overflow, network filesystems), so a
backstop re-fingerprints every ``backstop`` seconds whatever happened. SIGHUP
calls ``reload_now``.

What counts as a reload *attempt* (and is published): a fingerprint that
differs from the live set's, a directory that cannot be read, and every
``reload_now``. A check that finds the files unchanged is not an attempt.

A load renders every template used with sample data, within the live set's
render budget (``render:`` in config.yaml), so a template that never finishes
is refused like any other problem and cannot hold up later reloads or SIGHUP.
A reload that drops rules or reports (a file removed, or cut short and still
valid YAML) names them in a warning: silence would look like success.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from watchdog.events import FileSystemEvent

from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import fingerprint, load_set
from balancewatch.runtime.watch import DirectoryWatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadStatus:
    """The last reload attempt: when, why, how it went, and the set now live.

    ``ok`` is None until the first attempt. ``reloads`` counts sets swapped
    in; ``attempts`` counts every attempt, refused or not.
    """

    live_digest: str
    rules: int
    attempted_at: datetime | None = None
    reason: str = ""
    ok: bool | None = None
    error: str = ""
    reloads: int = 0
    attempts: int = 0


StatusCallback = Callable[[ReloadStatus, LiveSet], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Reloader:
    """Keeps the live set in step with the files; never swaps in a set that failed a check.

    ``swap`` receives each new set, once it passed every check; ``on_status``
    receives the status and the set live after every attempt (from the
    reloader's thread or the caller of ``reload_now``, one at a time). Neither
    may be slow: checks wait for them. ``metrics`` learns the set live at start
    and every attempt (``reload_attempted``), before ``on_status`` is called.
    """

    def __init__(
        self,
        rules_dir: Path,
        templates_dir: Path,
        live: LiveSet,
        swap: Callable[[LiveSet], None],
        *,
        debounce: float = 0.3,
        backstop: float = 30.0,
        on_status: StatusCallback | None = None,
        clock: Callable[[], datetime] = _utc_now,
        metrics: Recorder = NOOP,
        channels: Sequence[str] = (),
    ) -> None:
        if debounce < 0 or backstop <= 0:
            raise ValueError("debounce must be >= 0 and backstop > 0 seconds")
        self.rules_dir, self.templates_dir = rules_dir, templates_dir
        self.channels = tuple(channels)  # the config's channels, which rules may name
        self.swap = swap
        self.debounce, self.backstop = debounce, backstop
        self.on_status = on_status
        self.clock = clock
        self.live = live
        self.status = ReloadStatus(live_digest=live.digest, rules=len(live.rules))
        self.metrics = metrics
        metrics.rule_set_loaded(live.digest, len(live.rules), at=live.loaded_at.timestamp())
        self._refused = ""  # what was last refused (a digest, or the read error): not logged again
        self._lock = threading.Lock()  # one check at a time
        self._wake = threading.Condition()
        self._due: float | None = None
        self._reason = ""
        self._checking = False
        self._stopping = False
        self.checks = 0  # checks the thread finished, changed or not
        self._seen: deque[str] = deque(maxlen=256)
        self._dirs = DirectoryWatch(self._on_event, self._unwatchable)
        self._thread: threading.Thread | None = None

    def start(self, watch: bool = True) -> None:
        """Start the debounce/backstop thread and, with ``watch``, the file watcher.

        Without ``watch`` only the backstop notices changes, as on a filesystem
        that sends no events. A directory that cannot be watched (inotify limits)
        is logged and left to the backstop.
        """
        if watch:
            self._dirs.start()
            with self._lock:
                self._watch_dirs()
        self._thread = threading.Thread(target=self._loop, name="reload", daemon=True)
        self._thread.start()

    def _watch_dirs(self) -> None:
        """Watch the rules and templates directories, anew where one was replaced. Called with
        ``_lock`` held, at start and before every check."""
        self._dirs.follow((self.rules_dir, self.templates_dir))

    def _unwatchable(self, directory: Path, exc: OSError) -> None:
        log.warning(
            "cannot watch %s (%s): its changes are noticed every %gs by the backstop only",
            directory,
            exc.strerror or exc,
            self.backstop,
        )

    def stop(self) -> None:
        """Stop watching; a check in progress finishes first."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._dirs.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poke(self, reason: str) -> None:
        """Something changed: check after ``debounce`` seconds without another poke."""
        with self._wake:
            self._due = time.monotonic() + self.debounce
            self._reason = reason
            self._wake.notify_all()

    def reload_now(self, reason: str) -> ReloadStatus:
        """Check at once (SIGHUP) and record the attempt even when nothing changed.

        A set refused before is loaded and reported again. Returns the resulting status.
        """
        return self._check(reason, force=True)

    def idle(self) -> bool:
        """True when no check is running or waiting for its quiet period."""
        with self._wake:
            return self._due is None and not self._checking

    def has_seen(self, path: Path) -> bool:
        """Whether a recent file event named ``path``: events arrive in order, so every
        event of a change made before ``path`` was written has arrived too."""
        with self._wake:
            return str(path) in self._seen

    def _on_event(self, event: FileSystemEvent) -> None:
        paths = [str(event.src_path)] + ([str(event.dest_path)] if event.dest_path else [])
        with self._wake:
            self._seen.extend(paths)
        log.debug("file event: %s %s", event.event_type, " -> ".join(paths))
        self.poke(f"file {event.event_type}: {paths[-1]}")

    def _loop(self) -> None:
        next_backstop = time.monotonic() + self.backstop
        while True:
            with self._wake:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    if self._due is not None and now >= self._due:
                        reason = self._reason
                        break
                    if now >= next_backstop:
                        reason = "backstop"
                        break
                    deadline = next_backstop if self._due is None else min(self._due, next_backstop)
                    self._wake.wait(deadline - now)
                self._due = None
                self._checking = True
            try:
                self._check(reason, force=False)
            except Exception:
                # The thread must outlive any surprise, or reloading would stop unnoticed.
                log.exception("reload check failed (%s); the previous rules keep running", reason)
            finally:
                with self._wake:
                    self._checking = False
                    self.checks += 1
            next_backstop = time.monotonic() + self.backstop

    def _check(self, reason: str, *, force: bool) -> ReloadStatus:
        with self._lock:
            self._watch_dirs()
            try:
                digest = fingerprint(self.rules_dir, self.templates_dir)
            except ProblemsError as exc:
                return self._refuse(reason, exc, f"unreadable: {exc}", force)
            if digest == self.status.live_digest:
                return self._unchanged(reason, force)
            if digest == self._refused and not force:
                return self.status
            try:
                live = load_set(
                    self.rules_dir,
                    self.templates_dir,
                    budget=self.live.templates.budget,
                    channels=self.channels,
                )
            except ProblemsError as exc:
                return self._refuse(reason, exc, digest, force)
            except Exception as exc:  # a bug in a check must not take the running rules down
                log.exception("loading the rules and templates failed (%s)", reason)
                problem = Problem(str(self.rules_dir), 0, "", f"internal error while loading: {exc!r}")
                return self._refuse(reason, ProblemsError([problem]), digest, force)
            if live.digest == self.status.live_digest:
                # The files changed back between the fingerprint and the load.
                return self._unchanged(reason, force)
            warn_removed(self.live, live, reason)
            self.swap(live)
            self.live = live
            self._refused = ""
            log.info("reloaded (%s): %d rules, set %s", reason, len(live.rules), live.digest[:12])
            return self._publish(
                replace(
                    self.status,
                    live_digest=live.digest,
                    rules=len(live.rules),
                    attempted_at=self.clock(),
                    reason=reason,
                    ok=True,
                    error="",
                    reloads=self.status.reloads + 1,
                    attempts=self.status.attempts + 1,
                )
            )

    def _unchanged(self, reason: str, force: bool) -> ReloadStatus:
        if not force and self.status.ok is not False:
            return self.status
        if self.status.ok is False:
            # A refused edit was undone: the files are the running set again.
            log.info("rules and templates match the running set again (%s)", reason)
        else:
            log.info("%s: rules and templates unchanged (set %s)", reason, self.status.live_digest[:12])
        self._refused = ""
        return self._publish(
            replace(
                self.status,
                attempted_at=self.clock(),
                reason=reason,
                ok=True,
                error="",
                attempts=self.status.attempts + 1,
            )
        )

    def _refuse(self, reason: str, exc: ProblemsError, key: str, force: bool) -> ReloadStatus:
        if key == self._refused and not force:
            return self.status  # reported already; the backstop must not repeat it every interval
        self._refused = key
        for problem in exc.problems:
            log.error("reload refused: %s", problem)
        log.error(
            "reload refused (%s): %d problem%s; the previous rules keep running",
            reason,
            len(exc.problems),
            "" if len(exc.problems) == 1 else "s",
        )
        return self._publish(
            replace(
                self.status,
                attempted_at=self.clock(),
                reason=reason,
                ok=False,
                error=str(exc),
                attempts=self.status.attempts + 1,
            )
        )

    def _publish(self, status: ReloadStatus) -> ReloadStatus:
        self.status = status
        at = status.attempted_at.timestamp() if status.attempted_at else None
        self.metrics.reload_attempted(status.ok is True, status.live_digest, status.rules, at=at)
        if self.on_status is not None:
            try:
                self.on_status(status, self.live)
            except Exception:
                # Recording the status (in the database) failed; the reload itself stands.
                log.exception("could not record the reload status")
        return status


def warn_removed(old: LiveSet, new: LiveSet, reason: str) -> list[str]:
    """Log at warning level each rule and report ``old`` has and ``new`` lacks, by the file they
    were in; return the lines logged. A rule file cut short can still be valid YAML: without
    this, the rules it lost would stop alerting without a word."""
    lines = []
    for kind, before, after in (("rules", old.rules, new.rules), ("reports", old.reports, new.reports)):
        kept = {item.id for item in after}
        gone: dict[str, list[str]] = {}
        for item in before:
            if item.id not in kept:
                gone.setdefault(item.source, []).append(item.id)
        files = {str(f.path) for f in new.rule_sources}
        for source, ids in sorted(gone.items()):
            still = "which no longer defines them" if source in files else "now gone"
            lines.append(f"reload ({reason}) removes {kind}: {', '.join(ids)} (in {source}, {still})")
    for line in lines:
        log.warning("%s", line)
    return lines
