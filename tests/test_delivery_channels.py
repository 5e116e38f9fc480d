"""Channels: each outbox row goes to the transport registered for its channel; on each backend.

The second channel here ("chat") is a complete in-memory transport, the
shape a webhook or chat transport would have; email goes to real ``.eml``
files through the file transport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.files import FileTransport
from balancewatch.deliver.registry import Registry, make_registry
from balancewatch.deliver.transport import Meanwhile, Ready, Transport
from balancewatch.deliver.worker import Courier
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import T0, Clock

DOMAIN = "platform.example"


@dataclass(frozen=True, slots=True)
class ChatEnvelope:
    """A chat message: one line to each room."""

    line: str
    recipients: tuple[str, ...]
    due: Mapping[str, str]
    rejected: Mapping[str, str] = field(default_factory=dict)


def chat_envelope(row: outbox.Claimed, now: datetime) -> ChatEnvelope:
    rooms = {room: room for room in row.due_recipients}
    return ChatEnvelope(f"{row.subject} ({now:%H:%M})", tuple(rooms.values()), rooms)


class ChatTransport:
    """Posts chat envelopes into ``posted``; ``down`` makes it fail to connect."""

    channel = "chat"
    name = "chat-memory"

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.posted: list[ChatEnvelope] = []

    def __enter__(self) -> ChatTransport:
        if self.down:
            raise TransportError("connect to chat.example: connection refused", connection=True)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(
        self, envelope: ChatEnvelope, ready: Ready | None = None, meanwhile: Meanwhile | None = None
    ) -> dict[str, TransportError]:
        if ready is not None:
            ready()
        self.posted.append(envelope)
        return {}

    def abort(self) -> None:
        """Nothing to break off."""


def typed(transport: ChatTransport) -> Transport[ChatEnvelope]:
    """``transport`` as the protocol sees it: mypy proves ChatTransport is a Transport[ChatEnvelope]."""
    return transport


@pytest.fixture
def settings(db_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(db_url, delivery__transport="files")


def add(engine: Engine, now: datetime, key: str, channel: str, *recipients: str) -> str:
    message = outbox.NewMessage(
        idem_key=key,
        kind="alert",
        sender="Balance alerts <alerts@platform.example>",
        recipients=recipients,
        subject=f"Low balance ({key})",
        text="Your USD balance is low.\n",
        html=None,
        channel=channel,
    )
    with engine.begin() as conn:
        outbox.add(conn, [message], now, DOMAIN)
    return key


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.idem_key: r for r in conn.execute(select(OUTBOX_TABLE))}


def email_and_chat(settings: Settings, chat: ChatTransport) -> Registry:
    registry = make_registry(settings)
    registry.register(typed(chat), chat_envelope)
    return registry


def test_a_message_is_recorded_for_the_email_channel_unless_it_names_another(
    engine: Engine, clock: Clock
) -> None:
    with engine.begin() as conn:
        outbox.add(
            conn,
            [outbox.NewMessage("k/plain", "alert", "s@x.example", ("a@x.example",), "s", "t", None)],
            clock(),
            DOMAIN,
        )
    add(engine, clock(), "k/chat", "chat", "#ops")

    assert {key: row.channel for key, row in rows(engine).items()} == {"k/plain": "email", "k/chat": "chat"}


def test_each_row_goes_to_the_transport_of_its_channel(
    engine: Engine, clock: Clock, settings: Settings
) -> None:
    add(engine, clock(), "k/email", "email", "owner@acme.example")
    add(engine, clock(), "k/chat", "chat", "#billing-alerts")
    chat = ChatTransport()

    stats = Courier(engine, email_and_chat(settings, chat), settings, "w1").deliver_batch(clock())

    assert stats.outcomes == {"sent": 2}
    assert [(e.line, e.recipients) for e in chat.posted] == [
        ("Low balance (k/chat) (09:00)", ("#billing-alerts",))
    ]
    [eml] = list(settings.mail_dir.glob("*.eml"))
    assert "owner@acme.example" in eml.read_text()
    assert "#billing-alerts" not in eml.read_text()
    assert {key: row.status for key, row in rows(engine).items()} == {"k/email": "sent", "k/chat": "sent"}


def test_a_row_for_a_channel_without_a_transport_stays_pending_with_the_reason(
    engine: Engine, clock: Clock, settings: Settings
) -> None:
    add(engine, clock(), "k/email", "email", "owner@acme.example")
    add(engine, clock(), "k/hook", "webhook", "https://hooks.example/balance")
    courier = Courier(engine, make_registry(settings), settings, "w1")

    assert courier.deliver_batch(clock()).outcomes == {"sent": 1}
    assert courier.deliver_batch(clock.advance(minutes=1)).claimed == 0

    hook = rows(engine)["k/hook"]
    # Not claimed, not counted as an attempt, still due: an instance that delivers it takes it at once.
    assert (hook.status, hook.attempts, hook.claimed_by, hook.next_attempt_at) == ("pending", 0, None, T0)
    assert hook.last_error == (
        "no transport for channel 'webhook' on w1 (it delivers email); waiting for an instance that has one"
    )


def test_an_instance_with_the_channels_transport_delivers_a_row_another_could_not(
    engine: Engine, clock: Clock, settings: Settings
) -> None:
    add(engine, clock(), "k/chat", "chat", "#ops")
    Courier(engine, make_registry(settings), settings, "email-only").deliver_batch(clock())
    chat = ChatTransport()

    stats = Courier(engine, email_and_chat(settings, chat), settings, "w2").deliver_batch(clock())

    assert (stats.outcomes, len(chat.posted)) == ({"sent": 1}, 1)
    row = rows(engine)["k/chat"]
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)


def test_a_transport_that_cannot_connect_holds_back_only_its_own_channel(
    engine: Engine, clock: Clock, settings: Settings
) -> None:
    add(engine, clock(), "k/chat-1", "chat", "#ops")
    add(engine, clock(), "k/email", "email", "owner@acme.example")
    add(engine, clock(), "k/chat-2", "chat", "#billing")

    stats = Courier(engine, email_and_chat(settings, ChatTransport(down=True)), settings, "w1").deliver_batch(
        clock()
    )

    assert stats.outcomes == {"retry": 2, "sent": 1}
    found = rows(engine)
    assert {key: row.status for key, row in found.items()} == {
        "k/chat-1": "pending",
        "k/email": "sent",
        "k/chat-2": "pending",
    }
    assert found["k/chat-2"].last_error == "#billing: connect to chat.example: connection refused"


def test_a_claim_limited_to_channels_leaves_the_others_alone(engine: Engine, clock: Clock) -> None:
    add(engine, clock(), "k/email", "email", "owner@acme.example")
    add(engine, clock(), "k/chat", "chat", "#ops")

    with engine.begin() as conn:
        claimed = outbox.claim(conn, "w1", clock(), 10, timedelta(minutes=5), channels=("email",))

    assert [(row.idem_key, row.channel) for row in claimed] == [("k/email", "email")]
    assert rows(engine)["k/chat"].status == "pending"


def test_a_channel_takes_one_transport() -> None:
    registry = Registry()
    registry.register(typed(ChatTransport()), chat_envelope)

    with pytest.raises(ValueError, match="channel 'chat' is delivered by chat-memory already"):
        registry.register(typed(ChatTransport()), chat_envelope)


def test_smtp_and_files_are_two_ways_of_delivering_email(settings: Settings) -> None:
    registry = make_registry(settings)

    assert registry.channels == ("email",)
    route = registry.route("email")
    assert route is not None and isinstance(route.transport, FileTransport)
    assert registry.route("chat") is None
