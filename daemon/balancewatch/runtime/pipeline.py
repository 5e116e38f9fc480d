"""The pipeline: evaluate (decide, then render what was decided), call the top-up hook, send
reports and deliver, each with ``now`` passed in. The daemon runs it on a schedule; ``run
--once``, the demo and rule tests call it directly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from balancewatch.alerts.cycle import CycleStats, poll
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, Metrics, Recorder
from balancewatch.deliver.registry import EMAIL, Registry, email_registry, make_registry
from balancewatch.deliver.worker import Courier, DeliveryStats, Transport
from balancewatch.liveset import LiveSet
from balancewatch.render.stage import Stage, StageStats, render_queued
from balancewatch.reports.accounts import ZoneCache
from balancewatch.reports.runner import ReportStats, run_due
from balancewatch.runtime import datagauges, outboxgauges
from balancewatch.store.status import STALE_AFTER
from balancewatch.topup.hook import Hook, make_hook
from balancewatch.topup.worker import TopupStats, run_topups

# The daemon's logger: its lines keep the name they had when this lived in service.py.
log = logging.getLogger("balancewatch.runtime.service")

Clock = Callable[[], datetime]
UNHOOKED_LOG_EVERY = timedelta(hours=1)  # how often waiting top-ups without a hook are logged again


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
    transport: Registry | Transport
    worker: str
    last_sweep: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    hook: Hook | None = None
    _unhooked_logged: datetime | None = field(default=None, repr=False)
    _rendered_with: LiveSet | None = field(default=None, repr=False)  # the set of the last render pass
    report_zones: ZoneCache = field(default_factory=ZoneCache, repr=False)
    # Since when this instance's heartbeat has been written without a break (None: it is not,
    # or not yet): only then may it judge another instance dead by a stale heartbeat.
    beating_since: datetime | None = None
    # Where every stage records what it did (the daemon's Prometheus registry; NOOP elsewhere).
    metrics: Recorder = NOOP
    # Called as an evaluation moves on (each query and chunk): the systemd watchdog's proof of life.
    progressed: Callable[[], None] | None = None
    # One courier per channel this instance delivers (its lane), so a slow channel holds up no other.
    couriers: dict[str, Courier] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.hook is None:
            self.hook = make_hook(self.settings)
        registry = self.transport
        if not isinstance(registry, Registry):
            registry = email_registry(registry, self.settings)
        self.registry = registry
        self.couriers = {
            channel: Courier(
                self.engine,
                registry,
                self.settings,
                self.worker,
                self.stopping,
                metrics=self.metrics,
                lane=(channel,),
            )
            for channel in registry.channels
        }

    @property
    def courier(self) -> Courier:
        """The email channel's courier (which also notes rows no transport here delivers)."""
        return self.couriers[EMAIL]

    @property
    def lanes(self) -> tuple[str, ...]:
        """The channels delivered here, each by a courier of its own."""
        return tuple(self.couriers)

    def evaluate(self, now: datetime) -> CycleStats:
        """A poll, or a full sweep when one is due (and the first time, and after a swap), then
        the render stage for what it queued (``render``; its errors in ``render_errors``).

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
        stats.render_errors.extend(self.render(now, live).errors)
        return stats

    def render(self, now: datetime, live: LiveSet | None = None) -> StageStats:
        """Render the queued messages due at ``now`` with ``live``'s templates (default: the set
        live now), making them ready for delivery; stops between batches once ``stopping`` is set.
        The first pass with a set (after a start or a reload) tries again at once the messages
        whose template failed."""
        if live is None:
            with self.lock:
                live = self.live
        delivery = self.settings.delivery
        stage = Stage(self.engine, live.templates, self.worker, delivery.lease, delivery.retry)
        # A new set (a reload, a start) may have fixed a template: what waits for a retry goes now.
        changed, self._rendered_with = live is not self._rendered_with, live
        return render_queued(
            stage,
            now,
            stopping=self.stopping,
            progressed=self.progressed,
            stale_after=self.stale_after(now),
            templates_changed=changed,
        )

    def deliver(self, now: datetime, clock: Clock | None = None, lane: str | None = None) -> DeliveryStats:
        """Deliver the due rows of ``lane`` (a channel; default: every channel in turn), batch
        after batch, until none is due, a batch made no progress, or ``stopping`` is set (the
        message in flight is finished; the rest of its batch is handed back).

        ``now`` claims the first batch; each later one reads ``clock`` again, so
        its lease starts when it is claimed, not when the first batch was.
        Raises SQLAlchemyError when the database fails; what was sent is kept
        and recorded by the next call that reaches it.
        """
        total = DeliveryStats()
        for courier in self.couriers.values() if lane is None else (self.couriers[lane],):
            stats = self._deliver_lane(courier, now, clock)
            total.claimed += stats.claimed
            total.outcomes.update(stats.outcomes)
        return total

    def _deliver_lane(self, courier: Courier, now: datetime, clock: Clock | None) -> DeliveryStats:
        total = DeliveryStats()
        while not self.stopping.is_set():
            stats = courier.deliver_batch(now, clock, stale_after=self.stale_after(now))
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


def build_pipeline(
    engine: Engine, settings: Settings, live: LiveSet, stopping: threading.Event | None = None
) -> Pipeline:
    """The pipeline for ``settings``; with ``metrics.listen`` set it records into a registry of its
    own, with the outbox gauges read from ``engine`` at each scrape."""
    transport = make_registry(settings)
    metrics: Recorder = NOOP
    if settings.metrics.listen:
        registry = Metrics()
        outboxgauges.register(registry, engine, {route.channel: route.transport.name for route in transport})
        datagauges.register(registry)
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


def lane_job(lane: str) -> str:
    """The scheduler job delivering ``lane``: ``deliver`` for email, ``deliver:NAME`` for a channel."""
    return "deliver" if lane == EMAIL else f"deliver:{lane}"


def describe_transport(settings: Settings) -> str:
    if settings.transport == "smtp":
        s = settings.smtp
        return f"SMTP {s.host}:{s.effective_port} ({s.security.value})"
    return f"files in {settings.mail_dir} (no SMTP host configured)"
