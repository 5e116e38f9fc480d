"""The file transport: one ``.eml`` per message, a file any mail client opens.

The file name derives from the Message-ID, so delivering a message twice
(at-least-once after a crash) rewrites the same file instead of adding one.
Files are written to a temporary name and renamed, so a reader never sees half.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.message import EmailEnvelope


def eml_name(envelope: EmailEnvelope) -> str:
    message_id = str(envelope.message["Message-ID"])
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:16]
    return f"{digest}.eml"


class FileTransport:
    """Writes envelopes to ``directory``; use as a context manager per batch."""

    channel = "email"
    name = "files"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self) -> FileTransport:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"create {self.directory}: {exc}", connection=True) from exc
        return self

    def send(self, envelope: EmailEnvelope) -> dict[str, TransportError]:
        """Write the message; return no refusals. Raises TransportError if the disk fails."""
        final = self.directory / eml_name(envelope)
        temp = final.with_suffix(".eml.tmp")
        try:
            temp.write_bytes(envelope.as_bytes())
            temp.replace(final)
        except OSError as exc:
            raise TransportError(f"write {final}: {exc}", connection=True) from exc
        return {}

    def abort(self) -> None:
        """Nothing to break off: a file is written in one step."""

    def __exit__(self, *exc: object) -> None:
        return None
