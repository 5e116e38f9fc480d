"""Delivery outcomes settled but not written yet, and when they are due to be written.

An email's outcome is written the moment the server accepted it (``every`` 1): a crash
repeats at most the message in flight, and a person cannot tell a repeated email from a new
one. A webhook or chat channel's receiver deduplicates on the event id (``webhook-id``), so
its outcomes are written together, every ``every`` rows or once the oldest has waited
``within`` seconds, whichever comes first: one transaction for many deliveries, at the cost
of repeating at most those after a crash (each with its id). On PostgreSQL those transactions
also do not wait for the disk (``synchronous_commit`` off): a crash of the database server
itself may forget the last outcomes written, and the events are then delivered again, never
lost: a row whose outcome is forgotten is still claimed, or pending again, and is sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from balancewatch.outbox import Claimed, RowUpdate

Settled = tuple[Claimed, RowUpdate]
WITHIN = 0.2  # seconds the oldest outcome of a group may wait to be written


@dataclass
class Pending:
    """Outcomes waiting to be written, oldest first; ``clock`` is monotonic seconds."""

    settled: list[Settled] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    _since: float = 0.0

    def add(self, row: Claimed, update: RowUpdate) -> None:
        if not self.settled:
            self._since = self.clock()
        self.settled.append((row, update))

    def due(self, every: int, within: float = WITHIN) -> bool:
        """Whether the outcomes should be written now, for a channel writing every ``every``."""
        return len(self.settled) >= every or (bool(self.settled) and self.clock() - self._since >= within)

    def take(self) -> list[Settled]:
        """Every waiting outcome, oldest first; none waits afterwards."""
        taken, self.settled = self.settled, []
        return taken

    def __bool__(self) -> bool:
        return bool(self.settled)
