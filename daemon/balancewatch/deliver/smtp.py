"""SMTP with verified TLS (STARTTLS or implicit), one connection per batch."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
from collections.abc import Mapping

from balancewatch.config import Security, SmtpSettings
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.message import EmailEnvelope


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """A context that verifies the server's certificate and name (against ``ca_file`` if set)."""
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


def _permanent(code: int) -> bool:
    return 500 <= code < 600


CLOSING = 421  # "service not available, closing transmission channel": the session is over


def _refusals(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{addr}: {_text(code, reply)}" for addr, (code, reply) in refused.items())


def _per_recipient(refused: Mapping[str, tuple[int, bytes]]) -> dict[str, TransportError]:
    return {
        addr: TransportError(_text(code, reply), permanent=_permanent(code))
        for addr, (code, reply) in refused.items()
    }


def _text(code: int, reply: bytes | str) -> str:
    """``code`` and the server's words on one line: a multi-line reply (``550-5.1.1 …``) is joined,
    so errors stay one line in the outbox, its listings and the log."""
    words = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(f"{code} {words}".split())


class SmtpTransport:
    """Sends envelopes over one SMTP session; use as a context manager per batch."""

    channel = "email"
    name = "smtp"

    def __init__(
        self, settings: SmtpSettings, password: str | None, local_hostname: str | None = None
    ) -> None:
        self.settings = settings
        self.password = password
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.effective_port}"

    def __enter__(self) -> SmtpTransport:
        s = self.settings
        timeout = s.timeout.total_seconds()
        try:
            if s.security is Security.tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.effective_port,
                    local_hostname=self.local_hostname,
                    timeout=timeout,
                    context=tls_context(s),
                )
            else:
                smtp = smtplib.SMTP(
                    s.host, s.effective_port, local_hostname=self.local_hostname, timeout=timeout
                )
            self._smtp = smtp
            smtp.ehlo()
            if s.security is Security.starttls:
                smtp.starttls(context=tls_context(s))
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            self._close()
            raise TransportError(
                f"log in to {self.where} as {s.username!r}: {_text(exc.smtp_code, exc.smtp_error)}",
                connection=True,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._close()
            raise TransportError(f"connect to {self.where}: {exc}", connection=True) from exc
        return self

    def send(self, envelope: EmailEnvelope) -> dict[str, TransportError]:
        """Send one message; return the recipients the server refused, each with its reply
        (``permanent`` for a 5xx). The others have the message.

        Raises TransportError when the whole message failed: ``permanent`` on a 5xx reply to
        MAIL FROM or DATA, with ``connection`` set when the session broke (a 421 included).
        """
        if self._smtp is None:
            raise TransportError("send without a connection", connection=True)
        try:
            refused = self._smtp.send_message(envelope.message, to_addrs=list(envelope.recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            if any(code == CLOSING for code, _ in exc.recipients.values()):
                self._close()  # smtplib has closed it already on a 421
                raise TransportError(
                    f"RCPT: server closing: {_refusals(exc.recipients)}", connection=True
                ) from exc
            return _per_recipient(exc.recipients)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            step = "MAIL FROM" if isinstance(exc, smtplib.SMTPSenderRefused) else "DATA"
            raise TransportError(
                f"{step} refused: {_text(exc.smtp_code, exc.smtp_error)}",
                permanent=_permanent(exc.smtp_code),
                connection=exc.smtp_code == CLOSING,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            # Raised before MAIL FROM: the session is intact, only this message cannot go.
            raise TransportError(
                f"{self.where} does not offer SMTPUTF8, which {', '.join(envelope.recipients)} needs: {exc}",
                permanent=True,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise TransportError(
                f"server replied {_text(exc.smtp_code, exc.smtp_error)}",
                permanent=_permanent(exc.smtp_code),
                connection=exc.smtp_code == CLOSING,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._close()
            raise TransportError(f"send to {self.where}: {exc}", connection=True) from exc
        return _per_recipient(refused)

    def abort(self) -> None:
        """Break off the session from another thread (a shutdown that cannot wait): a send in
        progress fails at once as a connection failure."""
        smtp = self._smtp
        sock = getattr(smtp, "sock", None) if smtp is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __exit__(self, *exc: object) -> None:
        if self._smtp is not None:
            # The messages are already accepted; a failed QUIT changes nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._close()

    def _close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None


def probe(settings: SmtpSettings, password: str | None, local_hostname: str | None = None) -> str:
    """Open a session as delivery does (connect, EHLO, STARTTLS or TLS with the certificate
    verified, LOGIN when ``username`` is set), then QUIT, sending nothing.

    Returns what was proved, e.g. ``smtp mail.example.com:587: connected (starttls, logged in
    as 'alerts')``. Raises TransportError with one line, e.g. ``smtp mail.example.com:587:
    connection refused``.
    """
    transport = SmtpTransport(settings, password, local_hostname)
    try:
        with transport:
            pass
    except TransportError as exc:
        raise TransportError(
            f"smtp {transport.where}: {_why(exc.__cause__, settings)}", connection=True
        ) from exc
    login = f", logged in as {settings.username!r}" if settings.username else ""
    return f"smtp {transport.where}: connected ({settings.security.value}{login})"


def _why(cause: BaseException | None, settings: SmtpSettings) -> str:
    """A failure to open a session in a sysadmin's words; the step is in the words."""
    if isinstance(cause, smtplib.SMTPAuthenticationError):
        return f"login refused: {_text(cause.smtp_code, cause.smtp_error)}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        hint = "set smtp.ca_file if the server's CA is private"
        return f"certificate verify failed: {cause.verify_message}; {hint}"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return f"no answer within {settings.timeout.total_seconds():g}s"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve {settings.host}: {cause.strerror}"
    if isinstance(cause, smtplib.SMTPNotSupportedError) and "STARTTLS" in str(cause):
        return "the server does not offer STARTTLS; set smtp.security: tls (port 465) or none"
    if isinstance(cause, smtplib.SMTPNotSupportedError):
        return f"the server does not offer login (AUTH): {cause}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed: {cause.reason or cause}"
    if isinstance(cause, smtplib.SMTPResponseException):
        return f"server replied {_text(cause.smtp_code, cause.smtp_error)}"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return " ".join(str(cause).split()) or type(cause).__name__
