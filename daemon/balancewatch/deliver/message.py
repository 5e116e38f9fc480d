"""Outbox rows as RFC 5322 messages, with nothing a user controls reaching a header raw."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from email_validator import EmailNotValidError, validate_email

from balancewatch.deliver.errors import TransportError
from balancewatch.outbox import Claimed
from balancewatch.render import one_line

POLICY = email.policy.SMTP


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message ready for a transport, and the addresses it goes to."""

    message: EmailMessage
    recipients: tuple[str, ...]
    rejected: tuple[str, ...]  # addresses dropped as invalid, with the reason

    def as_bytes(self) -> bytes:
        """The message as a file holds it; UTF-8 headers only when an address needs them."""
        ascii_only = all(a.isascii() for a in self.recipients)
        return self.message.as_bytes(policy=POLICY if ascii_only else POLICY.clone(utf8=True))


def split_valid(addresses: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Valid addresses and a reason for each invalid one.

    Addresses are normalized, with an internationalized domain in its ASCII
    (IDNA) form, so only a non-ASCII mailbox name needs a server with SMTPUTF8.
    """
    good, bad = [], []
    for address in addresses:
        if "\r" in address or "\n" in address:
            bad.append(f"{address!r}: line breaks in an address")
            continue
        try:
            valid = validate_email(address, check_deliverability=False)
            good.append(valid.ascii_email or valid.normalized)
        except EmailNotValidError as exc:
            bad.append(f"{address!r}: {exc}")
    return list(dict.fromkeys(good)), bad


def build(row: Claimed, now: datetime, reply_to: str = "") -> Envelope:
    """The message for ``row``; raises a permanent TransportError if no recipient is valid."""
    good, bad = split_valid(row.recipients)
    if not good:
        raise TransportError("invalid address: " + "; ".join(bad or ["no recipients"]), permanent=True)
    msg = EmailMessage(policy=POLICY)
    try:
        msg["From"] = row.sender
        if reply_to:
            msg["Reply-To"] = reply_to
    except (ValueError, TypeError) as exc:
        raise TransportError(
            f"sender {row.sender!r} cannot be a From header: {exc}", permanent=True
        ) from None
    msg["To"] = ", ".join(good)
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
    return Envelope(msg, tuple(good), tuple(bad))
