"""A real SMTP server on loopback (aiosmtpd) that records what it accepts.

Tests wait for mail with bounded waits on a condition, never fixed sleeps.
``refuse`` makes the server answer RCPT for an address with a given reply,
e.g. ``{"gone@example.com": "550 5.1.1 no such user"}``. ``hold()`` keeps
every DATA command waiting (the message in flight) until ``release()``
lets one, several or all of them through; ``delay`` slows every DATA reply
by that many seconds, as a busy server does.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

# The server runs inside the test process: its own log records ("SMTP session exception" when a
# client breaks off a TLS handshake, say) must not reach the stderr handler a CLI under test set up.
_SERVER_LOG = logging.getLogger("mail.log")
_SERVER_LOG.propagate = False
_SERVER_LOG.addHandler(logging.NullHandler())

HOLD_LIMIT = 30.0  # seconds a held DATA waits at most, so a forgotten release cannot hang a test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: tuple[str, int] | None = None  # the client's address: one per connection
    tls: bool = False
    login: str | None = None
    accepted_at: float = 0.0  # time.time() when DATA was accepted (0.0 where not recorded)

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    # aiosmtpd finds its hooks by these names.
    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        reply = self.server.refuse.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        if self.server.held:
            await asyncio.get_running_loop().run_in_executor(None, self.server.pass_gate)
        peer = tuple(session.peer[:2]) if session.peer else None
        received = Received(
            envelope.mail_from,
            tuple(envelope.rcpt_tos),
            bytes(envelope.original_content),
            peer,
            server.transport.get_extra_info("sslcontext") is not None,
            session.auth_data if session.authenticated else None,
            accepted_at=time.time(),
        )
        with self.server.cond:
            self.server.received.append(received)
            self.server.cond.notify_all()
        return "250 Message accepted for delivery"


class SmtpServer:
    """Start, stop (and start again on the same port) a recording SMTP server.

    ``tls_context`` offers STARTTLS (and requires it), or with ``implicit_tls``
    wraps the whole connection in TLS; ``auth`` requires that login;
    ``smtputf8=False`` leaves out the SMTPUTF8 extension, as older servers do.
    """

    def __init__(
        self,
        port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        implicit_tls: bool = False,
        smtputf8: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.refuse: dict[str, str] = {}
        self.received: list[Received] = []
        self.cond = threading.Condition()
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.smtputf8 = smtputf8
        self.held = False
        self.delay = 0.0
        self._gate = threading.Condition()
        self._passes = 0  # held messages allowed through
        self._arrived = 0  # messages that reached DATA while held
        self._controller: Controller | None = None

    def start(self) -> None:
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": self.smtputf8}
        if self.tls_context is not None and self.implicit_tls:
            kwargs.update(ssl_context=self.tls_context)
        elif self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        if self.auth is not None:
            user, password = self.auth

            def authenticator(_server: Any, _session: Any, _envelope: Any, _mechanism: Any, data: Any) -> Any:
                if data.login.decode() == user and data.password.decode() == password:
                    return AuthResult(success=True, auth_data=user)
                # handled=False: aiosmtpd itself then replies 535 (True would leave the client waiting).
                return AuthResult(success=False, handled=False)

            kwargs.update(
                authenticator=authenticator,
                auth_required=True,
                auth_require_tls=self.tls_context is not None and not self.implicit_tls,
            )
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, server_hostname="localhost", **kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        self.release()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def hold(self) -> None:
        """Keep every message waiting in DATA, as a slow server does, until ``release``."""
        with self._gate:
            self.held, self._passes, self._arrived = True, 0, 0

    def release(self, count: int | None = None) -> None:
        """Let ``count`` held messages through, or all of them (and stop holding) when None."""
        with self._gate:
            if count is None:
                self.held = False
            else:
                self._passes += count
            self._gate.notify_all()

    def wait_holding(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` messages have reached DATA while held; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._gate:
            while self._arrived < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"waited {timeout}s for message {count} to arrive in DATA")
                self._gate.wait(left)

    def pass_gate(self) -> None:
        """Called for each DATA: wait while held until let through (at most HOLD_LIMIT seconds)."""
        deadline = time.monotonic() + HOLD_LIMIT
        with self._gate:
            self._arrived += 1
            self._gate.notify_all()
            while self.held and self._passes == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._gate.wait(left)
            if self.held:
                self._passes -= 1

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages arrived; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"waited {timeout}s for {count} messages, got {len(self.received)}")
                self.cond.wait(left)
            return list(self.received)

    def env(self) -> dict[str, str]:
        """Settings (as environment) that point balancewatch at this server."""
        security = "none" if self.tls_context is None else "tls" if self.implicit_tls else "starttls"
        return {"smtp__host": self.host, "smtp__port": str(self.port), "smtp__security": security}
