"""The outbox: every notification decided, once, and how its delivery went.

A row is inserted in the same transaction as the state change that decided
it, under a unique idempotency key; a second decision of the same thing
fails on that key instead of sending twice (``add``). Each row names the
``channel`` that delivers it (``email``). Delivery claims rows with a lease
(compare-and-set; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any instance
may die at any time: an expired lease makes the row claimable again
(``claim``).

Statuses: ``queued`` (decided, its message not rendered yet: ``render/stage.py`` renders it
and makes it pending), ``pending`` (waiting, maybe after failed attempts), ``sending``
(claimed under a lease), ``sent`` (every recipient has it), ``parked`` (done,
and at least one recipient refused for good: the reason is in ``last_error``
and in that recipient's entry of ``deliveries``; never retried, never dropped).

Outcomes are kept per recipient in ``deliveries``, because an SMTP server
answers per recipient: one may be greylisted (tried again later, alone), one
refused for good (parked), the others delivered; a message is done when every
recipient is. A claim is also taken over at once from an instance known to
have died or stopped (``dead``), not only once its lease has run out.

An operator reads the outbox through ``Filters`` and ``newest`` (``query``),
and puts parked recipients back in line with ``requeue_refs`` and
``requeue_parked`` (``requeue``).

The modules: ``rows`` (the values and statuses), ``add``, ``queued`` (rows waiting
for the render stage), ``claim`` (the lease: claim, renew, record, release),
``retry`` (backoff and giving up),
``query`` and ``requeue``. Every public name is here, as ``outbox.add``.
"""

from __future__ import annotations

from balancewatch.outbox.add import (
    add,
    channel_key,
    decision_key,
    event_id,
    message_domain,
    message_id,
    unique_addresses,
)
from balancewatch.outbox.claim import (
    claim,
    claimers,
    note_undeliverable,
    record,
    record_and_renew,
    record_many,
    release,
    renew,
    select_by_key,
)
from balancewatch.outbox.query import Filters, newest
from balancewatch.outbox.queued import (
    NotRendered,
    Queued,
    Written,
    due_now,
    holders,
    note_not_rendered,
    release_queued,
    take_queued,
    write_rendered,
)
from balancewatch.outbox.requeue import NotRequeued, Requeued, requeue_parked, requeue_refs
from balancewatch.outbox.retry import backoff, give_up_from
from balancewatch.outbox.rows import (
    EMAIL,
    PARKED,
    PENDING,
    QUEUED,
    SENDING,
    SENT,
    Attachment,
    Claimed,
    NewMessage,
    RowUpdate,
)
from balancewatch.store.tables import OUTBOX_TABLE

__all__ = [
    "EMAIL",
    "OUTBOX_TABLE",
    "PARKED",
    "PENDING",
    "QUEUED",
    "SENDING",
    "SENT",
    "Attachment",
    "Claimed",
    "Filters",
    "NewMessage",
    "NotRendered",
    "NotRequeued",
    "Queued",
    "Requeued",
    "RowUpdate",
    "Written",
    "add",
    "backoff",
    "channel_key",
    "claim",
    "claimers",
    "decision_key",
    "due_now",
    "event_id",
    "give_up_from",
    "holders",
    "message_domain",
    "message_id",
    "newest",
    "note_not_rendered",
    "note_undeliverable",
    "record",
    "record_and_renew",
    "record_many",
    "release",
    "release_queued",
    "renew",
    "requeue_parked",
    "requeue_refs",
    "select_by_key",
    "take_queued",
    "unique_addresses",
    "write_rendered",
]
