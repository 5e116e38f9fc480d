"""The daemon: scheduler jobs, signals, readiness. Wiring only; the work lives in the stages.

Two jobs run on an APScheduler 3 background scheduler, each with
``max_instances=1`` and coalescing, so a slow run is never stacked:

- *evaluate*, every ``poll_interval``: balances changed since the last poll,
  and every ``sweep_interval`` (and at start) a full sweep;
- *deliver*, every ``delivery.interval`` and right after decisions: due
  outbox rows out through the transport.

SIGTERM or SIGINT lets the jobs in flight finish, then exits 0. SIGHUP
reloads rules and templates (the old set keeps running if the new one fails).
All state is in the database: a restart repeats nothing and loses nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from balancewatch import sdnotify
from balancewatch.config import Settings
from balancewatch.cycle import CycleStats, poll
from balancewatch.deliver.worker import DeliveryStats, Transport, deliver_batch, make_transport
from balancewatch.liveset import LiveSet, load_set
from balancewatch.problems import ProblemsError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(UTC)


def instance_name(settings: Settings) -> str:
    return settings.instance or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Pipeline:
    """Evaluate and deliver with ``now`` passed in: what the daemon, ``--once`` and the demo run."""

    engine: Engine
    settings: Settings
    live: LiveSet
    transport: Transport
    worker: str
    last_sweep: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def evaluate(self, now: datetime) -> CycleStats:
        """A poll, or a full sweep when one is due (and the first time)."""
        with self.lock:
            live = self.live
        full = self.last_sweep is None or now - self.last_sweep >= self.settings.sweep_interval
        stats = poll(self.engine, live, self.settings, now, full=full, stopping=self.stopping)
        if full and not stats.interrupted:
            self.last_sweep = now
        return stats

    def deliver(self, now: datetime, clock: Clock | None = None) -> DeliveryStats:
        """Deliver due rows, batch after batch, until none is due, a batch made no
        progress, or ``stopping`` is set (the batch in flight is always finished).

        ``now`` claims the first batch; each later one reads ``clock`` again, so
        its lease starts when it is claimed, not when the first batch was.
        """
        total = DeliveryStats()
        while not self.stopping.is_set():
            stats = deliver_batch(self.engine, self.transport, self.settings, now, self.worker, clock)
            total.claimed += stats.claimed
            total.outcomes.update(stats.outcomes)
            done = stats.outcomes["sent"] + stats.outcomes["parked"]
            if stats.claimed < self.settings.delivery.batch_size or done == 0:
                break
            now = clock() if clock is not None else now
        return total

    def swap(self, live: LiveSet) -> None:
        with self.lock:
            self.live = live


class Daemon:
    """The long-running service around a Pipeline."""

    def __init__(self, pipeline: Pipeline, clock: Clock = utc_clock) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.clock = clock
        self.stopping = pipeline.stopping
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=UTC,
        )

    def evaluate_job(self) -> None:
        try:
            stats = self.pipeline.evaluate(self.clock())
        except Exception:
            # The job runs again next interval; the database holds all progress.
            log.exception("evaluation failed; retrying at the next poll")
            return
        if stats.notifications:
            log.info(
                "%s: %d balances looked at, %d notifications decided (%s)",
                "sweep" if stats.full else "poll",
                stats.candidates,
                stats.notifications,
                ", ".join(f"{k}={v}" for k, v in sorted(stats.decided.items())),
            )
            if not self.stopping.is_set():
                self.scheduler.modify_job("deliver", next_run_time=self.clock())

    def deliver_job(self) -> None:
        try:
            self.pipeline.deliver(self.clock(), self.clock)
        except Exception:
            log.exception("delivery failed; retrying at the next interval")

    def reload(self) -> bool:
        """Load rules and templates again; keep the running set if the new one has problems."""
        s = self.settings
        try:
            live = load_set(s.rules_dir, s.templates_dir)
        except ProblemsError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: %d problems; the previous rules keep running", len(exc.problems))
            return False
        if live.digest != self.pipeline.live.digest:
            self.pipeline.swap(live)
            self.pipeline.last_sweep = None  # new rules: look at every balance again
            log.info("reloaded %d rules (set %s)", len(live.rules), live.digest[:12])
        return True

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit status."""
        s = self.settings
        self._install_signals()
        start = self.clock()
        self.scheduler.add_job(
            self.evaluate_job,
            "interval",
            id="evaluate",
            seconds=s.poll_interval.total_seconds(),
            next_run_time=start,
        )
        self.scheduler.add_job(
            self.deliver_job,
            "interval",
            id="deliver",
            seconds=s.delivery.interval.total_seconds(),
            next_run_time=start + timedelta(milliseconds=100),
        )
        self.scheduler.start()
        sdnotify.notify("READY=1\nSTATUS=watching balances")
        log.info(
            "running as %s: %d rules, poll every %ss, sweep every %ss",
            self.pipeline.worker,
            len(self.pipeline.live.rules),
            int(s.poll_interval.total_seconds()),
            int(s.sweep_interval.total_seconds()),
        )
        self.stopping.wait()
        sdnotify.notify("STOPPING=1")
        log.info("stopping: finishing the work in flight")
        self.scheduler.shutdown(wait=True)
        log.info("stopped")
        return 0

    def stop(self) -> None:
        self.stopping.set()

    def _install_signals(self) -> None:
        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        stop_on_signals(self.stopping)
        signal.signal(signal.SIGHUP, on_hup)


def stop_on_signals(stopping: threading.Event) -> None:
    """Make SIGTERM and SIGINT set ``stopping``: installed first thing, so a stop
    during start-up (rules loading, schema upgrade) still ends with exit status 0."""

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)


def build_pipeline(
    engine: Engine, settings: Settings, live: LiveSet, stopping: threading.Event | None = None
) -> Pipeline:
    pipeline = Pipeline(engine, settings, live, make_transport(settings), instance_name(settings))
    if stopping is not None:
        pipeline.stopping = stopping
    return pipeline


def describe_transport(settings: Settings) -> str:
    if settings.transport == "smtp":
        s = settings.smtp
        return f"SMTP {s.host}:{s.effective_port} ({s.security.value})"
    return f"files in {settings.mail_dir} (no SMTP host configured)"
