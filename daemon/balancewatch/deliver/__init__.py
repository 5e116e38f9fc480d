"""Delivery: outbox rows out through the transport of their channel.

Every outbox row names its ``channel``. ``registry.Registry`` maps each channel
this daemon delivers to one transport (``transport.Transport[E]``, typed on
the envelope ``E`` it sends) and the builder that turns a claimed row into
that envelope. Today there is one channel, ``email``, with two transports to
choose from in the config: ``smtp.SmtpTransport`` and ``files.FileTransport``
(``.eml`` files), both sending ``message.EmailEnvelope``. ``worker.Courier``
claims due rows of the registered channels, hands each to its channel's
transport and records what each recipient's attempt means (``outcome``).
A row of a channel this instance has no transport for is not claimed: it
stays pending, with ``last_error`` saying so, for an instance that has one.

Adding a channel (a webhook, a chat):

1. an envelope class with ``recipients``, ``due`` and ``rejected``
   (``transport.Envelope``), and a builder ``(Claimed, now) -> envelope``;
2. a transport with ``channel = "webhook"``, a ``name`` for logs and metrics,
   and ``send(envelope) -> refusals`` raising ``errors.TransportError``
   (``permanent``, ``connection``) as the email transports do;
3. ``registry.register(transport, builder)`` in ``registry.make_registry``
   when the config asks for it;
4. producers write their rows with ``NewMessage(channel="webhook", ...)``.
"""
