"""Which transport delivers each channel in this daemon, and how a row becomes its envelope."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, Generic

from balancewatch.config import Settings
from balancewatch.config.channels import ChatChannel, WebhookChannel
from balancewatch.core.problems import ProblemsError
from balancewatch.deliver.chat import ChatTransport, build_chat
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.files import FileTransport
from balancewatch.deliver.message import EmailEnvelope, build
from balancewatch.deliver.outcome import DELIVERED, Attempt
from balancewatch.deliver.ratelimit import RateLimit
from balancewatch.deliver.smtp import SmtpTransport
from balancewatch.deliver.transport import EnvelopeT, Meanwhile, Ready, Transport
from balancewatch.deliver.webhook import WebhookTransport, build_webhook
from balancewatch.outbox import Claimed

EMAIL = "email"
# Outcomes of a webhook or chat channel written per transaction: its receiver deduplicates on
# the event id, so a crash repeating up to this many deliveries costs nothing but the repeat.
DEDUPLICATED_EVERY = 20

Builder = Callable[[Claimed, datetime], EnvelopeT]


@dataclass(frozen=True, slots=True)
class Route(Generic[EnvelopeT]):
    """A channel's transport with the builder of the envelopes it sends, and the pace the
    channel allows (``limit``: its ``rate``, messages a second)."""

    transport: Transport[EnvelopeT]
    envelope: Builder[EnvelopeT]
    limit: RateLimit | None = None
    # How many outcomes are written in one transaction (deliver/pending.py): 1 for email.
    record_every: int = 1

    @property
    def channel(self) -> str:
        return self.transport.channel

    def pace(self, stopping: threading.Event) -> bool:
        """Wait until the channel's rate allows the next message; False if ``stopping`` was set
        meanwhile (send nothing more then)."""
        if self.limit is None:
            return not stopping.is_set()
        return self.limit.wait(stopping)

    def attempt(
        self, row: Claimed, now: datetime, ready: Ready | None = None, ahead: Ahead | None = None
    ) -> dict[str, Attempt]:
        """Send ``row`` to its due recipients, in an open session; how each fared, by address
        as the row spells it. Raises TransportError only for a connection failure, which says
        nothing about the message. ``ready`` goes to the transport (``Transport.send``): what it
        raises propagates, the row not delivered. With ``ahead``, the envelope built ahead for
        ``row`` is used if there is one, and ``ahead.next`` is built while the other side
        takes this message."""
        try:
            envelope = ahead.take(row) if ahead is not None else None
            if envelope is None:
                envelope = self.envelope(row, now)
            meanwhile = ahead.meanwhile(self) if ahead is not None else None
            if not envelope.recipients:
                refused = {}
            elif ready is None and meanwhile is None:
                refused = self.transport.send(envelope)
            else:
                refused = self.transport.send(envelope, ready, meanwhile)
        except TransportError as exc:
            if exc.connection:
                raise
            return {a: Attempt(False, str(exc), exc.permanent, exc.retry_after) for a in row.due_recipients}
        attempts: dict[str, Attempt] = {}
        for address in row.due_recipients:
            if address in envelope.rejected:
                attempts[address] = Attempt(False, envelope.rejected[address], permanent=True)
                continue
            error = refused.get(envelope.due[address])
            attempts[address] = (
                DELIVERED if error is None else Attempt(False, str(error), error.permanent, error.retry_after)
            )
        return attempts


class Ahead:
    """The envelope of the row to send next (``next``), built while the other side takes the one
    before it (``Meanwhile``): the courier's own work overlaps the server's instead of following
    it. Holds at most one envelope, or what building it raised, for the row it was built for."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.next: Claimed | None = None  # the row to build ahead, set by the courier per message
        self._built: tuple[int, Any] | None = None  # (row id, envelope or the exception raised)

    def meanwhile(self, route: Route[Any]) -> Meanwhile | None:
        """What builds ``next`` with ``route``'s builder when called (never raising); None when
        there is no next row, it goes through another channel, or the channel's rate makes the
        next message wait anyway (its Date then says when it was made, not a pace earlier)."""
        row = self.next
        if row is None or row.channel != route.channel or route.limit is not None:
            return None

        def build() -> None:
            try:
                made: Any = route.envelope(row, self.clock())
            except Exception as exc:  # raised again when the row is sent: see take
                made = exc
            self._built = (row.id, made)

        return build

    def take(self, row: Claimed) -> Any:
        """``row``'s envelope if it was built ahead (raising what building it raised), else None."""
        built, self._built = self._built, None
        if built is None or built[0] != row.id:
            return None
        if isinstance(built[1], Exception):
            raise built[1]
        return built[1]


