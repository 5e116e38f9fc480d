"""What every transport and every envelope promise the courier, whatever the channel."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, Self, TypeVar

from balancewatch.deliver.errors import TransportError


class Envelope(Protocol):
    """A message built for one channel, and how the row's due recipients map onto it.

    ``recipients`` are the addresses it goes to this time, as the transport spells them;
    ``due`` maps each due recipient of the row (as the row spells it) to one of those;
    ``rejected`` holds the due recipients that cannot be addresses on this channel at all,
    with the reason (they are parked without being tried).
    """

    @property
    def recipients(self) -> tuple[str, ...]: ...
    @property
    def due(self) -> Mapping[str, str]: ...
    @property
    def rejected(self) -> Mapping[str, str]: ...


# Called by a transport right before the other side can take a message (an SMTP server's final
# dot, a POST, a file's rename); what it raises propagates, and the message is not delivered.
Ready = Callable[[], None]
# Called by a transport while the other side takes a message it has sent in full (an SMTP
# server's work between the final dot and its answer), so the courier can build the next one
# meanwhile; it never raises. A transport with no such wait does not call it.
Meanwhile = Callable[[], None]

EnvelopeT = TypeVar("EnvelopeT", bound=Envelope)
EnvelopeT_contra = TypeVar("EnvelopeT_contra", bound=Envelope, contravariant=True)


class Transport(Protocol[EnvelopeT_contra]):
    """One way of delivering the envelopes of one channel (``Transport[EmailEnvelope]``).

    ``channel`` is what it delivers (``email``); ``name`` is how (``smtp``, ``files``), for
    logs and metrics. Used as a context manager per batch: entering opens the session and
    raises TransportError with ``connection`` set when it cannot.
    """

    @property
    def channel(self) -> str: ...
    @property
    def name(self) -> str: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...

    def send(
        self, envelope: EnvelopeT_contra, ready: Ready | None = None, meanwhile: Meanwhile | None = None
    ) -> dict[str, TransportError]:
        """Deliver ``envelope``; return the recipients refused (by ``envelope.recipients``
        spelling), each with its error. ``ready`` (when given) is called before the first part
        of it can be taken by the other side; an exception it raises ends the send at once,
        propagated as it is, with nothing of the envelope delivered. ``meanwhile`` (when given)
        is called at most once, while the other side works on what was sent (``Meanwhile``).

        Raises TransportError when the whole envelope failed: ``permanent`` if trying again
        cannot help, ``connection`` if the session is unusable.
        A transport that sends in parts (a copy per recipient) and loses its session after some
        were accepted does not raise: it returns the rest with connection errors (retried), so
        the accepted ones are recorded as sent and never sent again, and raises at the next send."""
        ...

    def abort(self) -> None:
        """Break off a send in progress, from another thread; it then fails as a connection
        failure. Does nothing when no session is open."""
        ...
