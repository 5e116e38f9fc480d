"""The values an outbox row goes through: decided (``NewMessage``), claimed (``Claimed``),
settled after an attempt (``RowUpdate``); and the statuses it takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

QUEUED, PENDING, SENDING, SENT, PARKED = "queued", "pending", "sending", "sent", "parked"
# A recipient's own status in ``deliveries``: PENDING (tried, to be tried again), SENT or PARKED.

EMAIL = "email"  # the channel of every message until another is registered in deliver/


@dataclass(frozen=True, slots=True)
class Attachment:
    """A text file sent with a message (a report's CSV, say)."""

    filename: str
    content_type: str
    content: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A notification ready to be recorded, for delivery on ``channel``: rendered, or (with
    ``context``, the packed template context; ``subject``, ``text`` and ``html`` then empty) to
    be rendered with ``template`` by the render stage once its decision has committed."""

    idem_key: str
    kind: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    rule_id: str | None = None
    account_id: str | None = None
    currency: str | None = None
    step: int | None = None
    attachments: tuple[Attachment, ...] = ()
    channel: str = EMAIL
    template: str | None = None
    context: str | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row claimed for delivery on its ``channel``."""

    id: int
    idem_key: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    attempts: int
    created_at: datetime
    attachments: tuple[Attachment, ...] = ()
    deliveries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    channel: str = EMAIL

    @property
    def due_recipients(self) -> tuple[str, ...]:
        """The recipients still to be sent to: neither delivered nor parked."""
        return tuple(
            r for r in self.recipients if self.deliveries.get(r, {}).get("status") not in (SENT, PARKED)
        )


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """What one delivery attempt leaves in a claimed row (``deliver.outcome.settle`` makes it)."""

    status: str
    deliveries: Mapping[str, Mapping[str, Any]]
    next_attempt_at: datetime | None = None  # for PENDING: when to try the due recipients again
    last_error: str | None = None
    sent_at: datetime | None = None  # set when some recipient got it in this attempt
