"""A text part's body encoded as ``EmailMessage.set_content`` encodes it, in a fraction of the time.

``email.contentmanager`` picks 7bit, 8bit, quoted-printable or base64 by the same rules as here
and quotes a quoted-printable body with ``str.translate`` over a table of 256 strings, one
lookup per character: about 50 microseconds for an alert's HTML, several times over. Here the
characters to quote (few: ``=`` and those beyond ASCII) are found by a regular expression, and
the rest is the standard library's code as it is (Python 3.11's ``_encode_text`` and
``quoprimime.body_encode``), so the text is the same; ``tests/test_deliver_wire.py`` holds it to
that against the standard library itself.
"""

from __future__ import annotations

import binascii
import re
from email.policy import EmailPolicy

# What quoted-printable leaves as it is in a body: printable ASCII but "=", and TAB, CR, LF.
_TO_QUOTE = re.compile(r"[^ -<>-~\t\r\n]")


def _quote(match: re.Match[str]) -> str:
    return f"={ord(match.group()):02X}"


def quote(char: str) -> str:
    """One character quoted, as ``quoprimime.quote``."""
    return f"={ord(char):02X}"


def body_encode(body: str, maxlinelen: int) -> str:
    """``quoprimime.body_encode(body, maxlinelen)`` (line ends LF): ``body`` holds characters
    below 256 only (bytes read as Latin-1)."""
    if not body:
        return body
    body = _TO_QUOTE.sub(_quote, body)
    maxlinelen1 = maxlinelen - 1
    encoded: list[str] = []
    append = encoded.append
    for line in body.splitlines():
        start = 0
        laststart = len(line) - 1 - maxlinelen
        while start <= laststart:
            stop = start + maxlinelen1
            if line[stop - 2] == "=":  # never break a quoted character
                append(line[start : stop - 1])
                start = stop - 2
            elif line[stop - 1] == "=":
                append(line[start:stop])
                start = stop - 1
            else:
                append(line[start:stop] + "=")
                start = stop
        if line and line[-1] in " \t":  # whitespace at the end of a line is quoted or kept whole
            room = start - laststart
            if room >= 3:
                end = quote(line[-1])
            elif room == 2:
                end = line[-1] + "=\n"
            else:
                end = "=\n" + quote(line[-1])
            append(line[start:-1] + end)
        else:
            append(line[start:])
    if body[-1] in "\r\n":
        append("")
    return "\n".join(encoded)


def encode_text(text: str, policy: EmailPolicy) -> tuple[str, str]:
    """(Content-Transfer-Encoding, payload) as ``set_content(text)`` (UTF-8) chooses and makes
    them under ``policy``: the payload's lines end in LF; an 8bit one holds bytes beyond ASCII
    as surrogates."""
    lines = text.encode("utf-8").splitlines()
    linesep = policy.linesep.encode("ascii")
    most = policy.max_line_length or 0
    normal = b"\n".join(lines) + b"\n"
    if max(map(len, lines), default=0) <= most:
        try:
            return "7bit", normal.decode("ascii")
        except UnicodeDecodeError:
            pass
        if policy.cte_type == "8bit":
            return "8bit", normal.decode("ascii", "surrogateescape")
    sniff = linesep.join(lines[:10]) + linesep
    sniff_qp = body_encode(sniff.decode("latin-1"), most)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        embedded = linesep.join(lines) + linesep
        per_line = most // 4 * 3
        return "base64", "".join(
            binascii.b2a_base64(embedded[i : i + per_line]).decode("ascii")
            for i in range(0, len(embedded), per_line)
        )
    if len(lines) <= 10:
        return "quoted-printable", sniff_qp
    return "quoted-printable", body_encode(normal.decode("latin-1"), most)
