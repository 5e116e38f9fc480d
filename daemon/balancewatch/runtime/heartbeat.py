"""This instance's row in ``instance_status`` and the ``STATUS=`` line systemd shows.

The row is written whole once (at start, or at the first chance after a database outage),
then in parts: the heartbeat every few seconds, the outcome of every reload attempt.
Other instances read it to tell whether this one is alive; ``balancewatch status`` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from balancewatch.core import sdnotify
from balancewatch.liveset import LiveSet
from balancewatch.runtime import health, presence
from balancewatch.runtime.health import LastPoll, live_values, status_text
from balancewatch.runtime.outage import FailureLog
from balancewatch.runtime.pipeline import Clock, Pipeline
from balancewatch.runtime.reload import ReloadStatus
from balancewatch.store import status as instance_status

# The daemon's logger: its lines keep the name they had when this lived in service.py.
log = logging.getLogger("balancewatch.runtime.service")

PRUNE_EVERY = timedelta(hours=1)  # how often instances long gone are forgotten

ReloadState = Callable[[], tuple[ReloadStatus, LiveSet]]


class InstanceRow:
    """The status row of ``pipeline.worker`` and what systemd is told.

    ``reload_state`` returns the reloader's last status and the live set, read at each write.
    """

    def __init__(
        self, pipeline: Pipeline, clock: Clock, failures: FailureLog, reload_state: ReloadState
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.failures = failures
        self.reload_state = reload_state
        self.started_at = clock()
        self.written = False  # until a whole row is in: partial updates need one
        # The end of the last evaluation (a poll or a sweep) and what it found; None before the first.
        self.last_poll: LastPoll | None = None
        self.mail: instance_status.MailCounts | None = None
        self._pruned_at: datetime | None = None

    def whole(self) -> dict[str, Any]:
        """Every column of this instance's row, as it stands now."""
        status, live = self.reload_state()
        return health.whole_row(self.started_at, self.clock(), status, live, self.last_poll)

    def write(self, values: Mapping[str, Any]) -> None:
        """Write ``values`` to this instance's status row; raises SQLAlchemyError."""
        with self.pipeline.engine.begin() as conn:
            instance_status.publish(conn, self.pipeline.worker, values)
        if "started_at" in values:
            self.written = True

    def publish(self, values: Mapping[str, Any]) -> bool:
        """Write ``values`` to this instance's status row; a failure is logged and returns False."""
        try:
            self.write(values)
        except SQLAlchemyError as exc:
            # Status is for people looking in; alerting goes on without it.
            self.failures.failed("status", exc)
            return False
        return True

    def record_reload(self, status: ReloadStatus, live: LiveSet) -> None:
        """The reloader's ``on_status``: the outcome of a reload attempt, into the row."""
        if not self.written:
            self.publish(self.whole())
            return
        values: dict[str, Any] = {"heartbeat_at": self.clock(), **health.reload_values(status)}
        if status.ok:
            values.update(live_values(live))
        self.publish(values)

    def beat(self) -> None:
        """The heartbeat job: the row, then the claims of dead instances, the mail counts, the
        instances long gone, and systemd's status line. Raises SQLAlchemyError when the row
        cannot be written (the pipeline then judges no instance dead by its heartbeat)."""
        try:
            if self.written:
                last_poll_at = self.last_poll[0] if self.last_poll is not None else None
                self.write({"heartbeat_at": self.clock(), "last_poll_at": last_poll_at})
            else:
                self.write(self.whole())  # the database was down at start
        except SQLAlchemyError:
            self.pipeline.beating_since = None
            self.tell_systemd()
            raise
        if self.pipeline.beating_since is None:
            self.pipeline.beating_since = self.clock()
        self._end_dead_report_claims()
        with self.pipeline.engine.connect() as conn:
            self.mail = instance_status.mail_counts(conn)
        self._prune_gone_instances()
        self.tell_systemd()

    def status_line(self) -> str:
        """What ``systemctl status`` shows: the last poll, the mail waiting, the last reload."""
        status, live = self.reload_state()
        return status_text(self.last_poll, self.mail, status, len(live.rules))

    def tell_systemd(self) -> None:
        sdnotify.notify(f"STATUS={self.status_line()}")

    def _prune_gone_instances(self) -> None:
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        gone = presence.prune_gone(self.pipeline.engine, now)
        self._pruned_at = now
        if gone:
            log.info("forgot %d instances silent for over a week: %s", len(gone), ", ".join(gone))

    def _end_dead_report_claims(self) -> None:
        """Reports claimed by an instance that stopped or died are taken over at the next report
        run, not a report lease (10 minutes) later. (Outbox rows are taken over as they are claimed.)"""
        now = self.clock()
        pipeline = self.pipeline
        ended, dead = presence.end_dead_report_claims(
            pipeline.engine, pipeline.worker, now, pipeline.stale_after(now)
        )
        if ended:
            log.warning(
                "%d report claims of %s, which stopped or died, are due again", ended, ", ".join(dead)
            )
