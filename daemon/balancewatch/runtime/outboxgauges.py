"""Outbox gauges read from the database at scrape time, cached briefly, never holding up a scrape.

A scrape reads two grouped queries (rows by channel and status; each channel's oldest row
not done yet)
at most once per ``cache`` seconds, whichever instance or scrape asks. The query
runs in a thread of its own and the scrape waits for it at most ``timeout``
seconds: a database that is down or hanging makes the scrape answer at once with
``balancewatch_database_up 0`` and no outbox gauges (absent rather than stale:
the database-down alert covers the time), while a query still hanging is not
started again until it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select

from balancewatch import outbox
from balancewatch.core.metrics import Metrics
from balancewatch.store.tables import OUTBOX_TABLE

log = logging.getLogger(__name__)

STATUSES = (outbox.QUEUED, outbox.PENDING, outbox.SENDING, outbox.SENT, outbox.PARKED)
NOT_DONE = (outbox.QUEUED, outbox.PENDING, outbox.SENDING)
TIMEOUT = 2.0  # seconds a scrape waits for the database (Prometheus' default scrape timeout is 10s)
CACHE = 5.0  # seconds a reading is reused: several Prometheus servers scraping cost one query


@dataclass(frozen=True, slots=True)
class Reading:
    """The outbox as last read: rows by status, the oldest undone row's creation (None: none),
    or ``up`` False when the database did not answer in time."""

    up: bool
    taken: float  # time.monotonic() when it was taken
    by_channel: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, status) -> rows
    oldest_by_channel: dict[str, datetime] = field(default_factory=dict)  # of the rows not done

    @property
    def by_status(self) -> dict[str, int]:
        """Rows by status, every channel together."""
        out: dict[str, int] = {}
        for (_channel, status), count in self.by_channel.items():
            out[status] = out.get(status, 0) + count
        return out

    @property
    def oldest_undone(self) -> datetime | None:
        """When the oldest row not done yet, of any channel, was decided."""
        return min(self.oldest_by_channel.values(), default=None)


def read_outbox(engine: Engine) -> tuple[dict[tuple[str, str], int], dict[str, datetime]]:
    """Rows by channel and status, and when each channel's oldest pending or sending row was
    created. Raises SQLAlchemyError."""
    c = OUTBOX_TABLE.c
    with engine.connect().execution_options(readonly=True) as conn:
        grouped = conn.execute(
            select(c.channel, c.status, func.count().label("n")).group_by(c.channel, c.status)
        )
        counts = {(row.channel, row.status): int(row.n) for row in grouped}
        undone = select(c.channel, func.min(c.created_at).label("oldest")).where(c.status.in_(NOT_DONE))
        oldest = {row.channel: row.oldest for row in conn.execute(undone.group_by(c.channel))}
    # SQLite hands back what was stored, in UTC, without the zone.
    return counts, {k: v if v.tzinfo else v.replace(tzinfo=UTC) for k, v in oldest.items()}


class OutboxCollector:
    """A prometheus_client collector of the outbox gauges (see the module docstring).

    Each gauge is labelled by ``channel`` and by the ``transport`` that delivers it here:
    ``transports`` maps each channel to it (a bare name stands for the email channel's); a
    channel no transport here delivers is ``none``. ``now`` gives the wall clock the ages are
    measured with.
    """

    def __init__(
        self,
        engine: Engine,
        transports: str | Mapping[str, str],
        *,
        timeout: float = TIMEOUT,
        cache: float = CACHE,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.transports = {outbox.EMAIL: transports} if isinstance(transports, str) else dict(transports)
        self.timeout, self.cache, self.now = timeout, cache, now
        self._lock = threading.Lock()
        self._last: Reading | None = None
        self._running: threading.Event | None = None  # set when the query in flight ends
        self._started = 0.0  # time.monotonic() when the query in flight began
        self._up = True  # as last logged

    def describe(self) -> Iterator[Metric]:
        # Named without a query, so registering never touches the database.
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.reading())

    def reading(self) -> Reading:
        """The cached reading while fresh, else a new one: the database's answer within ``timeout``,
        or a reading with ``up`` False."""
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.taken < self.cache:
                return last
            if self._running is None:
                done = threading.Event()
                self._running, self._started = done, time.monotonic()
                threading.Thread(target=self._query, args=(done,), name="outbox-gauges", daemon=True).start()
            running = self._running
            # A query hanging since before this scrape began gets no more waiting: up 0 at once.
            wait = max(0.0, self._started + self.timeout - time.monotonic())
        if running.wait(wait):
            with self._lock:
                if self._last is not None:
                    return self._last
        self._note(False, f"no answer within {self.timeout:g}s")
        return Reading(False, time.monotonic())

    def _query(self, done: threading.Event) -> None:
        try:
            counts, oldest = read_outbox(self.engine)
            reading = Reading(True, time.monotonic(), counts, oldest)
        except Exception as exc:  # the database's failure, whatever the driver raised: reported as up 0
            reading = Reading(False, time.monotonic())
            self._note(False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            self._note(True, "")
        with self._lock:
            self._last = reading
            self._running = None
        done.set()

    def _note(self, up: bool, why: str) -> None:
        """Log a change of the database's state once, not at every scrape."""
        was, self._up = self._up, up
        if was and not up:
            log.warning("metrics: the outbox gauges cannot be read: %s", why)
        elif up and not was:
            log.info("metrics: the outbox gauges can be read again")

    def _families(self, reading: Reading | None) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "balancewatch_database_up", "1 when the database answered the last scrape's outbox query in time."
        )
        rows = GaugeMetricFamily(
            "balancewatch_outbox_messages",
            "Outbox rows by delivery status and channel.",
            labels=["status", "channel", "transport"],
        )
        age = GaugeMetricFamily(
            "balancewatch_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row not delivered yet (pending or sending), by channel; 0 when "
            "there is none.",
            labels=["channel", "transport"],
        )
        if reading is not None:
            up.add_metric([], 1 if reading.up else 0)
            if reading.up:
                channels = sorted({*self.transports, *(channel for channel, _ in reading.by_channel)})
                for channel in channels:
                    transport = self.transports.get(channel, "none")
                    for status in STATUSES + tuple(
                        sorted({s for c, s in reading.by_channel if c == channel} - set(STATUSES))
                    ):
                        rows.add_metric(
                            [status, channel, transport], reading.by_channel.get((channel, status), 0)
                        )
                    oldest = reading.oldest_by_channel.get(channel)
                    waited = (self.now() - oldest).total_seconds() if oldest else 0.0
                    age.add_metric([channel, transport], max(0.0, waited))
        yield from (up, rows, age)


def register(
    metrics: Metrics,
    engine: Engine,
    transports: str | Mapping[str, str],
    *,
    timeout: float = TIMEOUT,
    cache: float = CACHE,
) -> OutboxCollector:
    """Add the outbox gauges of ``engine`` to ``metrics`` and return their collector."""
    collector = OutboxCollector(engine, transports, timeout=timeout, cache=cache)
    metrics.register(collector)
    return collector