class Registry:
    """The channels this daemon delivers, each through one transport.

    A new channel (webhook, chat) needs a transport declaring that ``channel`` and an
    envelope builder for it, registered here (``make_registry``); rows of a channel with no
    transport are left for an instance that has one (see ``outbox.note_undeliverable``).
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route[Any]] = {}

    def register(
        self,
        transport: Transport[EnvelopeT],
        envelope: Builder[EnvelopeT],
        rate: Decimal = Decimal(0),
        record_every: int = 1,
    ) -> None:
        """Deliver ``transport.channel`` through ``transport``; raises ValueError if that channel
        has a transport already (two ways of delivering one channel are a configuration choice,
        not both at once)."""
        if transport.channel in self._routes:
            held = self._routes[transport.channel].transport.name
            raise ValueError(f"channel {transport.channel!r} is delivered by {held} already")
        limit = RateLimit(rate) if rate else None
        self._routes[transport.channel] = Route(transport, envelope, limit, record_every)

    def route(self, channel: str) -> Route[Any] | None:
        """The route of ``channel``; None when this daemon has no transport for it."""
        return self._routes.get(channel)

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels delivered here, in the order they were registered."""
        return tuple(self._routes)

    def __iter__(self) -> Iterator[Route[Any]]:
        return iter(self._routes.values())

    def abort(self) -> None:
        """Break off every send in progress (a shutdown that cannot wait for a slow server)."""
        for route in self:
            route.transport.abort()


class Sessions(contextlib.ExitStack):
    """The transports of one batch, each entered at the first row that needs it and left,
    in reverse order, when the batch ends."""

    def __init__(self) -> None:
        super().__init__()
        self._open: set[str] = set()

    def open(self, route: Route[Any]) -> None:
        """Enter ``route``'s transport unless it is open; raises its TransportError."""
        if route.channel not in self._open:
            self.enter_context(route.transport)
            self._open.add(route.channel)


def make_transport(settings: Settings) -> SmtpTransport | FileTransport:
    """The configured email transport: SMTP when a host is set (or asked for), else files."""
    if settings.transport == "smtp":
        return SmtpTransport(settings.smtp, settings.smtp_password())
    return FileTransport(settings.mail_dir)


def email_registry(transport: Transport[EmailEnvelope], settings: Settings) -> Registry:
    """A registry of the email channel alone, delivered through ``transport``."""
    registry = Registry()
    registry.register(transport, partial(build, reply_to=settings.delivery.reply_to))
    return registry


def make_registry(settings: Settings) -> Registry:
    """Every channel this daemon is configured to deliver: email (SMTP or files), then each
    webhook and chat channel of ``channels:`` (an email channel is addresses, delivered as email).
    Raises ProblemsError naming each chat channel whose URL Apprise does not know."""
    registry = email_registry(make_transport(settings), settings)
    problems = []
    for name, channel in settings.channels.items():
        if isinstance(channel, WebhookChannel):
            hook = WebhookTransport(name, channel, settings.channel_secret(name))
            registry.register(hook, build_webhook, channel.rate, DEDUPLICATED_EVERY)
        elif isinstance(channel, ChatChannel):
            try:
                chat = ChatTransport(name, channel, settings.channel_secret(name))
            except TransportError as exc:  # a URL Apprise cannot read: the config's problem
                problems.append(settings.problem(("channels", name), str(exc)))
                continue
            registry.register(chat, build_chat, channel.rate, DEDUPLICATED_EVERY)
    if problems:
        raise ProblemsError(problems)
    return registry
