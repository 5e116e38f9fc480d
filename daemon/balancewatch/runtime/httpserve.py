"""The metrics and health endpoints over HTTP, answered as Prometheus and Alertmanager answer them.

- ``GET /metrics``: the daemon's registry in the Prometheus text format;
- ``GET /-/healthy``: 200 ``OK`` while the process serves;
- ``GET /-/ready``: 200 ``OK`` while ``ready()`` says so, else 503 with its reason;
- ``HEAD`` of each: the same status and headers without a body; anything else 404
  (unknown path) or 405 (another method).

One thread per request (``ThreadingHTTPServer``), each with a socket timeout, so
a slow scrape or an idle client holds up nothing else; the server's own thread
is a daemon thread, so it never keeps the process alive.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from balancewatch.core.metrics import Metrics, Readiness

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request


class ListenError(ValueError):
    """``metrics.listen`` cannot be served; the message is one line naming the setting."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464``, ``:9464`` for every IPv4 address) as (host, port).

    Raises ListenError for anything else.
    """
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"metrics.listen: {listen!r} is not host:port; write e.g. 127.0.0.1:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError(f"metrics.listen: {listen!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    return host or "0.0.0.0", int(port)


class MetricsServer:
    """A running endpoint server. ``address`` is the (host, port) actually bound (port 0 picks one)."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        self.address: tuple[str, int] = (str(host), int(port))
        # A short poll interval: close() waits for the serving loop to look up.
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.1,), name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def close(self) -> None:
        """Stop accepting requests and release the port; requests in progress are not waited for."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(listen: str, metrics: Metrics, ready: Callable[[], Readiness]) -> MetricsServer:
    """Serve the endpoints on ``listen`` (``host:port``) until ``close()``.

    Raises ListenError when ``listen`` is malformed or cannot be bound (in use, no such address).
    """
    host, port = parse_listen(listen)
    handler = type("Handler", (_Handler,), {"metrics": metrics, "ready": staticmethod(ready)})
    server_class = _Server6 if ":" in host else ThreadingHTTPServer
    try:
        httpd = server_class((host, port), handler)
    except OSError as exc:
        raise ListenError(f"metrics.listen: cannot listen on {listen}: {exc.strerror or exc}") from None
    httpd.daemon_threads = True
    server = MetricsServer(httpd)
    log.info("serving metrics on %s/metrics", server.url)
    return server


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics
    ready: Callable[[], Readiness]
    timeout = REQUEST_TIMEOUT
    server_version = "balancewatch"

    # http.server finds the handlers by these names.
    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_POST(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"Only GET and HEAD are served.\n", True, allow=True)

    do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

    def _answer(self, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._scrape(body)
        elif path == "/-/healthy":
            self._reply(HTTPStatus.OK, b"OK\n", body)
        elif path == "/-/ready":
            state = self._readiness()
            if state.ok:
                self._reply(HTTPStatus.OK, b"OK\n", body)
            else:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, f"{state.reason}\n".encode(), body)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"Not found: try /metrics, /-/healthy or /-/ready.\n", body)

    def _scrape(self, body: bool) -> None:
        try:
            text = generate_latest(self.metrics.registry)
        except Exception as exc:  # a collector's bug: the scrape fails visibly (up 0), the daemon goes on
            log.exception("collecting metrics failed")
            self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"collecting metrics failed: {exc!r}\n".encode(), body
            )
            return
        self._reply(HTTPStatus.OK, text, body, CONTENT_TYPE_LATEST)

    def _readiness(self) -> Readiness:
        try:
            return self.ready()
        except Exception as exc:  # the daemon's check failed: not ready, and the body says why
            log.exception("the readiness check failed")
            return Readiness(False, f"the readiness check failed: {exc!r}")

    def _reply(
        self,
        status: HTTPStatus,
        payload: bytes,
        body: bool,
        content_type: str = "text/plain; charset=utf-8",
        allow: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if allow:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        # Every scrape would be a line on stderr; at debug level through logging instead.
        log.debug("%s %s", self.address_string(), format % args)
