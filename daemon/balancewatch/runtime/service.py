"""The daemon: scheduler jobs, signals, readiness. Wiring only; the work lives in the stages.

Four jobs run on an APScheduler 3 background scheduler, each with
``max_instances=1`` and coalescing, so a slow run is never stacked:

- *evaluate*, every ``poll_interval``: balances changed since the last poll,
  and every ``sweep_interval`` (and at start) a full sweep;
- *deliver*, every ``delivery.interval`` and right after decisions: due
  outbox rows out through the transport;
- *topup*, every ``delivery.interval`` and right after new top-up requests:
  top-ups that arrived in the ledger, then due requests to the hook
  (``topup.worker``); a failure email it records is delivered right away;
- *reports*, every minute: the scheduled reports whose send time is due
  (``reports.runner``), then delivery right away.

A fifth job, *heartbeat*, every 5 seconds (``store.status.HEARTBEAT``),
updates this instance's row in ``instance_status`` (``balancewatch status``,
and how other instances tell that it is alive); the row is also written at
start and after every reload attempt. Job failures are logged through
``outage.FailureLog``: a database outage is one warning a minute.

Rules and templates reload when their files change (``reload.Reloader``,
when ``reload.watch``) and at once on SIGHUP; the old set keeps running if
the new one fails. SIGHUP also reads the config again, only to log each
changed setting as needing a restart. SIGTERM or SIGINT stops within a bound
(``Daemon.shut_down``): the message in flight is finished or broken off, the
rest handed back, the instance marked stopped, exit 0. All state is in the
database: a restart repeats nothing and loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from balancewatch import __version__, outbox
from balancewatch.alerts.cycle import CycleStats, poll
from balancewatch.config import Settings
from balancewatch.core import procinfo, sdnotify
from balancewatch.core.metrics import NOOP, Metrics, Readiness, Recorder
from balancewatch.core.problems import ProblemsError
from balancewatch.deliver.worker import Courier, DeliveryStats, Transport, make_transport
from balancewatch.liveset import LiveSet
from balancewatch.reports.accounts import ZoneCache
from balancewatch.reports.runner import ReportStats, run_due
from balancewatch.runtime import httpserve, outboxgauges, watchdog
from balancewatch.runtime.outage import FailureLog
from balancewatch.runtime.reload import Reloader, ReloadStatus
from balancewatch.store import status as instance_status
from balancewatch.store.status import HEARTBEAT, STALE_AFTER
from balancewatch.topup.hook import Hook, make_hook
from balancewatch.topup.worker import TopupStats, run_topups

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(UTC)


def instance_name(settings: Settings) -> str:
    return settings.instance or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Pipeline:
    """Evaluate, call the top-up hook and deliver with ``now`` passed in: what the daemon,
    ``--once`` and the demo run. ``hook`` defaults to the configured one (None: no hook)."""

    engine: Engine
    settings: Settings
    live: LiveSet
    transport: Transport
    worker: str
    last_sweep: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    hook: Hook | None = None
    _unhooked_logged: datetime | None = field(default=None, repr=False)
    report_zones: ZoneCache = field(default_factory=ZoneCache, repr=False)
    # Since when this instance's heartbeat has been written without a break (None: it is not,
    # or not yet): only then may it judge another instance dead by a stale heartbeat.
    beating_since: datetime | None = None
    # Where every stage records what it did (the daemon's Prometheus registry; NOOP elsewhere).
    metrics: Recorder = NOOP
    # Called as an evaluation moves on (each query and chunk): the systemd watchdog's proof of life.
    progressed: Callable[[], None] | None = None
    courier: Courier = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.hook is None:
            self.hook = make_hook(self.settings)
        self.courier = Courier(
            self.engine, self.transport, self.settings, self.worker, self.stopping, metrics=self.metrics
        )

    def evaluate(self, now: datetime) -> CycleStats:
        """A poll, or a full sweep when one is due (and the first time, and after a swap).

        The whole evaluation runs on the one set that was live when it began.
        """
        with self.lock:
            live = self.live
            full = self.last_sweep is None or now - self.last_sweep >= self.settings.sweep_interval
        stats = poll(
            self.engine,
            live,
            self.settings,
            now,
            full=full,
            stopping=self.stopping,
            metrics=self.metrics,
            progressed=self.progressed,
        )
        if full and not stats.interrupted:
            with self.lock:
                # A set swapped in during this sweep has not been swept yet: keep the sweep due.
                if self.live is live:
                    self.last_sweep = now
        return stats

    def deliver(self, now: datetime, clock: Clock | None = None) -> DeliveryStats:
        """Deliver due rows, batch after batch, until none is due, a batch made no
        progress, or ``stopping`` is set (the message in flight is finished; the rest of
        its batch is handed back).

        ``now`` claims the first batch; each later one reads ``clock`` again, so
        its lease starts when it is claimed, not when the first batch was.
        Raises SQLAlchemyError when the database fails; what was sent is kept
        and recorded by the next call that reaches it.
        """
        total = DeliveryStats()
        while not self.stopping.is_set():
            stats = self.courier.deliver_batch(now, clock, stale_after=self.stale_after(now))
            total.claimed += stats.claimed
            total.outcomes.update(stats.outcomes)
            done = stats.outcomes["sent"] + stats.outcomes["parked"]
            if stats.claimed < self.settings.delivery.batch_size or done == 0:
                break
            now = clock() if clock is not None else now
        return total

    def topups(self, now: datetime, clock: Clock | None = None) -> TopupStats:
        """Mark top-ups that arrived in the ledger, then hand due requests to the hook one at a
        time until none is due or ``stopping`` is set (the call in flight is always finished
        and recorded). Failure emails go to the outbox; ``deliver`` sends them."""
        with self.lock:
            live = self.live
        stats = run_topups(
            self.engine,
            live,
            self.settings,
            self.hook,
            now,
            clock=clock,
            stopping=self.stopping,
            metrics=self.metrics,
        )
        if stats.waiting_for_hook and (
            self._unhooked_logged is None or now - self._unhooked_logged >= UNHOOKED_LOG_EVERY
        ):
            self._unhooked_logged = now
            log.error(
                "top-up requests are waiting and no hook is configured: set topup.hook.url or "
                "topup.hook.command and restart (see `balancewatch topup list --status pending`)"
            )
        return stats

    def reports(self, now: datetime) -> ReportStats:
        """Send the reports due at ``now``, each once; stops between batches once ``stopping`` is set."""
        with self.lock:
            live = self.live
        return run_due(
            self.engine,
            live,
            self.settings,
            now,
            self.worker,
            stopping=self.stopping,
            zones=self.report_zones,
            metrics=self.metrics,
        )

    def stale_after(self, now: datetime) -> timedelta | None:
        """How long a silent heartbeat means a dead instance, once this one has itself beaten
        for that long (after a database outage every heartbeat is old: none is judged then)."""
        since = self.beating_since
        return STALE_AFTER if since is not None and now - since >= STALE_AFTER else None

    def swap(self, live: LiveSet) -> None:
        """Make ``live`` the set evaluations use from now on; the next one sweeps every balance."""
        with self.lock:
            self.live = live
            self.last_sweep = None


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
        self.started_at = clock()
        self._row_written = False  # until a whole row is in: partial updates need one
        self.failures = FailureLog()
        self._busy = 0  # jobs running now
        self._idle = threading.Condition()
        # The end of the last evaluation (a poll or a sweep) and what it found; None before the first.
        self.last_poll: tuple[datetime, CycleStats | None] | None = None
        self.mail: instance_status.MailCounts | None = None
        self._pruned_at: datetime | None = None
        self.watchdog: watchdog.Watchdog | None = None
        s = self.settings
        self.reloader = Reloader(
            s.rules_dir,
            s.templates_dir,
            pipeline.live,
            pipeline.swap,
            debounce=s.reload.debounce.total_seconds(),
            backstop=s.reload.backstop.total_seconds(),
            on_status=self._record_reload,
            clock=clock,
            metrics=pipeline.metrics,
        )
        self.http: httpserve.MetricsServer | None = None
        self.scheduler = BackgroundScheduler(
            # A worker per job: a long sweep, a slow delivery or a slow top-up hook must not
            # hold up the others or the heartbeat.
            executors={"default": ThreadPoolExecutor(5)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=UTC,
        )

    def job(self, name: str, work: Callable[[], None]) -> Callable[[], None]:
        """``work`` as a scheduler job: counted while it runs (for a bounded shutdown), its
        failures logged through ``failures`` (an outage is a warning a minute, not a traceback)."""

        def run() -> None:
            with self._idle:
                self._busy += 1
            try:
                work()
            except Exception as exc:
                # It runs again at its next interval; the database holds all progress.
                self.failures.failed(name, exc)
            else:
                self.failures.succeeded(name)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return run

    def evaluate_job(self) -> None:
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

    def deliver_job(self) -> None:
        if not self._row_written:
            # Until this run's row is in, the row of an earlier run under a fixed name may still
            # say "stopped": another instance would take over whatever this one claims.
            self.write_status(self._whole_row())
        self.pipeline.deliver(self.clock(), self.clock)

    def _poll_ended(self, stats: CycleStats | None) -> None:
        """An evaluation ended (``stats`` None: it failed): the poll loop made progress."""
        self.last_poll = (self.clock(), stats)
        if self.watchdog is not None:
            self.watchdog.progressed()

    def heartbeat_job(self) -> None:
        try:
            if self._row_written:
                self.write_status({"heartbeat_at": self.clock(), "last_poll_at": self._last_poll_at()})
            else:
                self.write_status(self._whole_row())  # the database was down at start
        except SQLAlchemyError:
            self.pipeline.beating_since = None
            self._tell_systemd()
            raise
        if self.pipeline.beating_since is None:
            self.pipeline.beating_since = self.clock()
        self._end_dead_report_claims()
        self._count_mail()
        self._prune_gone_instances()
        self._tell_systemd()

    def _last_poll_at(self) -> datetime | None:
        return self.last_poll[0] if self.last_poll is not None else None

    def _count_mail(self) -> None:
        with self.pipeline.engine.connect() as conn:
            self.mail = instance_status.mail_counts(conn)

    def _prune_gone_instances(self) -> None:
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        with self.pipeline.engine.begin() as conn:
            gone = instance_status.prune(conn, now)
        self._pruned_at = now
        if gone:
            log.info("forgot %d instances silent for over a week: %s", len(gone), ", ".join(gone))

    def status_line(self) -> str:
        """What ``systemctl status`` shows: the last poll, the mail waiting, the last reload."""
        return status_text(self.last_poll, self.mail, self.reloader.status, len(self.reloader.live.rules))

    def _tell_systemd(self) -> None:
        sdnotify.notify(f"STATUS={self.status_line()}")

    def _end_dead_report_claims(self) -> None:
        """Reports claimed by an instance that stopped or died are taken over at the next report
        run, not a report lease (10 minutes) later. (Outbox rows are taken over as they are claimed.)"""
        now = self.clock()
        with self.pipeline.engine.begin() as conn:
            holders = instance_status.report_claim_holders(conn, self.pipeline.worker)
            dead = (
                instance_status.dead(conn, holders, now, self.pipeline.stale_after(now)) if holders else set()
            )
            ended = instance_status.expire_report_claims(conn, sorted(dead), now)
        if ended:
            log.warning(
                "%d report claims of %s, which stopped or died, are due again", ended, ", ".join(dead)
            )

    def _run_soon(self, job_id: str) -> None:
        if not self.stopping.is_set():
            with contextlib.suppress(JobLookupError):  # the scheduler is shutting down
                self.scheduler.modify_job(job_id, next_run_time=self.clock())

    def _whole_row(self) -> dict[str, Any]:
        """Every column of this instance's row, as it stands now."""
        status = self.reloader.status
        return {
            "started_at": self.started_at,
            "heartbeat_at": self.clock(),
            **live_values(self.reloader.live),
            # A previous run's row (a fixed instance name) is overwritten whole: its reloads are not ours.
            "reload_attempted_at": status.attempted_at,
            "reload_ok": status.ok,
            "reload_reason": status.reason[:REASON_MAX],
            "reload_error": status.error or None,
            "reloads": status.reloads,
            "stopped_at": None,
            "process": procinfo.identity() or None,
            "version": __version__,
            "last_poll_at": self._last_poll_at(),
        }

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
        if self.load_config is None:
            return []
        try:
            new = self.load_config()
        except ProblemsError as exc:
            for problem in exc.problems:
                log.error("config: %s", problem)
            log.error("the config has problems: the running settings stay (a restart would fail)")
            return []
        changed = changed_settings(self.settings, new)
        for key in changed:
            log.warning("%s changed: needs a restart to take effect", key)
        return changed

    def write_status(self, values: Mapping[str, Any]) -> None:
        """Write ``values`` to this instance's status row; raises SQLAlchemyError."""
        with self.pipeline.engine.begin() as conn:
            instance_status.publish(conn, self.pipeline.worker, values)
        if "started_at" in values:
            self._row_written = True

    def publish_status(self, values: Mapping[str, Any]) -> bool:
        """Write ``values`` to this instance's status row; a failure is logged and returns False."""
        try:
            self.write_status(values)
        except SQLAlchemyError as exc:
            # Status is for people looking in; alerting goes on without it.
            self.failures.failed("status", exc)
            return False
        return True

    def _record_reload(self, status: ReloadStatus, live: LiveSet) -> None:
        if not self._row_written:
            self.publish_status(self._whole_row())
            return
        values: dict[str, Any] = {
            "heartbeat_at": self.clock(),
            "reload_attempted_at": status.attempted_at,
            "reload_ok": status.ok,
            "reload_reason": status.reason[:REASON_MAX],
            "reload_error": status.error or None,
            "reloads": status.reloads,
        }
        if status.ok:
            values.update(live_values(live))
        self.publish_status(values)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit status."""
        s = self.settings
        self._install_signals()
        start = self.clock()
        self.started_at = start
        namesake = self._live_namesake(start)
        if self.publish_status(self._whole_row()):
            self.pipeline.beating_since = start
        if namesake is None:
            self._take_back_previous_claims()
        else:
            log.error(
                "another instance is running as %s (process %s): give each instance its own `instance` "
                "name; its messages are left to it",
                self.pipeline.worker,
                namesake,
            )
        if s.reload.watch:
            self.reloader.start()
        self._schedule(start)
        self.scheduler.start()
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
        """Ready while the database answers and polls end in time (a rule set is always loaded:
        the daemon does not start without one, and a refused reload keeps the previous one)."""
        now = self.clock()
        if self.pipeline.beating_since is None:
            return Readiness(False, "the database is unreachable (the last heartbeat failed)")
        if self.last_poll is None:
            waited = int((now - self.started_at).total_seconds())
            return Readiness(False, f"the first poll has not ended yet (started {waited}s ago)")
        at, stats = self.last_poll
        overdue = self.settings.poll_interval * STALLED_POLLS
        if now - at > overdue:
            return Readiness(False, f"no poll has ended for {int((now - at).total_seconds())}s")
        if stats is None:
            return Readiness(False, "the last poll failed (see the log)")
        return Readiness(True)

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
                "deliver",
                self.deliver_job,
                s.delivery.interval.total_seconds(),
                start + timedelta(milliseconds=100),
            ),
            (
                "topup",
                self.topup_job,
                s.delivery.interval.total_seconds(),
                start + timedelta(milliseconds=50),
            ),
            ("reports", self.reports_job, 60.0, start + timedelta(seconds=1)),
            ("heartbeat", self.heartbeat_job, HEARTBEAT.total_seconds(), None),
        ]
        for job_id, work, seconds, first in jobs:
            extra: dict[str, Any] = {"next_run_time": first} if first is not None else {}
            self.scheduler.add_job(
                self.job(job_id, work), "interval", id=job_id, name=job_id, seconds=seconds, **extra
            )

    def _live_namesake(self, now: datetime) -> str | None:
        """The process of another live instance that goes by this one's name (a copied config
        with a fixed ``instance``), or None: an earlier run of this instance, stopped or dead."""
        try:
            with self.pipeline.engine.connect() as conn:
                row = instance_status.get(conn, self.pipeline.worker)
        except SQLAlchemyError:
            return None
        if row is None or row.stopped_at is not None or not row.process or row.process == procinfo.identity():
            return None
        alive = not procinfo.gone(row.process) and now - row.heartbeat_at < STALE_AFTER
        return str(row.process) if alive else None

    def _take_back_previous_claims(self) -> None:
        """Rows still claimed under this instance's name come from an earlier run of it (a
        fixed ``instance`` name, killed): nothing of this run holds any yet, so take them back."""
        try:
            with self.pipeline.engine.begin() as conn:
                taken = outbox.release(conn, self.pipeline.worker, attempted=True)
                instance_status.expire_report_claims(conn, [self.pipeline.worker], self.clock())
        except SQLAlchemyError as exc:
            self.failures.failed("start", exc)
            return
        if taken:
            log.warning(
                "%d messages an earlier run of %s was sending are due again", taken, self.pipeline.worker
            )

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
        if not self._wait_idle(SHUTDOWN_GRACE):
            log.warning("a job is still running after %gs: breaking off the send in flight", SHUTDOWN_GRACE)
            self.pipeline.courier.abort()
            self._wait_idle(ABORT_GRACE)
        handing_back = threading.Thread(target=self._hand_back, name="hand-back", daemon=True)
        handing_back.start()
        handing_back.join(HAND_BACK_GRACE)  # a database that does not answer must not hold the stop
        with self._idle:
            busy = self._busy
        if busy or handing_back.is_alive():
            log.warning(
                "stopped with %d job(s) still running%s",
                busy,
                "" if not handing_back.is_alive() else "; the database did not take the hand-back in time",
            )
            _exit_now()
        log.info("stopped")
        return 0

    def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _hand_back(self) -> None:
        """Record what the courier still keeps, hand back what this instance holds, mark it stopped."""
        courier = self.pipeline.courier
        kept = len(courier.unrecorded.outcomes)
        try:
            with self.pipeline.engine.begin() as conn:
                recorded, released = courier.hand_back(conn)
                instance_status.expire_report_claims(conn, [self.pipeline.worker], self.clock())
                row = {} if self._row_written else self._whole_row()
                instance_status.publish(conn, self.pipeline.worker, {**row, "stopped_at": self.clock()})
        except SQLAlchemyError as exc:
            log.warning(
                "could not mark this instance stopped (%s): another instance takes over what it "
                "held once its heartbeat is %ds old%s",
                str(exc).splitlines()[0],
                STALE_AFTER.total_seconds(),
                f"; {kept} delivered messages are not recorded and may be sent again" if kept else "",
            )
            return
        if recorded:
            log.info("recorded %d delivery outcomes kept while the database was unreachable", recorded)
        if released:
            log.info("handed back %d messages not sent yet", released)

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


def _exit_now() -> None:
    """End the process although threads are still blocked (a hook or server that does not
    answer): their work is handed back already, and waiting would outlast systemd's stop timeout."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


