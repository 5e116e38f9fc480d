"""The email channel's envelopes: outbox rows as RFC 5322 messages, with nothing a user
controls reaching a header raw."""

from __future__ import annotations

import email.policy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from email_validator import EmailNotValidError, validate_email

from balancewatch.deliver.errors import TransportError
from balancewatch.outbox import Claimed
from balancewatch.render.templates import one_line

POLICY = email.policy.SMTP


@dataclass(frozen=True, slots=True)
class EmailEnvelope:
    """A message ready for an email transport and the addresses it goes to this time (``recipients``,
    normalized). ``due`` maps each due address of the row, as the row spells it, to the
    normalized address it goes out as; ``rejected`` holds the due ones that are not addresses
    at all, with the reason."""

    message: EmailMessage
    recipients: tuple[str, ...]
    rejected: Mapping[str, str] = field(default_factory=dict)
    due: Mapping[str, str] = field(default_factory=dict)

    def as_bytes(self) -> bytes:
        """The message as a file holds it; UTF-8 headers only when an address needs them."""
        ascii_only = all(a.isascii() for a in self.recipients)
        return self.message.as_bytes(policy=POLICY if ascii_only else POLICY.clone(utf8=True))


def normalize(address: str) -> str:
    """``address`` as it goes to the server, with an internationalized domain in its ASCII
    (IDNA) form, so only a non-ASCII mailbox name needs a server with SMTPUTF8.

    Raises ValueError saying what is wrong with it.
    """
    if "\r" in address or "\n" in address:
        raise ValueError("line breaks in an address")
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return str(valid.ascii_email or valid.normalized)


def build(row: Claimed, now: datetime, reply_to: str = "") -> EmailEnvelope:
    """The message for ``row``, addressed (in the To header) to every valid recipient of the
    row and sent (in the envelope) to those still due.

    Raises a permanent TransportError if the sender cannot be a From header.
    """
    due = set(row.due_recipients)
    normalized: dict[str, str] = {}
    rejected: dict[str, str] = {}
    for address in row.recipients:
        try:
            normalized[address] = normalize(address)
        except ValueError as exc:
            if address in due:
                rejected[address] = f"invalid address: {exc}"
    msg = EmailMessage(policy=POLICY)
    try:
        msg["From"] = row.sender
        if reply_to:
            msg["Reply-To"] = reply_to
    except (ValueError, TypeError) as exc:
        raise TransportError(
            f"sender {row.sender!r} cannot be a From header: {exc}", permanent=True
        ) from None
    if normalized:
        msg["To"] = ", ".join(dict.fromkeys(normalized.values()))
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
    sending = {address: norm for address, norm in normalized.items() if address in due}
    return EmailEnvelope(msg, tuple(dict.fromkeys(sending.values())), rejected, sending)
