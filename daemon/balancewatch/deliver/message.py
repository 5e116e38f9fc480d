"""The email channel's envelopes: outbox rows as RFC 5322 messages, a copy per recipient whose
To names that recipient alone, with nothing a user controls reaching a header raw."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator, Mapping
from copy import deepcopy
from datetime import datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses
from functools import lru_cache, partial
from typing import Any

from email_validator import EmailNotValidError, validate_email

from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.mime import Composed, compose, to_field
from balancewatch.outbox import Claimed
from balancewatch.render.templates import one_line

# RFC 5322's limit on a header line, CRLF excluded.
_MAX_LINE = 998
_ENCODED = "=?utf-8?b?{}?="


def subject_field(subject: str, linesep: str = "\r\n") -> str:
    """The Subject header field for ``subject`` (one line, as ``one_line`` makes it), so that
    every reader decodes exactly ``subject``: Python's ``email.policy.default`` and ``compat32``
    parsers (with ``decode_header``) and mail clients alike.

    Python's own folding may leave a space at the end of a line before an encoded-word, which
    the default parser then reads as a second space ("0,20  €"), and folds a long ASCII subject
    at a space that a ``compat32`` reader gets as a line break and a leading space. Instead:
    an ASCII subject is written as it is on one line (up to 998 characters are allowed; subjects
    are at most 250); any other is written wholly as UTF-8 encoded-words, one per line, each
    holding whole characters, spaces included, so no whitespace between them is part of the
    text (RFC 2047, 6.2)."""
    head = "Subject: "
    if subject.isascii() and "=?" not in subject and len(head) + len(subject) <= _MAX_LINE:
        return head + subject + linesep
    words = [_ENCODED.format(base64.b64encode(part).decode("ascii")) for part in _utf8_parts(subject)]
    return head + (linesep + " ").join(words) + linesep


def _utf8_parts(text: str) -> Iterator[bytes]:
    """``text`` in UTF-8, cut between characters into pieces whose encoded-word, after the
    ``Subject: `` it may follow, fits a line of 76 characters."""
    # RFC 2047 allows 76 characters on a line holding an encoded-word: after "Subject: " and
    # "=?utf-8?b??=", 55 for base64, 41 bytes. 39, a multiple of three, pads only the last piece.
    most = 39
    part = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(part) + len(encoded) > most:
            yield part
            part = b""
        part += encoded
    if part or not text:
        yield part


class _Policy(EmailPolicy):
    """``email.policy.SMTP`` with the Subject kept as the text given (the header registry would
    decode anything in it that looks like an encoded-word) and written by :func:`subject_field`."""

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if name.lower() == "subject" and isinstance(value, str):
            return name, value
        return super().header_store_parse(name, value)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if name.lower() == "subject" and not hasattr(value, "name"):
            return value
        return super().header_fetch_parse(name, value)

    def fold(self, name: str, value: Any) -> str:
        if name.lower() == "subject":
            return subject_field(str(value), self.linesep)
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() == "subject":
            return subject_field(str(value), self.linesep).encode("ascii")
        return bytes(super().fold_binary(name, value))


POLICY = _Policy(linesep="\r\n")  # as email.policy.SMTP
UTF8_POLICY = POLICY.clone(utf8=True)  # for a copy whose envelope needs SMTPUTF8


class EmailEnvelope:
    """A message ready for an email transport and the addresses it goes to this time.

    Each recipient gets a copy of its own (``for_recipient``), whose To names that recipient
    alone, so nobody learns who else was told; ``message`` is what the copies share, without a
    To, and is never sent as it is. The copies keep the row's Message-ID, as Bcc copies would:
    a second delivery to the same person stays detectable as a duplicate.

    ``recipients`` are the addresses, normalized and each once, that get a copy this time;
    ``due`` maps each due address of the row, as the row spells it, to the one of those it
    goes out as; ``rejected`` holds the due ones that are not addresses at all, with the reason.

    ``make`` builds ``message`` when it is first asked for: a copy on its way to a server needs
    only its bytes (``wire``), which ``composed`` holds already when ``mime.compose`` wrote them.
    """

    __slots__ = ("_from", "_halves", "_make", "_message", "due", "recipients", "rejected")

    def __init__(
        self,
        make: Callable[[], EmailMessage],
        recipients: tuple[str, ...],
        rejected: Mapping[str, str],
        due: Mapping[str, str],
        sender: str,
        composed: Composed | None = None,
    ) -> None:
        self.recipients, self.rejected, self.due = recipients, rejected, due
        self._from, self._make = sender, make
        self._message: EmailMessage | None = None
        # The shared message as each policy writes it (by ``utf8``), cut where To goes: ``wire``.
        self._halves: dict[bool, tuple[bytes, bytes]] = {}
        if composed is not None:
            self._halves[False] = (composed.head, composed.tail)

    @property
    def message(self) -> EmailMessage:
        """What the copies share, without a To (with the multipart boundary ``wire`` uses)."""
        if self._message is None:
            self._message = self._make()
        return self._message

    @property
    def sender(self) -> str:
        """The envelope sender (MAIL FROM): the address of the From header, as ``smtplib``'s
        ``send_message`` takes it."""
        return _envelope_sender(self._from)

    def for_recipient(self, address: str) -> EmailMessage:
        """The copy ``address`` (one of ``recipients``) gets: ``message`` with ``To: address``.

        Raises ValueError for an address that is not one of ``recipients``, so no copy can name
        anyone the row does not send to.
        """
        if address not in self.recipients:
            raise ValueError(f"{address!r} is not a recipient of this message")
        mine = deepcopy(self.message)
        # EmailMessage only appends a header; To goes where it always stood, before Subject (a
        # reader of the raw message looks for it there), so the headers from Subject on are
        # taken off and put back after it. They are parsed header objects: nothing is re-parsed.
        headers = mine.items()
        moved = headers[[name for name, _ in headers].index("Subject") :]
        for name in dict.fromkeys(name for name, _ in moved):
            del mine[name]
        mine["To"] = address
        for name, value in moved:
            mine[name] = value
        return mine

    def wire(self, address: str, utf8: bool = False) -> bytes:
        """The bytes of ``for_recipient(address)``, written with ``UTF8_POLICY`` (raw UTF-8 in
        headers, for an SMTPUTF8 session) when ``utf8``, else with ``POLICY``.

        Each copy differs from the shared message by its To field alone, so the message is
        written once (per policy; by ``mime.compose`` already, mostly) and each copy is those
        bytes with its To field put in before Subject, where ``for_recipient`` puts it: no copy
        of the message, no second writing. Raises ValueError as ``for_recipient`` does.
        """
        if address not in self.recipients:
            raise ValueError(f"{address!r} is not a recipient of this message")
        policy = UTF8_POLICY if utf8 else POLICY
        halves = self._halves.get(utf8)
        if halves is None:
            halves = self._halves[utf8] = _cut(self.message, policy)
        return halves[0] + to_field(policy, address) + halves[1]

    def as_bytes(self, recipient: str) -> bytes:
        """The copy for ``recipient`` as a file holds it; UTF-8 headers only when its address
        needs them. Raises ValueError as ``for_recipient`` does."""
        return self.wire(recipient, utf8=not recipient.isascii())


@lru_cache(maxsize=64)
def _envelope_sender(sender: str) -> str:
    """The address of a From field holding ``sender``, as ``smtplib.send_message`` reads it."""
    _name, header = POLICY.header_store_parse("From", sender)
    return getaddresses([str(header)])[0][1]


def _cut(message: EmailMessage, policy: EmailPolicy) -> tuple[bytes, bytes]:
    """``message`` written with ``policy``, cut at the start of its Subject field."""
    out = io.BytesIO()
    BytesGenerator(out, policy=policy).flatten(message, linesep="\r\n")
    data = out.getvalue()
    # Subject is in every message (``_shared``), never first (From is); a folded field's
    # continuation lines start with whitespace, so no other line starts so.
    at = data.find(b"\r\nSubject: ", 0, data.find(b"\r\n\r\n")) + 2
    if at < 2:
        raise ValueError("a message without a Subject field")
    return data[:at], data[at:]


@lru_cache(maxsize=4096)  # the same few addresses come back message after message
def normalize(address: str) -> str:
    """``address`` as it goes to the server, with an internationalized domain in its ASCII
    (IDNA) form, so only a non-ASCII mailbox name needs a server with SMTPUTF8.

    Raises ValueError saying what is wrong with it (lru_cache keeps no exception: an invalid
    address is checked again each time).
    """
    if "\r" in address or "\n" in address:
        raise ValueError("line breaks in an address")
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return str(valid.ascii_email or valid.normalized)


def build(row: Claimed, now: datetime, reply_to: str = "") -> EmailEnvelope:
    """The envelope of ``row``: the message its recipients share (no To: each copy gets its own,
    see ``EmailEnvelope.for_recipient``), to go to the row's due recipients, each once.

    Addresses that normalize to the same one, or differ only in capitals (``outbox.add`` keeps
    one of those already, but a row may predate that), get one copy between them.

    Raises a permanent TransportError if the sender cannot be a From header.
    """
    due = set(row.due_recipients)
    normalized: dict[str, str] = {}
    rejected: dict[str, str] = {}
    first: dict[str, str] = {}  # casefolded -> the normalized address first seen so
    for address in row.recipients:
        try:
            norm = normalize(address)
        except ValueError as exc:
            if address in due:
                rejected[address] = f"invalid address: {exc}"
            continue
        normalized[address] = first.setdefault(norm.casefold(), norm)
    sending = {address: norm for address, norm in normalized.items() if address in due}
    recipients = tuple(dict.fromkeys(sending.values()))
    composed = compose(row, one_line(row.subject), format_datetime(now), reply_to, POLICY)
    make = partial(_shared, row, now, reply_to, composed.boundary if composed else None)
    envelope = EmailEnvelope(make, recipients, rejected, sending, row.sender, composed)
    if composed is None:
        envelope.message  # noqa: B018  # the email package's way: a sender it refuses raises now
    return envelope


def _shared(row: Claimed, now: datetime, reply_to: str, boundary: str | None = None) -> EmailMessage:
    """The message of ``row`` without a To; a multipart one with ``boundary`` when given (the
    one ``mime.compose`` wrote it with). Raises a permanent TransportError if the sender cannot
    be a From header."""
    msg = EmailMessage(policy=POLICY)
    try:
        msg["From"] = row.sender
        if reply_to:
            msg["Reply-To"] = reply_to
    except (ValueError, TypeError) as exc:
        raise TransportError(
            f"sender {row.sender!r} cannot be a From header: {exc}", permanent=True
        ) from None
    msg["Subject"] = one_line(row.subject)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = row.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(row.text)
    if row.html:
        msg.add_alternative(row.html, subtype="html")
    for a in row.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(
            a.content.encode("utf-8"),
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=a.filename,
        )
    if boundary is not None and msg.is_multipart():
        msg.set_boundary(boundary)
    return msg
