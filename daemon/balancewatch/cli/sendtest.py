"""``balancewatch send-test``: one real message through the email transport or a named channel.

The message is sent straight through the transport, then recorded as sent: one that fails
leaves nothing in the outbox for the daemon to retry later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update

from balancewatch import outbox
from balancewatch.cli.common import CommandError, Ctx
from balancewatch.config import Settings
from balancewatch.config.channels import EmailChannel, WebhookChannel
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.outcome import DELIVERED, settle
from balancewatch.deliver.registry import Route, make_registry
from balancewatch.deliver.transport import Envelope
from balancewatch.render.fanout import Event, payload
from balancewatch.runtime.service import describe_transport, instance_name
from balancewatch.store.tables import OUTBOX_TABLE


def register(commands: Any) -> None:
    send = commands.add_parser(
        "send-test",
        help="send one real test message by email or through a channel",
        description="Sends at once, through the configured email transport (--to) or a channel of "
        "the config (--channel); exit 1 with the reason when it is not delivered.",
    )
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="ADDR", help="an email address")
    target.add_argument(
        "--channel", metavar="NAME", help="a channel of config.yaml's channels: (webhook, chat or email)"
    )
    send.set_defaults(handler=cmd_send_test)


def cmd_send_test(ctx: Ctx) -> int:
    settings = ctx.settings
    name = ctx.args.channel
    if name is not None and name not in settings.channels:
        known = ", ".join(sorted(settings.channels)) or "none: add a channels: section to config.yaml"
        raise CommandError(f"no channel {name!r} in the config (channels: {known})")
    engine = ctx.engine  # before sending: a database that fails now has not cost a message
    now = ctx.now()
    message = _test_message(settings, name, ctx.args.to, now)
    registry = make_registry(settings)
    route = registry.route(message.channel)
    if route is None:  # make_registry registers every webhook and chat channel
        raise CommandError(f"no transport for channel {message.channel!r}")
    row = _claimed(message, settings, now)
    _send_now(route, row, now)
    deliveries = settle(
        row, dict.fromkeys(row.recipients, DELIVERED), now, settings.delivery.retry
    ).deliveries
    with engine.begin() as conn:
        outbox.add(conn, [message], now, outbox.message_domain(settings))
        conn.execute(
            update(OUTBOX_TABLE)
            .where(OUTBOX_TABLE.c.idem_key == message.idem_key)
            .values(status=outbox.SENT, attempts=1, sent_at=now, deliveries=deliveries)
        )
    where = f"channel {name} ({_describe(settings, name)})" if name else describe_transport(settings)
    ctx.say(f"sent to {', '.join(message.recipients)} via {where}")
    return 0


def _describe(settings: Settings, name: str) -> str:
    channel = settings.channels[name]
    if isinstance(channel, EmailChannel):
        return f"email: {describe_transport(settings)}"
    return channel.describe()


def _test_message(settings: Settings, name: str | None, to: str | None, now: datetime) -> outbox.NewMessage:
    """The test message for ``--to`` or channel ``name``: an email, a ``test`` event or a chat line."""
    who = instance_name(settings)
    text = f"This is a test message from balancewatch ({who}).\n"
    key = f"test/{name or to}/{now.isoformat()}"
    channel = settings.channels.get(name) if name else None
    common: dict[str, Any] = {
        "idem_key": key,
        "kind": "test",
        "sender": settings.delivery.sender,
        "html": None,
    }
    if channel is None or isinstance(channel, EmailChannel):
        recipients = (to,) if to else tuple(channel.to if channel else ())
        text += f"Transport: {describe_transport(settings)}\n"
        return outbox.NewMessage(
            recipients=outbox.unique_addresses(recipients),
            subject="balancewatch test message",
            text=text,
            **common,
        )
    assert name is not None
    if isinstance(channel, WebhookChannel):
        event = Event("test", now, {"instance": who, "channel": name})
        return outbox.NewMessage(
            recipients=(name,), subject="test", text=payload(event, key), channel=name, **common
        )
    return outbox.NewMessage(
        recipients=(name,), subject="balancewatch test message", text=text.strip(), channel=name, **common
    )


def _claimed(message: outbox.NewMessage, settings: Settings, now: datetime) -> outbox.Claimed:
    return outbox.Claimed(
        id=0,
        idem_key=message.idem_key,
        message_id=outbox.message_id(message.idem_key, outbox.message_domain(settings)),
        sender=message.sender,
        recipients=message.recipients,
        subject=message.subject,
        text=message.text,
        html=message.html,
        attempts=0,
        created_at=now,
        channel=message.channel,
    )


def _send_now(route: Route[Any], row: outbox.Claimed, now: datetime) -> None:
    """Hand ``row`` to ``route``'s transport; raises CommandError with the reason in one line."""
    try:
        envelope: Envelope = route.envelope(row, now)
    except TransportError as exc:
        raise CommandError(f"not sent: {exc}") from None
    if envelope.rejected:
        raise CommandError("; ".join(f"{a}: {why}" for a, why in envelope.rejected.items()))
    try:
        with route.transport:
            refused = route.transport.send(envelope)
    except TransportError as exc:
        raise CommandError(f"not sent: {exc}") from None
    if refused:
        raise CommandError("not sent: " + "; ".join(f"{a}: {err}" for a, err in refused.items()))
