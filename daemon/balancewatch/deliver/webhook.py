"""The webhook transport: each event POSTed as signed JSON (Standard Webhooks), one HTTP client
per batch.

A webhook row carries the JSON payload as its text and the event type as its subject; its one
pseudo-recipient is the channel's name. The request carries ``webhook-id`` (the decision's
``event_id``, the same on every delivery of the row, so a receiver deduplicates on it),
``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 of ``id.timestamp.body``, as
https://www.standardwebhooks.com specifies), plus the channel's configured headers.

What an answer means: a 2xx is delivered; 408, 429 and 5xx are tried again, not sooner than a
``Retry-After`` asks; any other status (a 3xx included: redirects are not followed, since the
signature and headers would go to another place) is refused for good. No answer at all (a
timeout, a refused or broken connection, a TLS failure) is a connection failure: the channel's
batch waits. Errors show the URL without its query (it may hold a token) and never a
configured header's value.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from balancewatch import __version__
from balancewatch.config.channels import WebhookChannel
from balancewatch.config.values import shown_url
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.transport import Meanwhile, Ready
from balancewatch.outbox import Claimed, event_id

# Read at most this much of an answer: enough to reuse the connection after any usual answer,
# bounded against an endpoint that streams without end.
READ_LIMIT = 64 * 1024
SHOWN_BODY = 200  # bytes of a refusal's body quoted in its error
TEMPORARY = frozenset({408, 429})  # besides 5xx: the endpoint asks to be tried again
# The longest Retry-After taken at its word (the outbox caps it at give_up_after anyway).
LONGEST_WAIT = timedelta(days=365)
_SECONDS = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class WebhookEnvelope:
    """One event ready to POST: the exact ``body`` signed and sent, and its ``webhook_id``.

    ``recipients`` is the channel's one pseudo-recipient while it is due (``due`` maps it to
    itself); nothing is ever ``rejected``.
    """

    body: bytes
    webhook_id: str
    recipients: tuple[str, ...]
    due: Mapping[str, str] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)


def build_webhook(row: Claimed, now: datetime) -> WebhookEnvelope:
    """The request for ``row``: its text, UTF-8, as the body; the id of its decision.

    Raises a permanent TransportError if the text cannot be UTF-8 (a lone surrogate).
    """
    try:
        body = row.text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TransportError(f"the payload is not UTF-8 text: {exc.reason}", permanent=True) from None
    due = row.due_recipients
    return WebhookEnvelope(body, event_id(row.idem_key), due, {r: r for r in due})


def tls_context(settings: WebhookChannel) -> ssl.SSLContext:
    """A context that verifies the endpoint's certificate and name (against ``ca_file`` if set)."""
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """How long a ``Retry-After`` asks to wait: seconds, or an HTTP date relative to ``now``.

    A negative wait or a date in the past is 0; a value that is neither form is None, as is
    no header at all.
    """
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return min(timedelta(seconds=max(0, min(int(value), 10**9))), LONGEST_WAIT)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC without saying where (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return min(max(when - now, timedelta(0)), LONGEST_WAIT)


def one_line(head: bytes) -> str:
    """The first ``SHOWN_BODY`` bytes of an answer as one printable line."""
    text = head[:SHOWN_BODY].decode("utf-8", errors="replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def status_error(
    status: int, headers: httpx.Headers, head: bytes, now: datetime, reason: str = ""
) -> TransportError | None:
    """What answer ``status`` means for the event: None when delivered, else the error.

    408, 429 and 5xx are temporary with the ``Retry-After`` asked for; any other non-2xx is
    permanent. The message is one line: ``HTTP 404 Not Found: <the body's first bytes>``, with
    the standard phrase of the status (the server's ``reason`` for a status without one).
    """
    if 200 <= status < 300:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = one_line(reason.encode("utf-8", errors="replace")) or "(unknown status)"
    quoted = one_line(head)
    message = f"HTTP {status} {phrase}" + (f": {quoted}" if quoted else "")
    if status in TEMPORARY or 500 <= status < 600:
        return TransportError(message, retry_after=retry_after(headers.get("retry-after"), now))
    return TransportError(message, permanent=True)


def _read_head(response: httpx.Response) -> bytes:
    """The start of the answer's body, reading at most ``READ_LIMIT`` bytes of it.

    Bytes as sent (``accept-encoding: identity`` was asked for), never decompressed. A body
    that breaks off still leaves the status to go by: what arrived is returned.
    """
    got = bytearray()
    with contextlib.suppress(httpx.TransportError):
        for chunk in response.iter_raw():
            got += chunk
            if len(got) >= READ_LIMIT:
                break  # the rest is dropped with the connection when the response closes
    return bytes(got[:SHOWN_BODY])


class WebhookTransport:
    """POSTs envelopes to one configured endpoint; use as a context manager per batch.

    ``channel`` is the configured channel's name (what it delivers); ``name`` is
    ``webhook`` (how). ``secret`` is the channel's signing secret (``whsec_...``), read when
    the config loaded. ``clock`` gives the send time (an aware datetime), by default now.
    Connections are kept alive through a batch; a proxy named in ``HTTPS_PROXY`` (and
    ``NO_PROXY``) is used as curl would.
    """

    name = "webhook"

    def __init__(
        self,
        name: str,
        settings: WebhookChannel,
        secret: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.channel = name
        self.settings = settings
        self._signer = Webhook(secret)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._configured = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self._shown = shown_url(settings.url)
        self._secrets = _secrets(settings.url, self._configured.values())
        logging.getLogger("httpx").addFilter(_SHOWN_URLS)  # once: addFilter skips one it has
        self._tls: ssl.SSLContext | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []  # this client's connections, for abort
        self._aborted = False

    def __enter__(self) -> WebhookTransport:
        context = self._tls
        if context is None:
            # Made once: loading the CA store takes tens of milliseconds, too much per batch.
            try:
                context = self._tls = tls_context(self.settings)
            except OSError as exc:  # ssl.SSLError included
                raise TransportError(
                    f"webhook ca_file {self.settings.ca_file}: {exc}", connection=True
                ) from None
        with self._lock:
            self._aborted = False
            self._client = httpx.Client(
                verify=context,
                timeout=self.settings.timeout.total_seconds(),
                # A redirect would carry the signature and headers elsewhere: a 3xx is an answer.
                follow_redirects=False,
            )
        return self

    def send(
        self, envelope: WebhookEnvelope, ready: Ready | None = None, meanwhile: Meanwhile | None = None
    ) -> dict[str, TransportError]:
        """POST the envelope once (after ``ready``); return its recipient with the error unless
        it was delivered.

        Raises TransportError with ``connection`` set when no answer came: timeout, refused or
        broken connection, TLS failure, or ``abort``.
        """
        client = self._client
        if client is None or self._aborted:
            raise TransportError(f"POST {self._shown}: send without a session", connection=True)
        if ready is not None:
            ready()
        now = self._now()
        try:
            with client.stream(
                "POST",
                self.settings.url,
                content=envelope.body,
                headers=self._headers(envelope, now),
                extensions={"trace": self._trace},
            ) as response:
                head = _read_head(response)
        except httpx.TransportError as exc:
            # Not chained: the cause's text and its request could show the query or a header.
            raise TransportError(f"POST {self._shown}: {self._why(exc)}", connection=True) from None
        except RuntimeError:
            # httpx refuses a request on a client closed under it: only abort() does that.
            if not self._aborted:
                raise
            raise TransportError(f"POST {self._shown}: broken off", connection=True) from None
        error = status_error(
            response.status_code, response.headers, head, self._now(), response.reason_phrase
        )
        if error is None:
            return {}
        scrubbed = TransportError(
            self._scrub(str(error)), permanent=error.permanent, retry_after=error.retry_after
        )
        return {r: scrubbed for r in envelope.recipients}

    def abort(self) -> None:
        """Break off a POST in progress from another thread: its connection is shut down, so
        the send fails at once as a connection failure, and the client is closed.

        A connection still being opened is not interrupted: it fails within ``timeout``.
        """
        with self._lock:
            client, sockets = self._client, list(self._sockets)
            if client is not None:
                self._aborted = True
        for sock in sockets:
            # shutdown, not close: closing a socket does not wake a thread blocked reading it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if client is not None:
            client.close()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._sockets.clear()
        if client is not None:
            client.close()

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def _headers(self, envelope: WebhookEnvelope, now: datetime) -> httpx.Headers:
        # The signature covers the timestamp as sent: whole seconds.
        timestamp = int(now.timestamp())
        signature = self._signer.sign(
            envelope.webhook_id, datetime.fromtimestamp(timestamp, UTC), envelope.body
        )
        headers = httpx.Headers(self._configured)
        # Setting replaces a configured header of the same name whatever its case.
        headers["content-type"] = "application/json"
        headers["user-agent"] = f"balancewatch/{__version__}"
        headers["accept-encoding"] = "identity"  # a refusal's body is quoted as sent
        headers["webhook-id"] = envelope.webhook_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = signature
        return headers

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace hook: keep each socket this client opens, for ``abort``."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                # A closed or TLS-wrapped (detached) socket has no descriptor left: drop it.
                self._sockets = [s for s in self._sockets if s.fileno() != -1]
                self._sockets.append(sock)

    def _why(self, exc: httpx.TransportError) -> str:
        """No answer, in a sysadmin's words."""
        seconds = f"{self.settings.timeout.total_seconds():g}s"
        if self._aborted:
            return "broken off"
        if isinstance(exc, httpx.ConnectTimeout):
            return f"no connection within {seconds}"
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {seconds}"
        cause = _root(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            hint = "set ca_file if the server's CA is private"
            return f"certificate verify failed: {cause.verify_message}; {hint}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {httpx.URL(self.settings.url).host}: {cause.strerror}"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"the connection broke: {self._scrub(str(exc))}"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        return self._scrub(" ".join(str(exc).split())) or type(exc).__name__

    def _scrub(self, text: str) -> str:
        """``text`` (an endpoint's words, an exception's) without the full URL, its query (it
        may hold a token) or a configured header's value."""
        text = text.replace(self.settings.url, self._shown)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _secrets(url: str, header_values: Iterable[str]) -> tuple[str, ...]:
    """What must not show in an error, longest first: the URL's query and its values, the
    header values. Pieces under 4 characters are left: no token is that short, and replacing
    them would garble the message."""
    query = urlsplit(url).query
    pieces = {query, *(v for _, v in parse_qsl(query, keep_blank_values=True)), *header_values}
    return tuple(sorted((p for p in pieces if len(p) > 3), key=len, reverse=True))


class _ShownUrls(logging.Filter):
    """httpx logs each request's full URL at INFO: show it without its query there too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(shown_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_SHOWN_URLS = _ShownUrls()


def _root(exc: BaseException) -> BaseException:
    """The first cause of ``exc`` (httpx wraps the OSError or SSLError of the socket)."""
    seen: set[int] = set()
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(exc))
        exc = nxt
    return exc
