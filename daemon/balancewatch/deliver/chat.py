"""The chat transport: a short message through Apprise (Slack, Teams, Telegram, ntfy, ...).

A chat row carries the title (the email's subject line) as its subject and the message as its
text; its one pseudo-recipient is the channel's name. The channel's URL (``slack://...``,
``json://...``) holds the service's token, so it never shows: not in an error, not in a log.

Apprise says why a notification failed only in its log (``Failed to send JSON POST
notification: Internal server error., error=500.``), and at DEBUG it logs the URL it posts to,
path and all; requests' urllib3 logs the path and query too. The records made during this
module's calls to Apprise are held back from every handler, ours included (records of other
callers pass); the warnings among them become the error's reason, with every secret part of
the URL shown as ``***``.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from balancewatch.config.channels import ChatChannel
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.transport import Meanwhile, Ready
from balancewatch.outbox import Claimed

# The loggers that may name the URL or its parts while Apprise sends (a filter holds only the
# records of the logger it is on, not of its children: each urllib3 module is named).
HELD_LOGGERS = (
    "apprise",
    "requests",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)
MASK = "***"
SHORTEST_SECRET = 4  # a shorter piece is no token, and masking it would garble the reason
_HOST_NAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\.?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


@dataclass(frozen=True, slots=True)
class ChatEnvelope:
    """One chat message: ``title`` and ``body``. ``recipients`` is the channel's one
    pseudo-recipient while it is due (``due`` maps it to itself); nothing is ``rejected``."""

    title: str
    body: str
    recipients: tuple[str, ...]
    due: Mapping[str, str] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)


def build_chat(row: Claimed, now: datetime) -> ChatEnvelope:
    """The message for ``row``: its subject as the title, its text as the body."""
    due = row.due_recipients
    return ChatEnvelope(row.subject, row.text, due, {r: r for r in due})


class _Held(logging.Filter):
    """Holds back every record of the loggers it is on while made inside ``capturing``,
    keeping the text of Apprise's warnings and errors for the caller.

    "Inside" is a context variable, not the thread: Apprise 2 runs each send on a worker
    thread of its own, with a copy of the caller's context (Apprise 1.9 sends on the calling
    thread when ``async_mode`` is off; a context variable holds there too).
    """

    def __init__(self) -> None:
        super().__init__()
        self._said: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
            "balancewatch_apprise_said", default=None
        )

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[str]]:
        """The reasons Apprise gives meanwhile (WARNING and up), as they come."""
        said: list[str] = []
        token = self._said.set(said)
        try:
            yield said
        finally:
            self._said.reset(token)

    def filter(self, record: logging.LogRecord) -> bool:
        said = self._said.get()
        if said is None:
            return True
        if record.levelno >= logging.WARNING and record.name.startswith("apprise"):
            with contextlib.suppress(Exception):  # a malformed record must not break the send
                said.append(record.getMessage())
        return False


_HELD = _Held()


def _hold_library_logs() -> None:
    """Put the filter on the loggers that could name the URL (once: addFilter skips one it
    has), and keep Apprise's own DEBUG and INFO (where it prints URLs) from being made at all
    unless someone chose its level."""
    for name in HELD_LOGGERS:
        logging.getLogger(name).addFilter(_HELD)
    ours = logging.getLogger("apprise")
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.WARNING)


def secret_parts(url: str) -> tuple[str, ...]:
    """The pieces of ``url`` that may be credentials, longest first: the URL itself, its user
    and password, a host that is no host name (``slack://TokenA/...``), each path segment,
    query value and the fragment, as written and percent-decoded. Pieces shorter than
    ``SHORTEST_SECRET`` are left out."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    host = re.sub(r":[0-9]*$", "", hostport)
    pieces = {url, user, password, parts.fragment, *parts.path.split("/")}
    pieces.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
    if not _is_host_name(host):
        pieces.update({host, *host.split(":")})
    pieces |= {unquote(p) for p in pieces}
    return tuple(sorted((p for p in pieces if len(p) >= SHORTEST_SECRET), key=len, reverse=True))


def _is_host_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bool(_HOST_NAME.fullmatch(host))
    return True


def masked(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` on one line with each of ``secrets`` (longest first) shown as ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return " ".join(text.split())


def shown_scheme(url: str) -> str:
    """``slack://...``: all of a chat URL an error may show."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://..." if sep and _SCHEME.fullmatch(scheme) else "(no scheme://)..."


class ChatTransport:
    """Sends envelopes through Apprise to the one URL of a chat channel.

    ``channel`` is the configured channel's name (what it delivers); ``name`` is ``chat``
    (how). ``url`` is the channel's Apprise URL, read when the config loaded. Raises a
    permanent TransportError when Apprise does not take the URL (an unknown scheme, or parts
    its service needs missing or malformed). Apprise opens a connection per message, so
    entering and leaving a batch do nothing.
    """

    name = "chat"

    def __init__(self, name: str, settings: ChatChannel, url: str) -> None:
        self.channel = name
        self.settings = settings
        self._secrets = secret_parts(url)
        _hold_library_logs()
        # One service, sent in order (async_mode off: no thread pool of Apprise 1.9 without
        # our context); Apprise's persistent store (some services cache tokens there) kept
        # in memory, off the disk.
        asset = apprise.AppriseAsset(async_mode=False, storage_mode="memory")
        self._apprise = apprise.Apprise(asset=asset)
        with _HELD.capturing():  # parsing logs the URL at DEBUG, or parts of it on a refusal
            added = self._apprise.add(url)
        if not added:
            raise TransportError(
                f"the chat URL is not one Apprise knows: {shown_scheme(url)} (an unknown scheme, "
                "or a part its service needs is missing or malformed)",
                permanent=True,
            )

    def __enter__(self) -> ChatTransport:
        return self

    def send(
        self, envelope: ChatEnvelope, ready: Ready | None = None, meanwhile: Meanwhile | None = None
    ) -> dict[str, TransportError]:
        """Notify once (after ``ready``); return the recipient with a temporary error unless
        Apprise delivered it, with the reason Apprise gave (secrets masked)."""
        if ready is not None:
            ready()
        with _HELD.capturing() as said:
            try:
                delivered = bool(self._apprise.notify(body=envelope.body, title=envelope.title))
            except Exception as exc:  # a plugin's bug fails this message, not the courier
                delivered = False
                said.append(f"{type(exc).__name__}: {exc}")
        if delivered:
            return {}
        reason = masked("; ".join(dict.fromkeys(said)), self._secrets) or "Apprise gave no reason"
        error = TransportError(f"chat: {reason}")
        return {r: error for r in envelope.recipients}

    def abort(self) -> None:
        """Nothing to break off: Apprise gives no handle on the request in flight. A send in
        progress ends within the service's own timeout (Apprise's default: 4 s to connect,
        4 s per read)."""

    def __exit__(self, *exc: object) -> None:
        return None