SIGNAL_CHECK = 0.5  # seconds between the main thread's looks at signals received
SHUTDOWN_GRACE = 5.0  # seconds the jobs get to finish what is in flight after SIGTERM
ABORT_GRACE = 2.0  # then, seconds after breaking off a hanging send
HAND_BACK_GRACE = 2.0  # then, seconds the database gets to take what this instance hands back
REASON_MAX = 400  # instance_status.reload_reason
PRUNE_EVERY = timedelta(hours=1)  # how often instances long gone are forgotten
STALLED_POLLS = 3  # poll intervals without a poll ending before /-/ready says no
UNHOOKED_LOG_EVERY = timedelta(hours=1)


def status_text(
    last_poll: tuple[datetime, CycleStats | None] | None,
    mail: instance_status.MailCounts | None,
    reload: ReloadStatus,
    rules: int,
) -> str:
    """One line for ``STATUS=``: e.g. ``last poll 12:00:05 UTC: 40 balances, 2 decided; 3 mail
    pending, 1 parked; 14 rules, last reload ok``. Parts not known yet are left out."""
    parts = []
    if last_poll is not None:
        at, stats = last_poll
        found = (
            f"{stats.candidates} balances, {stats.notifications} decided" if stats is not None else "FAILED"
        )
        parts.append(
            f"last {'sweep' if stats is not None and stats.full else 'poll'} "
            f"{at.strftime('%H:%M:%S')} UTC: {found}"
        )
    else:
        parts.append("first poll running")
    if mail is not None:
        parts.append(f"{mail.pending} mail pending, {mail.parked} parked")
    outcome = {None: "no reload yet", True: "last reload ok", False: "LAST RELOAD REFUSED"}[reload.ok]
    parts.append(f"{rules} rules, {outcome}")
    return "; ".join(parts)


