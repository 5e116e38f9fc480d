"""Transport failures that say whether trying again can help."""

from __future__ import annotations

from datetime import timedelta


class LeaseLost(Exception):  # noqa: N818  # a state, as the docstring says
    """The row about to be delivered went to another worker meanwhile (this one was judged dead
    by mistake: a stall, a skewed clock): raised before the other side could take the message,
    which is then not delivered by this worker."""


class TransportError(Exception):
    """A delivery failed. ``permanent`` failures are parked; others are retried with backoff.

    ``connection`` is True when the transport itself is unusable (connect,
    TLS, login, a dropped connection) rather than this one message.
    ``retry_after`` is how long the other side asked to be left alone (an HTTP
    ``Retry-After``): the next try is not sooner.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        connection: bool = False,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.connection = connection
        self.retry_after = retry_after
