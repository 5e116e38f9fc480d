"""An ``index.html`` for a folder of ``.eml`` files, so a browser can read what was sent.

One line per file: each recipient's copy of a message is a file of its own
(To naming only them), and the copies of one message are listed together,
by recipient. Each file's HTML part is also written to ``html/<name>.html``
(its plain text when it has none), because browsers download ``.eml`` files
rather than show them.
"""

from __future__ import annotations

import email
import email.policy
import html
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>balancewatch mail ({count})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2937; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e5e7eb; font-size: 14px; }}
th {{ background: #f9fafb; }}
</style></head><body>
<h1>{count} emails</h1>
<p>Written by the file transport. Open a subject to read the HTML part;
the .eml link opens in a mail client.</p>
<table><tr><th>date</th><th>to</th><th>subject</th><th>file</th></tr>
{rows}
</table></body></html>
"""


def _read(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        return email.message_from_binary_file(handle, policy=email.policy.default)


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html", "plain"))
    if part is None:
        return ""
    content = part.get_content()
    if part.get_content_type() == "text/plain":
        return f"<pre style='font-family:monospace;white-space:pre-wrap'>{html.escape(content)}</pre>"
    return str(content)


def write_index(directory: Path) -> Path:
    """Write ``directory/index.html`` and the HTML views; return the index path."""
    directory.mkdir(parents=True, exist_ok=True)
    views = directory / "html"
    views.mkdir(exist_ok=True)
    entries = []
    for path in directory.glob("*.eml"):
        msg = _read(path)
        (views / f"{path.stem}.html").write_text(_body(msg), encoding="utf-8")
        when = parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
        stamp = when.isoformat() if when else ""
        entries.append(
            (stamp, str(msg["Message-ID"] or ""), str(msg["To"] or ""), str(msg["Subject"] or ""), path)
        )
    # The copies of one message share its Date and Message-ID: together, ordered by recipient.
    entries.sort(key=lambda e: (e[0], e[1], e[2], e[4].name))
    rows = "\n".join(
        f"<tr><td>{html.escape(when[:16].replace('T', ' '))}</td><td>{html.escape(to)}</td>"
        f"<td><a href='html/{path.stem}.html'>{html.escape(subject)}</a></td>"
        f"<td><a href='{path.name}'>{path.name}</a></td></tr>"
        for when, _message_id, to, subject, path in entries
    )
    index = directory / "index.html"
    index.write_text(PAGE.format(count=len(entries), rows=rows), encoding="utf-8")
    return index