def live_values(live: LiveSet) -> dict[str, Any]:
    """The status columns describing ``live``: what ``status`` shows and ``plan`` compares with."""
    return {
        "live_digest": live.digest,
        "live_rules": len(live.rules),
        "live_loaded_at": live.loaded_at,
        "rule_files": {f.path.name: f.text for f in live.rule_sources},
    }


def changed_settings(running: Settings, new: Settings) -> list[str]:
    """The dotted keys (as written in config.yaml) whose values differ, sorted.

    Secrets are compared, never shown: only the key is returned.
    """
    before, after = _flatten(running.model_dump(by_alias=True)), _flatten(new.model_dump(by_alias=True))
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
    """The pipeline for ``settings``; with ``metrics.listen`` set it records into a registry of its
    own, with the outbox gauges read from ``engine`` at each scrape."""
    transport = make_transport(settings)
    metrics: Recorder = NOOP
    if settings.metrics.listen:
        registry = Metrics()
        outboxgauges.register(registry, engine, settings.transport)
        metrics = registry
    return Pipeline(
        engine,
        settings,
        live,
        transport,
        instance_name(settings),
        stopping=stopping or threading.Event(),
        metrics=metrics,
    )


def describe_transport(settings: Settings) -> str:
    if settings.transport == "smtp":
        s = settings.smtp
        return f"SMTP {s.host}:{s.effective_port} ({s.security.value})"
    return f"files in {settings.mail_dir} (no SMTP host configured)"
