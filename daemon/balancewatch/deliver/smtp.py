"""SMTP with verified TLS (STARTTLS or implicit), one connection per batch, a message per
recipient (its own copy, To naming only them)."""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from balancewatch.config import Security, SmtpSettings
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.message import EmailEnvelope
from balancewatch.deliver.transport import Meanwhile, Ready


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


_PERIODS = re.compile(rb"(?m)^\.")  # as smtplib's _quote_periods


class _Waiting:
    """``smtplib.SMTP.data`` calling ``ready`` (set per message, once) after the server said
    354 and before it sends the message and its final dot, which let the server accept it.
    When ``ready`` raises, the session is closed there, in DATA: the server drops what it had
    of the message (a message is taken at its final dot only), and the exception propagates.
    ``meanwhile`` (set per message, once; it never raises) is called after the final dot and
    before the server's answer is read: while the server takes the message."""

    ready: Ready | None = None
    meanwhile: Meanwhile | None = None

    def data(self, msg: Any) -> tuple[int, bytes]:
        smtp: Any = self
        smtp.putcmd("data")
        code, reply = smtp.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        quoted = _PERIODS.sub(b"..", msg)
        if quoted[-2:] != b"\r\n":
            quoted += b"\r\n"
        ready, self.ready = self.ready, None
        if ready is not None:
            try:
                ready()
            except BaseException:
                smtp.close()
                raise
        smtp.send(quoted + b".\r\n")
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        answer: tuple[int, bytes] = smtp.getreply()
        return answer


class _Once:
    """``ready`` (or ``meanwhile``), called the first time only."""

    def __init__(self, ready: Ready) -> None:
        self._ready: Ready | None = ready

    def __call__(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            ready()


class _SMTP(_Waiting, smtplib.SMTP):
    pass


class _SMTP_SSL(_Waiting, smtplib.SMTP_SSL):  # noqa: N801  # smtplib's own spelling
    pass


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
        self._smtp: _SMTP | _SMTP_SSL | None = None
        self._broken: str | None = None  # why the session broke in a send, until the next opens
        self._left = False  # a session closed by ``ready`` in a DATA: the next send opens one

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.effective_port}"

    def __enter__(self) -> SmtpTransport:
        s = self.settings
        timeout = s.timeout.total_seconds()
        self._broken, self._left = None, False
        try:
            if s.security is Security.tls:
                smtp: _SMTP | _SMTP_SSL = _SMTP_SSL(
                    s.host,
                    s.effective_port,
                    local_hostname=self.local_hostname,
                    timeout=timeout,
                    context=tls_context(s),
                )
            else:
                smtp = _SMTP(s.host, s.effective_port, local_hostname=self.local_hostname, timeout=timeout)
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

    def send(
        self, envelope: EmailEnvelope, ready: Ready | None = None, meanwhile: Meanwhile | None = None
    ) -> dict[str, TransportError]:
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

        ``ready`` is called before the server can accept any copy, in its DATA (as late
        as can be, so what it waits for overlaps the exchange before); when it raises, the
        session is closed there (nothing of the message accepted) and the exception propagates.
        The next send then opens a new session. ``meanwhile`` is called once, after the first
        copy's final dot, while the server takes it.
        """
        if self._smtp is None and self._left:
            self.__enter__()  # left in a DATA by ``ready``: a new session, as a new batch opens
        if self._smtp is None:
            raise TransportError(self._broken or "send without a connection", connection=True)
        failed: dict[str, TransportError] = {}
        once = _Once(ready) if ready is not None else None  # the first copy to reach DATA calls it
        after = _Once(meanwhile) if meanwhile is not None else None
        for i, recipient in enumerate(envelope.recipients):
            try:
                error = self._send_copy(envelope, recipient, once, after)
            except TransportError as exc:  # the session broke
                if i == 0:
                    raise
                failed.update(dict.fromkeys(envelope.recipients[i:], exc))
                return failed
            if error is not None:
                failed[recipient] = error
        return failed

    def _send_copy(
        self, envelope: EmailEnvelope, recipient: str, ready: Ready | None, meanwhile: Meanwhile | None = None
    ) -> TransportError | None:
        """Send ``recipient``'s copy; None once the server accepted it, else its refusal.
        Raises TransportError with ``connection`` set, the session closed, when it broke;
        raises what ``ready`` raises, the session closed."""
        smtp = self._smtp
        if smtp is None:
            raise TransportError(self._broken or "send without a connection", connection=True)
        smtp.ready, smtp.meanwhile = ready, meanwhile
        try:
            refused = _send(smtp, envelope, recipient)
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
        except BaseException:
            if smtp.sock is None:  # ``ready`` raised and left the session in DATA, closed
                self._smtp, self._left = None, True
            raise
        finally:
            smtp.ready = smtp.meanwhile = None
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


def _send(smtp: _SMTP | _SMTP_SSL, envelope: EmailEnvelope, recipient: str) -> dict[str, tuple[int, bytes]]:
    """``smtp.send_message(envelope.for_recipient(recipient), to_addrs=[recipient])``, the same
    envelope and bytes (``envelope.wire``) without copying the message and writing it again.

    As ``send_message``: SMTPUTF8 (and 8BITMIME) when the sender or ``recipient`` is not ASCII,
    raising SMTPNotSupportedError before MAIL FROM when the server does not offer it."""
    smtp.ehlo_or_helo_if_needed()
    sender = envelope.sender
    utf8 = not (sender + recipient).isascii()
    if utf8 and not smtp.has_extn("smtputf8"):
        raise smtplib.SMTPNotSupportedError(
            "One or more source or delivery addresses require internationalized email support, "
            "but the server does not advertise the required SMTPUTF8 capability"
        )
    options = ("SMTPUTF8", "BODY=8BITMIME") if utf8 else ()
    return smtp.sendmail(sender, [recipient], envelope.wire(recipient, utf8), options)


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
