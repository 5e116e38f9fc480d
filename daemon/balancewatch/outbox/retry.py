"""When a row is tried again, and when its recipients are given up on: pure, no database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any


def backoff(attempts: int, initial: timedelta, ceiling: timedelta, row_id: int = 0) -> timedelta:
    """The delay before attempt ``attempts + 1``: ``initial`` doubled per attempt, never above ``ceiling``.

    Up to 10% is taken off, derived from the row id, so many rows failing
    together do not all retry in the same second, yet the delay stays
    reproducible. Any number of attempts works (no overflow).
    """
    doublings = min(max(attempts - 1, 0), 64)
    seconds = min(initial.total_seconds() * 2.0**doublings, ceiling.total_seconds())
    spread = (hashlib.sha256(f"{row_id}:{attempts}".encode()).digest()[0] / 255) * 0.1
    return timedelta(seconds=seconds * (1 - spread))


def give_up_from(
    created_at: datetime, deliveries: Mapping[str, Mapping[str, Any]], due: Iterable[str]
) -> datetime:
    """When the give-up window of the ``due`` recipients began: the decision, or for a recipient
    re-queued by hand (``requeued_at`` in its entry) that moment; the earliest of them counts."""
    starts = []
    for address in due:
        requeued = deliveries.get(address, {}).get("requeued_at")
        starts.append(datetime.fromisoformat(requeued) if requeued else created_at)
    return min(starts, default=created_at)
