"""The daemon: scheduler jobs, signals, readiness. Wiring only; the work lives in the stages.

Four jobs run on an APScheduler 3 background scheduler, each with
``max_instances=1`` and coalescing, so a slow run is never stacked (a run asked for
while one is in progress follows it, ``rerun.Reruns``):

- *evaluate*, every ``poll_interval``: balances changed since the last poll,
  and every ``sweep_interval`` (and at start) a full sweep;
- *deliver*, every ``delivery.interval`` and right after decisions: due
  email rows out through the transport; each named webhook or chat channel
  has a job of its own (``deliver:NAME``), so none holds up another;
- *topup*, every ``delivery.interval`` and right after new top-up requests:
  top-ups that arrived in the ledger, then due requests to the hook
  (``topup.worker``); a failure email it records is delivered right away;
- *reports*, every minute: the scheduled reports whose send time is due
  (``reports.runner``), then delivery right away.

A fifth job, *heartbeat*, every 5 seconds (``store.status.HEARTBEAT``), updates this
instance's row in ``instance_status`` (``balancewatch status``, how other instances tell
it is alive); also written at start and after every reload attempt. Job failures are
logged through ``outage.FailureLog``: a database outage is one warning a minute.

Rules and templates reload when their files change (``reload.Reloader``,
when ``reload.watch``) and at once on SIGHUP; the old set keeps running if
the new one fails. SIGHUP also reads the config again, only to log each
changed setting as needing a restart. SIGTERM or SIGINT stops within a bound
(``Daemon.shut_down``): the message in flight is finished or broken off, the
rest handed back, the instance marked stopped, exit 0. All state is in the
database: a restart repeats nothing and loses nothing."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from balancewatch.alerts.cycle import CycleStats
from balancewatch.config import Settings
from balancewatch.core import sdnotify
from balancewatch.core.metrics import Metrics, Readiness
from balancewatch.deliver.registry import EMAIL
from balancewatch.runtime import health, httpserve, presence, watchdog
from balancewatch.runtime.health import changed_settings
from balancewatch.runtime.heartbeat import InstanceRow
from balancewatch.runtime.listen import BalanceListener
from balancewatch.runtime.outage import FailureLog
from balancewatch.runtime.pipeline import (
    Clock,
    Pipeline,
    build_pipeline,
    describe_transport,
    instance_name,
    lane_job,
    utc_clock,
)
from balancewatch.runtime.reload import Reloader, ReloadStatus
from balancewatch.runtime.rerun import Reruns
from balancewatch.runtime.shutdown import (
    ABORT_GRACE,
    HAND_BACK_GRACE,
    SHUTDOWN_GRACE,
    SIGNAL_CHECK,
    RunningJobs,
    exit_now,
    hand_back,
    stop_on_signals,
)
from balancewatch.store.db import is_postgres
from balancewatch.store.status import HEARTBEAT

# Names other modules and tests import from here.
__all__ = ["Daemon", "Pipeline", "build_pipeline", "changed_settings", "describe_transport", "instance_name"]

log = logging.getLogger(__name__)


class Daemon:
    """The long-running service around a Pipeline.

    ``load_config`` reads the configuration again on SIGHUP, only to report
    settings that changed: none applies without a restart.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock = utc_clock,
        load_config: Callable[[], Settings] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.clock = clock
        self.load_config = load_config
        self.stopping = pipeline.stopping
        self.failures = FailureLog()
        self.running = RunningJobs()
        self.reruns = Reruns()
        self.row = InstanceRow(
            pipeline, clock, self.failures, lambda: (self.reloader.status, self.reloader.live)
        )
        self.watchdog: watchdog.Watchdog | None = None
        self._evaluating = threading.Lock()
        self.listener: BalanceListener | None = None
        s = self.settings
        self.reloader = Reloader(
            s.rules_dir,
            s.templates_dir,
            pipeline.live,
            pipeline.swap,
            debounce=s.reload.debounce.total_seconds(),
            backstop=s.reload.backstop.total_seconds(),
            on_status=self.row.record_reload,
            clock=clock,
            metrics=pipeline.metrics,
            channels=tuple(s.channels),
        )
        self.http: httpserve.MetricsServer | None = None
        self.scheduler = BackgroundScheduler(
            # A worker per job (and per channel's delivery lane): a long sweep, a slow delivery
            # or a slow top-up hook must not hold up the others or the heartbeat.
            executors={"default": ThreadPoolExecutor(4 + len(pipeline.lanes))},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=UTC,
        )

    def job(self, name: str, work: Callable[[], None]) -> Callable[[], None]:
        """``work`` as a scheduler job: counted while it runs (for a bounded shutdown), its
        failures logged through ``failures`` (an outage is a warning a minute, not a traceback)."""

        def run() -> None:
            with self.running.running():
                try:
                    self.reruns.run(name, work, self.stopping)
                except Exception as exc:
                    # It runs again at its next interval; the database holds all progress.
                    self.failures.failed(name, exc)
                else:
                    self.failures.succeeded(name)

        return run

    def evaluate_job(self) -> None:
        with self._evaluating:  # one evaluation at a time: the timer's or a notification's
            try:
                stats = self.pipeline.evaluate(self.clock())
            except Exception:
                self._poll_ended(None)
                raise
        self._poll_ended(stats)
        if stats.notifications:
            log.info(
                "%s: %d balances looked at, %d notifications decided (%s)",
                "sweep" if stats.full else "poll",
                stats.candidates,
                stats.notifications,
                ", ".join(f"{k}={v}" for k, v in sorted(stats.decided.items())),
            )
            self._run_soon("deliver")
        if stats.topups:
            self._run_soon("topup")

    def topup_job(self) -> None:
        stats = self.pipeline.topups(self.clock(), self.clock)
        if stats.emails:
            self._run_soon("deliver")

    def reports_job(self) -> None:
        stats = self.pipeline.reports(self.clock())
        if stats.messages:
            log.info("reports: %s", ", ".join(f"{k} {v} sent" for k, v in sorted(stats.sent.items())))
            self._run_soon("deliver")

    def deliver_job(self, lane: str = EMAIL) -> None:
        if not self.row.written:
            # Until this run's row is in, the row of an earlier run under a fixed name may still
            # say "stopped": another instance would take over whatever this one claims.
            self.row.write(self.row.whole())
        self.pipeline.deliver(self.clock(), self.clock, lane=lane)

    def _poll_ended(self, stats: CycleStats | None) -> None:
        """An evaluation ended (``stats`` None: it failed): the poll loop made progress."""
        self.row.last_poll = (self.clock(), stats)
        if self.watchdog is not None:
            self.watchdog.progressed()

    def heartbeat_job(self) -> None:
        self.row.beat()

    def status_line(self) -> str:
        """What ``systemctl status`` shows: the last poll, the mail waiting, the last reload."""
        return self.row.status_line()

    def _run_soon(self, job_id: str) -> None:
        """Run ``job_id`` now (``deliver``: every channel's delivery lane)."""
        if self.stopping.is_set():
            return
        ids = [lane_job(lane) for lane in self.pipeline.lanes] if job_id == "deliver" else [job_id]
        for one in (job for job in ids if not self.reruns.request(job)):
            with contextlib.suppress(JobLookupError):  # the scheduler is shutting down
                self.scheduler.modify_job(one, next_run_time=self.clock())

    @property
    def started_at(self) -> datetime:
        return self.row.started_at

    def sighup(self) -> ReloadStatus:
        """Report config settings that changed, then reload rules and templates at once.

        systemd hears ``RELOADING=1`` before and ``READY=1`` after, with the outcome as STATUS=.
        """
        sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            self.report_config_changes()
            return self.reloader.reload_now("SIGHUP")
        finally:
            sdnotify.notify(f"READY=1\nSTATUS={self.status_line()}")

    def report_config_changes(self) -> list[str]:
        """Read the configuration again; log each changed key as needing a restart. Returns the keys."""
        return (
            [] if self.load_config is None else health.report_config_changes(self.settings, self.load_config)
        )

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit status."""
        s = self.settings
        self._install_signals()
        start = self.clock()
        self.row.started_at = start
        namesake = self._live_namesake(start)
        if self.row.publish(self.row.whole()):
            self.pipeline.beating_since = start
        presence.settle_name(
            self.pipeline.engine,
            self.pipeline.worker,
            namesake,
            start,
            functools.partial(self.failures.failed, "start"),
        )
        if s.reload.watch:
            self.reloader.start()
        self._schedule(start)
        self.scheduler.start()
        self._listen()
        self._start_watchdog()
        self._serve_http()
        sdnotify.notify(f"READY=1\nSTATUS={self.status_line()}")
        log.info(
            "running as %s: %d rules, poll every %ss, sweep every %ss; %s",
            self.pipeline.worker,
            len(self.pipeline.live.rules),
            int(s.poll_interval.total_seconds()),
            int(s.sweep_interval.total_seconds()),
            f"watching {s.rules_dir} and {s.templates_dir} for changes"
            if s.reload.watch
            else "reloading rules and templates on SIGHUP only",
        )
        # A timed wait: a signal the kernel hands to another thread does not interrupt an untimed
        # lock wait in the main thread, and the handler (which sets ``stopping``) would never run.
        while not self.stopping.wait(SIGNAL_CHECK):
            pass
        return self.shut_down()

    def _listen(self) -> None:
        """On PostgreSQL (unless ``database.listen: off``), poll at once when a balance changes."""
        database = self.settings.database
        if database.listen == "off" or not is_postgres(self.pipeline.engine):
            return
        evaluate = self.job("evaluate", self.evaluate_job)
        self.listener = BalanceListener(
            self.settings.database_url, database.notify_channel, evaluate, self.stopping
        )
        self.listener.start()

    def _serve_http(self) -> None:
        """Metrics and health over HTTP when ``metrics.listen`` is set (checked at load: a port
        already taken is logged and the daemon goes on without it, alerting matters more)."""
        listen = self.settings.metrics.listen
        if not listen or not isinstance(self.pipeline.metrics, Metrics):
            return
        try:
            self.http = httpserve.serve(listen, self.pipeline.metrics, self.readiness)
        except httpserve.ListenError as exc:
            log.error("%s; going on without metrics", exc)

    def readiness(self) -> Readiness:
        """What ``/-/ready`` answers now (``health.readiness``)."""
        return health.readiness(
            self.clock(),
            self.started_at,
            self.pipeline.beating_since,
            self.row.last_poll,
            self.settings.poll_interval,
        )

    def _start_watchdog(self, environ: Mapping[str, str] | None = None) -> None:
        timeout = watchdog.interval_from(os.environ if environ is None else environ)
        if timeout is None:
            return
        patience = self.settings.poll_interval.total_seconds() + timeout / 2
        self.watchdog = watchdog.Watchdog(timeout, patience)
        self.pipeline.progressed = self.watchdog.progressed
        self.watchdog.start(self.stopping)
        log.info("systemd watchdog: pinging every %gs while balances are being looked at", timeout / 2)

    def _schedule(self, start: datetime) -> None:
        s = self.settings
        jobs: list[tuple[str, Callable[[], None], float, datetime | None]] = [
            ("evaluate", self.evaluate_job, s.poll_interval.total_seconds(), start),
            (
                "topup",
                self.topup_job,
                s.delivery.interval.total_seconds(),
                start + timedelta(milliseconds=50),
            ),
            ("reports", self.reports_job, 60.0, start + timedelta(seconds=1)),
            ("heartbeat", self.heartbeat_job, HEARTBEAT.total_seconds(), None),
        ]
        # Each channel delivers on a job of its own: a webhook timing out or a chat service's
        # rate limit never delays email, nor each other.
        soon = start + timedelta(milliseconds=100)
        for lane in self.pipeline.lanes:
            deliver = functools.partial(self.deliver_job, lane)
            jobs.append((lane_job(lane), deliver, s.delivery.interval.total_seconds(), soon))
        for job_id, work, seconds, first in jobs:
            extra: dict[str, Any] = {"next_run_time": first} if first is not None else {}
            self.scheduler.add_job(
                self.job(job_id, work), "interval", id=job_id, name=job_id, seconds=seconds, **extra
            )

    def _live_namesake(self, now: datetime) -> str | None:
        """The process of another live instance going by this one's name (``presence.live_namesake``)."""
        return presence.live_namesake(self.pipeline.engine, self.pipeline.worker, now)

    def shut_down(self) -> int:
        """Stop within SHUTDOWN_GRACE + ABORT_GRACE + HAND_BACK_GRACE seconds whatever the servers'
        and the database's speed: the jobs
        finish what is in flight (delivery hands back what it has not started); a send still
        hanging then is broken off; what this instance held is handed back and the instance
        marked stopped, so another takes over at once. Returns the exit status."""
        sdnotify.notify("STOPPING=1\nSTATUS=stopping: finishing the work in flight")
        log.info(
            "stopping: finishing the work in flight (at most %gs)",
            SHUTDOWN_GRACE + ABORT_GRACE + HAND_BACK_GRACE,
        )
        threading.Thread(target=self.reloader.stop, name="reload-stop", daemon=True).start()
        if self.http is not None:
            threading.Thread(target=self.http.close, name="http-stop", daemon=True).start()
        self.scheduler.shutdown(wait=False)
        if not self.running.wait_idle(SHUTDOWN_GRACE):
            log.warning("a job is still running after %gs: breaking off the send in flight", SHUTDOWN_GRACE)
            self.pipeline.courier.abort()
            self.running.wait_idle(ABORT_GRACE)
        handing_back = threading.Thread(target=self._hand_back, name="hand-back", daemon=True)
        handing_back.start()
        handing_back.join(HAND_BACK_GRACE)  # a database that does not answer must not hold the stop
        busy = self.running.now()
        if busy or handing_back.is_alive():
            log.warning(
                "stopped with %d job(s) still running%s",
                busy,
                "" if not handing_back.is_alive() else "; the database did not take the hand-back in time",
            )
            exit_now()
        log.info("stopped")
        return 0

    def _hand_back(self) -> None:
        """Record what the courier still keeps, hand back what this instance holds, mark it stopped."""
        hand_back(self.pipeline, self.clock, {} if self.row.written else self.row.whole())

    def stop(self) -> None:
        self.stopping.set()

    def _install_signals(self) -> None:
        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            # Not in the handler: a reload reads files and writes the database.
            threading.Thread(target=self._on_sighup, name="sighup", daemon=True).start()

        stop_on_signals(self.stopping)
        signal.signal(signal.SIGHUP, on_hup)

    def _on_sighup(self) -> None:
        log.info("received SIGHUP: reloading rules and templates")
        try:
            self.sighup()
        except Exception:
            log.exception("reload on SIGHUP failed; the previous rules keep running")
