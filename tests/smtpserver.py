"""A real SMTP server on loopback (aiosmtpd) that records what it accepts.

Tests wait for mail with bounded waits on a condition, never fixed sleeps.
``refuse`` makes the server answer RCPT for an address with a given reply,
e.g. ``{"gone@example.com": "550 5.1.1 no such user"}``.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self.server.refuse.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        received = Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content))
        with self.server.cond:
            self.server.received.append(received)
            self.server.cond.notify_all()
        return "250 Message accepted for delivery"


class SmtpServer:
    """Start, stop (and start again on the same port) a recording SMTP server."""

    def __init__(self, port: int | None = None, tls_context: ssl.SSLContext | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.refuse: dict[str, str] = {}
        self.received: list[Received] = []
        self.cond = threading.Condition()
        self.tls_context = tls_context
        self.auth = auth
        self._controller: Controller | None = None

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        if self.auth is not None:
            user, password = self.auth

            def authenticator(_server: Any, _session: Any, _envelope: Any, _mechanism: Any, data: Any) -> Any:
                from aiosmtpd.smtp import AuthResult

                ok = data.login.decode() == user and data.password.decode() == password
                return AuthResult(success=ok)

            kwargs.update(authenticator=authenticator, auth_require_tls=self.tls_context is not None)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      server_hostname="localhost", **kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

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
        return {"smtp__host": self.host, "smtp__port": str(self.port), "smtp__security": "none"}
