"""An outbox row's message written straight to bytes, as the ``email`` package would write it.

Building an ``EmailMessage`` and writing it costs about a millisecond and a half a message, most
of it parsing and folding again the same few header values; delivery is not much more than that.
``compose`` writes the shapes the producers make (text, or text and HTML, no attachment) itself:
each header field as the ``email`` package folds it (values that repeat from message to message,
the sender, Date, the MIME headers, are folded by it once and kept; a plain address or
Message-ID goes as it is, which is how it would fold it), and each body encoded as its
``set_content`` encodes it (``textbody``, the same text in less time). The bytes are
those of ``message._shared``'s message with the same boundary, written with ``POLICY``
(``tests/test_deliver_wire.py`` holds them to it). Anything else (attachments, a body holding a
line like a boundary, a value the ``email`` package refuses) is left to the ``email`` package:
``compose`` returns None.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from email.errors import MessageError
from email.policy import EmailPolicy
from functools import lru_cache

from balancewatch.deliver.textbody import encode_text
from balancewatch.outbox import Claimed

_NL = b"\r\n"
_DIGITS = len(repr(sys.maxsize - 1))  # how the email package's boundaries are made
_ZEROS = "0" * _DIGITS
_EQUALS = "=" * 15
# Addresses and Message-IDs the email package writes back exactly as given, on one line: plain
# dot-atoms (RFC 5322 atext) with a plain domain, short enough that nothing is folded.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_ID = re.compile(r"<[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>")
_SHORT = 78  # a line the email package leaves whole


@dataclass(frozen=True, slots=True)
class Composed:
    """A message as bytes, cut where a copy's To field goes (before Subject), and the multipart
    boundary it uses (None: a single part)."""

    head: bytes
    tail: bytes
    boundary: str | None


@lru_cache(maxsize=512)
def field(policy: EmailPolicy, name: str, value: str) -> bytes:
    """The header field ``name: value`` as ``policy`` writes it (folded, encoded), ending in CRLF.
    Raises what the email package raises for a value it refuses."""
    name, parsed = policy.header_store_parse(name, value)
    return bytes(policy.fold_binary(name, parsed))


def to_field(policy: EmailPolicy, address: str) -> bytes:
    """The To field naming ``address`` alone, as ``policy`` writes it."""
    if len(address) <= _SHORT - 4 and _PLAIN_ADDRESS.fullmatch(address):
        return b"To: " + address.encode("ascii") + _NL
    name, parsed = policy.header_store_parse("To", address)
    return bytes(policy.fold_binary(name, parsed))


def _id_field(policy: EmailPolicy, message_id: str) -> bytes:
    if len(message_id) <= _SHORT - 12 and _PLAIN_ID.fullmatch(message_id):
        return b"Message-ID: " + message_id.encode("ascii") + _NL
    name, parsed = policy.header_store_parse("Message-ID", message_id)
    return bytes(policy.fold_binary(name, parsed))


def _part(policy: EmailPolicy, subtype: str, text: str, mime_version: bool) -> bytes:
    """A text part's header fields, the blank line and its body, as ``set_content`` sets and the
    generator writes them (an ``EmailMessage`` part adds MIME-Version after its own fields)."""
    cte, payload = encode_text(text, policy)
    fields = field(policy, "Content-Type", f'text/{subtype}; charset="utf-8"') + field(
        policy, "Content-Transfer-Encoding", cte
    )
    if mime_version:
        fields += field(policy, "MIME-Version", "1.0")
    # The payload has LF line ends (and bytes beyond ASCII as surrogates for 8bit): the generator
    # writes each line with CRLF.
    return fields + _NL + payload.encode("ascii", "surrogateescape").replace(b"\n", _NL)


def _multipart_field(policy: EmailPolicy, boundary: str) -> bytes:
    # The folding depends on the boundary's length and kind of characters, never on its digits:
    # fold a boundary of zeros once, then put the digits in.
    template = field(policy, "Content-Type", f'multipart/alternative; boundary="{_EQUALS}{_ZEROS}=="')
    return template.replace(_ZEROS.encode("ascii"), boundary[15 : 15 + _DIGITS].encode("ascii"))


def compose(row: Claimed, subject: str, date: str, reply_to: str, policy: EmailPolicy) -> Composed | None:
    """``row``'s message (with ``subject`` already made one line, and ``date`` formatted) as
    ``policy`` writes it, headers in ``_shared``'s order; None when it is not a shape this writes
    (then the ``email`` package does)."""
    if row.attachments:
        return None
    try:
        head = field(policy, "From", row.sender)
        if reply_to:
            head += field(policy, "Reply-To", reply_to)
        tail = (
            bytes(policy.fold_binary("Subject", subject))
            + field(policy, "Date", date)
            + _id_field(policy, row.message_id)
            + field(policy, "Auto-Submitted", "auto-generated")
            + field(policy, "X-Auto-Response-Suppress", "All")
        )
        # A single part keeps its fields at the top, MIME-Version after them (``set_content``).
        text = _part(policy, "plain", row.text, mime_version=not row.html)
        if not row.html:
            return Composed(head, tail + text, None)
        html = _part(policy, "html", row.html, mime_version=True)
    except (ValueError, TypeError, MessageError):
        return None
    boundary = f"{_EQUALS}{random.randrange(sys.maxsize):0{_DIGITS}d}=="
    if b"--" + _EQUALS.encode("ascii") in text + html:
        return None  # the generator would have to pick another boundary: let it
    dash = f"--{boundary}".encode("ascii")
    tail += (
        field(policy, "MIME-Version", "1.0")
        + _multipart_field(policy, boundary)
        + _NL
        + dash
        + _NL
        + text
        + _NL
        + dash
        + _NL
        + html
        + _NL
        + dash
        + b"--"
        + _NL
    )
    return Composed(head, tail, boundary)
