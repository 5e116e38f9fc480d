"""A real HTTP endpoint on loopback that records what it is sent and answers as it is told.

``WebhookReceiver`` is a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port), served from a
thread while it is entered as a context manager. Every request is recorded (``requests``:
method, path, headers, body) before it is answered; with a ``secret`` each is checked as a
Standard Webhooks signature (``Received.verified``), and ``ids`` holds the distinct
``webhook-id`` values seen.

What it answers is programmable: ``script(Reply(503, {"Retry-After": "120"}), Reply(200))``
queues answers taken in order, one per request; once the queue is empty ``respond`` (a function
of the request) decides, by default ``Reply(200)``. A reply's ``delay`` holds the answer back,
as a slow endpoint does (cut short when the receiver stops).

Tests wait with ``wait_for(count, timeout)``, on a condition, never with fixed sleeps. It is
made to be fast enough for a throughput benchmark: HTTP/1.1 keep-alive, a Content-Length on
every answer, nothing logged to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

POLL = 0.02  # seconds between the accept loop's looks at whether it is to stop
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may sit idle before its thread ends


@dataclass(frozen=True)
class Reply:
    """An answer: status, extra headers, body, and how long to hold it back first."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """A request as it arrived; ``headers`` by lower-case name; ``peer`` the client's address
    (one per connection: requests kept alive on one connection share it). ``verified`` is
    whether its Standard Webhooks signature checked out, None when the receiver has no secret."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] = ("", 0)
    verified: bool | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    timeout = IDLE_TIMEOUT
    # Status line, headers and body leave in one write (the flush after each request), and
    # no small write waits for an ACK: no 40 ms stalls between requests on one connection.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        peer = (str(self.client_address[0]), int(self.client_address[1]))
        reply = self.server.receiver.record(Received(self.command, self.path, headers, body, peer))
        if reply.delay and self.server.receiver.stopping.wait(reply.delay):
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up waiting (a timeout under test)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a benchmark sends thousands of requests."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a kept-alive connection must not hold up stopping

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client dropping its connection is what some tests do."""


class WebhookReceiver:
    """Records requests and answers them as scripted; see the module's docstring."""

    def __init__(
        self,
        secret: str | None = None,
        respond: Callable[[Received], Reply] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.secret = secret
        self.respond = respond or (lambda _: Reply(200))
        self.tls = tls
        self.requests: list[Received] = []
        self.ids: set[str] = set()
        self.stopping = threading.Event()
        self._replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "enter the receiver first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS); add a path to it."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order, before ``respond`` decides again."""
        for reply in replies:
            self._replies.put(reply)

    def record(self, request: Received) -> Reply:
        """Keep ``request`` (checked, when there is a secret) and pick its answer."""
        if self.secret is not None:
            request = dataclasses.replace(request, verified=self._verifies(request))
        try:
            reply = self._replies.get_nowait()
        except queue.Empty:
            reply = self.respond(request)
        with self._changed:
            self.requests.append(request)
            if "webhook-id" in request.headers:
                self.ids.add(request.headers["webhook-id"])
            self._changed.notify_all()
        return reply

    def _verifies(self, request: Received) -> bool:
        assert self.secret is not None
        try:
            Webhook(self.secret).verify(request.body, request.headers, json_parse=False)
        except WebhookVerificationError:
            return False
        return True

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The requests once at least ``count`` have arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.requests)} requests within {timeout}s, not {count}")
                self._changed.wait(left)
            return list(self.requests)

    def __enter__(self) -> WebhookReceiver:
        server = _Server(self)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        # A short poll interval: stopping (shutdown) waits for the loop to look at most that long.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(POLL,), name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()  # ends any held-back answer
        if self._server is not None:
            self._server.shutdown()
            with contextlib.suppress(OSError):
                self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
