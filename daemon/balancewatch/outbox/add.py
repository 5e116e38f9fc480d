"""Decisions into the outbox: each message once, under its idempotency key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from balancewatch.config import Settings
from balancewatch.outbox.rows import PENDING, QUEUED, NewMessage
from balancewatch.store.tables import OUTBOX_TABLE


def unique_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """``addresses`` stripped, without blanks or repeats; ``A@X.example`` repeats ``a@x.example``.

    Mail systems treat addresses without regard to case in practice, so the
    owner's address written in other capitals (in preferences, or a rule)
    would otherwise get the same email twice. The first spelling is kept.
    """
    seen: dict[str, str] = {}
    for address in addresses:
        text = address.strip()
        if text and text.casefold() not in seen:
            seen[text.casefold()] = text
    return tuple(seen.values())


def message_id(idem_key: str, domain: str) -> str:
    """A Message-ID derived from the idempotency key: a duplicate delivery is detectable."""
    digest = hashlib.sha256(idem_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def channel_key(decision_key: str, channel: str) -> str:
    """The idempotency key of a decision's row on a named channel; the email row keeps the
    decision's own key."""
    return f"{decision_key}#{channel}"


def decision_key(idem_key: str) -> str:
    """The decision a row's key belongs to (``channel_key`` undone; an email row's key is its own)."""
    head, sep, channel = idem_key.rpartition("#")
    return head if sep and channel and "/" not in channel else idem_key


def event_id(key: str) -> str:
    """The id an event about the decision ``key`` carries on every channel and every delivery
    (a webhook's ``webhook-id``): receivers deduplicate on it."""
    return "msg_" + hashlib.sha256(decision_key(key).encode()).hexdigest()[:32]


def message_domain(settings: Settings) -> str:
    """The right-hand side of Message-IDs: configured, else the sender's domain."""
    if settings.delivery.message_id_domain:
        return settings.delivery.message_id_domain
    sender = settings.delivery.sender
    domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else ""
    return domain or "balancewatch.invalid"


_FIELDS = tuple(f.name for f in fields(NewMessage))


def add(conn: Connection, messages: Sequence[NewMessage], now: datetime, domain: str) -> None:
    """Insert ``messages`` as pending, each on its ``channel`` (``email`` unless it says
    otherwise), or as queued for the render stage when it carries a ``context``; raises
    IntegrityError if a key was already decided."""
    if not messages:
        return
    rows = []
    for m in messages:
        # Field by field: ``asdict`` deep-copies every value (16 µs a message against 1).
        row: dict[str, Any] = {name: getattr(m, name) for name in _FIELDS}
        row["recipients"] = list(unique_addresses(m.recipients))
        row["deliveries"] = {}
        row["attachments"] = [asdict(a) for a in m.attachments]
        row.update(
            message_id=message_id(m.idem_key, domain),
            status=PENDING if m.context is None else QUEUED,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        rows.append(row)
    conn.execute(insert(OUTBOX_TABLE), rows)
