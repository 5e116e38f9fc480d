"""What one delivery attempt means for its outbox row, recipient by recipient: pure, ``now`` passed in.

Each recipient tried is delivered, to be tried again (a 4xx reply, a
connection failure) or parked (a 5xx reply, an invalid address). The row is
pending while any recipient is still to be tried, retried with backoff; once
none is, it is ``sent`` when every recipient has it, else ``parked``. A
recipient still not delivered ``give_up_after`` the decision is parked with
its last error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from balancewatch.config import RetrySettings
from balancewatch.core.metrics import FailureClass
from balancewatch.outbox import PARKED, PENDING, SENT, Claimed, RowUpdate, backoff, give_up_from


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one recipient fared: delivered, or the error, whether it is for good, and how long
    the other side asked us to wait before trying again (``retry_after``)."""

    delivered: bool
    error: str | None = None
    permanent: bool = False
    retry_after: timedelta | None = None


DELIVERED = Attempt(True)


def settle(row: Claimed, attempts: Mapping[str, Attempt], now: datetime, retry: RetrySettings) -> RowUpdate:
    """The row after ``attempts`` (by address, as in ``row.recipients``) were made at ``now``.

    A row without any recipient is parked: it has nowhere to go, and must not pass for sent.
    """
    if not row.recipients:
        return RowUpdate(PARKED, {}, last_error="no recipients: the message has no address to go to")
    deliveries: dict[str, dict[str, Any]] = {a: dict(e) for a, e in row.deliveries.items()}
    for address, attempt in attempts.items():
        entry = deliveries.setdefault(address, {})
        entry.update(attempts=int(entry.get("attempts", 0)) + 1, at=now.isoformat())
        if attempt.delivered:
            entry.update(status=SENT, error=None)
        else:
            entry.update(status=PARKED if attempt.permanent else PENDING, error=attempt.error)
    sent_at = now if any(a.delivered for a in attempts.values()) else None
    due = [a for a in row.recipients if deliveries.get(a, {}).get("status") not in (SENT, PARKED)]
    # A recipient re-queued by hand (`outbox retry`) gets a whole window again from that moment.
    if due and now - give_up_from(row.created_at, deliveries, due) >= retry.give_up_after:
        gave_up = f"gave up after {row.attempts} attempts: "
        summary = gave_up + errors(due, deliveries)
        for address in due:
            entry = deliveries.setdefault(address, {})
            entry.update(status=PARKED, error=gave_up + str(entry.get("error") or "not delivered"))
        return RowUpdate(PARKED, deliveries, last_error=summary, sent_at=sent_at)
    if due:
        delay = backoff(row.attempts, retry.initial, retry.max, row.id)
        asked = [a.retry_after for a in attempts.values() if a.retry_after is not None]
        if asked:
            # Honour the longest wait asked for, within the window left before giving up.
            delay = max(delay, min(max(asked), retry.give_up_after))
        return RowUpdate(PENDING, deliveries, now + delay, errors(due, deliveries), sent_at)
    parked = [a for a in row.recipients if deliveries[a].get("status") == PARKED]
    return RowUpdate(
        PARKED if parked else SENT, deliveries, None, errors(parked, deliveries) or None, sent_at
    )


def errors(addresses: list[str], deliveries: Mapping[str, Mapping[str, Any]]) -> str:
    """``a@x, b@y: the error; c@z: another``: the recipients grouped by their last error."""
    grouped: dict[str, list[str]] = {}
    for address in addresses:
        grouped.setdefault(str(deliveries.get(address, {}).get("error") or "not delivered"), []).append(
            address
        )
    return "; ".join(f"{', '.join(map(shown, who))}: {error}" for error, who in grouped.items())


def shown(address: str) -> str:
    """``address`` for a log line or an error: quoted when it holds a line break or the like."""
    return address if address.isprintable() else repr(address)


def failure_class(attempts: Mapping[str, Attempt]) -> FailureClass | None:
    """How a message attempt failed, counted once per message: ``permanent`` when a recipient
    refused for good (the row is parked), else ``temporary`` when one is to be tried again;
    None when every due recipient has it."""
    failed = [a for a in attempts.values() if not a.delivered]
    if not failed:
        return None
    return "permanent" if any(a.permanent for a in failed) else "temporary"
