"""SMTP with verified TLS (STARTTLS or implicit), one connection per batch, a message per
recipient (its own copy, To naming only them)."""

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
        self._broken: str | None = None  # why the session broke in a send, until the next opens

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.effective_port}"

    def __enter__(self) -> SmtpTransport:
        s = self.settings
        timeout = s.timeout.total_seconds()
        self._broken = None
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
        """Send each recipient its own copy (``envelope.for_recipient``, To naming only them),
        one after another over this session; return the recipients whose copy did not go, each
        with its error (``permanent`` for a 5xx). The others have their copy.

        A refusal of one copy (its RCPT, MAIL FROM or DATA answered 4xx or 5xx; SMTPUTF8 not
        offered for a non-ASCII mailbox, permanent) is that recipient's alone: the next goes on.
        When the session breaks (a dropped connection, a 421, ``abort``), at the first copy
        nothing is known of the message: raises TransportError with ``connection`` set. At a
        later copy the copies already answered keep their outcome (one the server accepted must
        not be sent again as if it had failed), the rest are returned with that error
        (temporary, ``connection`` set), and the session stays closed: the next send raises.
        """
        if self._smtp is None:
            raise TransportError(self._broken or "send without a connection", connection=True)
        failed: dict[str, TransportError] = {}
        for i, recipient in enumerate(envelope.recipients):
            try:
                error = self._send_copy(envelope, recipient)
            except TransportError as exc:  # the session broke
                if i == 0:
                    raise
                failed.update(dict.fromkeys(envelope.recipients[i:], exc))
                return failed
            if error is not None:
                failed[recipient] = error
        return failed

    def _send_copy(self, envelope: EmailEnvelope, recipient: str) -> TransportError | None:
        """Send ``recipient``'s copy; None once the server accepted it, else its refusal.
        Raises TransportError with ``connection`` set, the session closed, when it broke."""
        smtp = self._smtp
        if smtp is None:
            raise TransportError(self._broken or "send without a connection", connection=True)
        try:
            refused = smtp.send_message(envelope.for_recipient(recipient), to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            if any(code == CLOSING for code, _ in exc.recipients.values()):
                raise self._broke(f"RCPT: server closing: {_refusals(exc.recipients)}") from exc
            return _per_recipient(exc.recipients)[recipient]
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            step = "MAIL FROM" if isinstance(exc, smtplib.SMTPSenderRefused) else "DATA"
            return self._refused(f"{step} refused:", exc)
        except smtplib.SMTPNotSupportedError as exc:
            # Raised before MAIL FROM: the session is intact, only this copy cannot go.
            return TransportError(
                f"{self.where} does not offer SMTPUTF8, which {recipient} needs: {exc}", permanent=True
            )
        except smtplib.SMTPResponseException as exc:
            return self._refused("server replied", exc)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._broke(f"send to {self.where}: {exc}") from exc
        # One recipient: a refusal comes as SMTPRecipientsRefused; this is in case it does not.
        return _per_recipient(refused).get(recipient)

    def _refused(self, step: str, exc: smtplib.SMTPResponseException) -> TransportError:
        """The refusal of one copy at ``step``, ``permanent`` for a 5xx. Raises as ``_broke``
        on a 421: the server is closing the session (smtplib has closed it then)."""
        text = f"{step} {_text(exc.smtp_code, exc.smtp_error)}"
        if exc.smtp_code == CLOSING:
            raise self._broke(text) from exc
        return TransportError(text, permanent=_permanent(exc.smtp_code))

    def _broke(self, why: str) -> TransportError:
        """Close the broken session and keep why: this send fails with it, and so does the
        next one until the batch opens a new session."""
        self._close()
        self._broken = f"{why} (the session with {self.where} broke)"
        return TransportError(why, connection=True)

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
