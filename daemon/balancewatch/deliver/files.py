"""The file transport: one ``.eml`` per recipient of a message, a file any mail client opens.

Each recipient's copy names only them in To, as over SMTP. The file name derives from the
Message-ID and the recipient, so delivering a message twice (at-least-once after a crash)
rewrites the same files instead of adding some. Files are written to a temporary name and
renamed, so a reader never sees half.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.message import EmailEnvelope
from balancewatch.deliver.transport import Meanwhile, Ready


def eml_name(message_id: str, recipient: str) -> str:
    """The file name of ``recipient``'s copy of the message ``message_id``: the same for the
    same pair, whenever it is written; a digest, so neither shows in a directory listing."""
    digest = hashlib.sha256(f"{message_id}\n{recipient}".encode()).hexdigest()[:16]
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

    def send(
        self, envelope: EmailEnvelope, ready: Ready | None = None, meanwhile: Meanwhile | None = None
    ) -> dict[str, TransportError]:
        """Write each recipient's copy to a file of its own. Returns no refusals unless the disk
        fails after the first copy: the copies written keep their outcome and the rest are
        returned with the error (temporary), as the SMTP transport does when its session breaks.

        Raises TransportError (``connection``) if the disk fails at the first copy. ``ready`` is
        called before the first file takes its name.
        """
        message_id = str(envelope.message["Message-ID"])
        for i, recipient in enumerate(envelope.recipients):
            final = self.directory / eml_name(message_id, recipient)
            temp = final.with_suffix(".eml.tmp")
            try:
                temp.write_bytes(envelope.as_bytes(recipient))
                if i == 0 and ready is not None:
                    try:
                        ready()
                    except BaseException:
                        temp.unlink(missing_ok=True)
                        raise
                temp.replace(final)
            except OSError as exc:
                error = TransportError(f"write {final}: {exc}", connection=True)
                if i == 0:
                    raise error from exc
                return dict.fromkeys(envelope.recipients[i:], error)
        return {}

    def abort(self) -> None:
        """Nothing to break off: a file is written in one step."""

    def __exit__(self, *exc: object) -> None:
        return None
