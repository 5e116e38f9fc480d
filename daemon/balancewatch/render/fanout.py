"""One decision, every destination: the email row and one outbox row per named channel.

A producer renders its email as before and names the channels its rule or report lists
(``channel:NAME``); :func:`fan_out` turns that into outbox rows, one per (decision,
destination), written in the same transaction as the decision:

- the email row, under the decision's own key, to the addresses the rule names plus those
  of every ``email`` channel named (left out when it has no address at all while another
  channel gets the message: a rule may notify only a chat channel);
- a ``webhook`` row per webhook channel: the versioned JSON event (docs/webhooks.md), the
  same bytes on every delivery;
- a ``chat`` row per chat channel: the template's ``chat.txt`` (else its subject).

An email queued for the render stage (``NewMessage.context`` set: an alert) queues its chat rows
too, each with the context packed for the chat part (``chat_context``); they are rendered later.

Channel rows are keyed ``<decision key>#<channel>``, so each is decided once like the email,
and every event of one decision carries the same id (``outbox.event_id``) everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from balancewatch import outbox
from balancewatch.config.channels import Channel, ChatChannel, EmailChannel, WebhookChannel
from balancewatch.core.money import MoneyError, to_major

PAYLOAD_VERSION = 1
WEBHOOK, CHAT = "webhook", "chat"  # the kinds of channel row, beside the email row


@dataclass(frozen=True, slots=True)
class Event:
    """What a webhook receiver is told: ``type`` (``balance.below``...), when it was decided,
    and its ``data`` (the type's fields, docs/webhooks.md)."""

    type: str
    occurred_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


def amount(minor: int | None, currency: str) -> dict[str, Any] | None:
    """An amount as events carry it: integer minor units and the exact decimal string
    (``{"minor": 1234, "decimal": "12.34"}``); None stays None."""
    if minor is None:
        return None
    try:
        decimal = str(to_major(minor, currency))
    except MoneyError:  # a currency the platform wrote that is not ISO 4217: two decimals
        decimal = str(to_major(minor, "USD"))
    return {"minor": minor, "decimal": decimal}


def payload(event: Event, decision_key: str) -> str:
    """The webhook body of ``event`` (compact JSON, UTF-8 text): version, id, type, key,
    occurred_at and data."""
    body = {
        "version": PAYLOAD_VERSION,
        "id": outbox.event_id(decision_key),
        "type": event.type,
        "key": decision_key,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)


def fan_out(
    email: outbox.NewMessage,
    channels: Sequence[str],
    configured: Mapping[str, Channel],
    event: Callable[[], Event],
    chat: Callable[[], str | None] = lambda: None,
    chat_context: Callable[[], str] | None = None,
) -> list[outbox.NewMessage]:
    """The rows of one decision whose email is ``email`` (under the decision's key), for the
    named ``channels`` as ``configured``. ``event`` and ``chat`` (or, for a queued email,
    ``chat_context``) are called only when a webhook or a chat channel is named. A channel
    missing from ``configured`` (a config changed under a running set) is skipped: ``check``
    reports it."""
    if not channels:
        return [email]
    named = [(name, configured[name]) for name in channels if name in configured]
    extra = [a for _name, c in named if isinstance(c, EmailChannel) for a in c.to]
    rows: list[outbox.NewMessage] = []
    recipients = outbox.unique_addresses([*email.recipients, *extra])
    others = [(name, c) for name, c in named if not isinstance(c, EmailChannel)]
    if recipients or not others:
        rows.append(replace(email, recipients=recipients))
    made_event: Event | None = None
    chat_text: str | None = None
    for name, channel in others:
        key = outbox.channel_key(email.idem_key, name)
        if isinstance(channel, WebhookChannel):
            made_event = made_event or event()
            webhook = _row(email, key, name, made_event.type, payload(made_event, email.idem_key))
            rows.append(replace(webhook, template=None))
        elif isinstance(channel, ChatChannel) and email.context is not None:
            queued = chat_context() if chat_context is not None else email.context
            rows.append(replace(_row(email, key, name, "", ""), context=queued))
        elif isinstance(channel, ChatChannel):
            chat_text = chat_text or chat() or email.subject
            rows.append(_row(email, key, name, email.subject, chat_text))
    return rows


def _row(email: outbox.NewMessage, key: str, channel: str, subject: str, text: str) -> outbox.NewMessage:
    return replace(
        email,
        idem_key=key,
        channel=channel,
        recipients=(channel,),
        subject=subject,
        text=text,
        html=None,
        attachments=(),
        context=None,  # rendered already, or made of no template (a webhook's event)
    )


def wants_chat(channels: Sequence[str], configured: Mapping[str, Channel]) -> bool:
    """Whether any of ``channels`` is a chat channel: only then is ``chat.txt`` rendered."""
    return any(isinstance(configured.get(name), ChatChannel) for name in channels)
