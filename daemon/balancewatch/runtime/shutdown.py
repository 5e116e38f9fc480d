"""Stopping within a bound: signals that ask for it, the count of jobs still running, the
hand-back of what this instance holds, and the hard exit when something will not let go.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from balancewatch.runtime.pipeline import Clock, Pipeline
from balancewatch.store import status as instance_status
from balancewatch.store.status import STALE_AFTER

# The daemon's logger: its lines keep the name they had when this lived in service.py.
log = logging.getLogger("balancewatch.runtime.service")

SIGNAL_CHECK = 0.5  # seconds between the main thread's looks at signals received
SHUTDOWN_GRACE = 5.0  # seconds the jobs get to finish what is in flight after SIGTERM
ABORT_GRACE = 2.0  # then, seconds after breaking off a hanging send
HAND_BACK_GRACE = 2.0  # then, seconds the database gets to take what this instance hands back


class RunningJobs:
    """How many scheduler jobs are running now, so a stop can wait for them within a bound."""

    def __init__(self) -> None:
        self.busy = 0
        self._idle = threading.Condition()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Counts the block as a running job."""
        with self._idle:
            self.busy += 1
        try:
            yield
        finally:
            with self._idle:
                self.busy -= 1
                self._idle.notify_all()

    def now(self) -> int:
        """The jobs running at this moment."""
        with self._idle:
            return self.busy

    def wait_idle(self, seconds: float) -> bool:
        """Whether every job ended within ``seconds``."""
        deadline = time.monotonic() + seconds
        with self._idle:
            while self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def hand_back(pipeline: Pipeline, clock: Clock, row: dict[str, object]) -> None:
    """Record what the courier still keeps, hand back what this instance holds, and mark it
    stopped (writing ``row`` too: the whole row when none was written yet). A database that
    fails is logged, never raised: another instance takes over once the heartbeat is stale."""
    couriers = list(pipeline.couriers.values())
    kept = sum(len(courier.unrecorded.outcomes) for courier in couriers)
    try:
        with pipeline.engine.begin() as conn:
            # Every lane's kept outcomes first: handing back releases the rows of all lanes.
            recorded = sum(c.record_kept(conn) for c in couriers if c is not pipeline.courier)
            email_recorded, released = pipeline.courier.hand_back(conn)
            recorded += email_recorded
            instance_status.expire_report_claims(conn, [pipeline.worker], clock())
            instance_status.publish(conn, pipeline.worker, {**row, "stopped_at": clock()})
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


def exit_now() -> None:
    """End the process although threads are still blocked (a hook or server that does not
    answer): their work is handed back already, and waiting would outlast systemd's stop timeout."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def stop_on_signals(stopping: threading.Event) -> None:
    """Make SIGTERM and SIGINT set ``stopping``: installed first thing, so a stop
    during start-up (rules loading, schema upgrade) still ends with exit status 0."""

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
