"""Transport failures that say whether trying again can help."""

from __future__ import annotations


class TransportError(Exception):
    """A delivery failed. ``permanent`` failures are parked; others are retried with backoff.

    ``connection`` is True when the transport itself is unusable (connect,
    TLS, login, a dropped connection) rather than this one message.
    """

    def __init__(self, message: str, *, permanent: bool = False, connection: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.connection = connection
