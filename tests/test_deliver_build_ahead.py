"""The next email is built while the SMTP server takes the one before it (``registry.Ahead``,
``Transport.send``'s ``meanwhile``): the courier's work overlaps the server's. A real SMTP server
(aiosmtpd on loopback); time is the test's clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from balancewatch import outbox
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.ratelimit import RateLimit
from balancewatch.deliver.registry import Ahead, Route
from balancewatch.runtime.service import Pipeline
from tests.conftest import Clock
from tests.smtpserver import SmtpServer
from tests.test_delivery import DOMAIN, SENDER, add_messages, outbox_rows, smtp_pipeline  # noqa: F401

Built = list[tuple[str, bool]]  # (the row's first recipient, whether a send was in progress)


def spy_on_builds(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Built:
    """Record each envelope the email route builds, and whether the transport was sending then."""
    registry = pipeline.courier.transports
    route: Route[Any] = registry.route("email")  # type: ignore[assignment]
    built: Built = []
    sending = [False]
    real_send = route.transport.send

    def send(*args: Any, **kwargs: Any) -> Any:
        sending[0] = True
        try:
            return real_send(*args, **kwargs)
        finally:
            sending[0] = False

    def envelope(row: outbox.Claimed, now: datetime) -> Any:
        built.append((row.recipients[0], sending[0]))
        return route.envelope(row, now)

    monkeypatch.setattr(route.transport, "send", send)
    monkeypatch.setitem(registry._routes, "email", replace(route, envelope=envelope))
    return built


def test_each_next_message_is_built_once_while_the_server_takes_the_one_before(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_messages(engine, clock(), ["a@acme.example"], ["b@acme.example"], ["c@acme.example"])
    built = spy_on_builds(smtp_pipeline, monkeypatch)
    stats = smtp_pipeline.deliver(clock())
    assert stats.outcomes == {"sent": 3}
    # The first before any send; each later one inside the send before it, after its final dot.
    assert built == [("a@acme.example", False), ("b@acme.example", True), ("c@acme.example", True)]
    mails = smtp_server.wait_for(3)
    assert [m.rcpt_tos for m in mails] == [("a@acme.example",), ("b@acme.example",), ("c@acme.example",)]
    assert [m.message["To"] for m in mails] == ["a@acme.example", "b@acme.example", "c@acme.example"]


def test_a_message_that_cannot_be_built_ahead_fails_alone_when_its_turn_comes(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    keys = add_messages(engine, clock(), ["a@acme.example"])
    broken = outbox.NewMessage(
        idem_key="alert/test/broken",
        kind="alert",
        sender="alerts@platform.example\r\nBcc: everyone@acme.example",
        recipients=("b@acme.example",),
        subject="Message b",
        text="b\n",
        html=None,
    )
    with engine.begin() as conn:
        outbox.add(conn, [broken], clock(), DOMAIN)
    keys += [broken.idem_key, *add_messages(engine, clock(), ["c@acme.example"], prefix="alert/test/c")]
    stats = smtp_pipeline.deliver(clock())
    assert stats.outcomes == {"sent": 2, "parked": 1}
    rows = outbox_rows(engine)
    assert [rows[k].status for k in keys] == ["sent", "parked", "sent"]
    assert "cannot be a From header" in rows[broken.idem_key].last_error
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [("a@acme.example",), ("c@acme.example",)]


def claimed(row_id: int, to: str) -> outbox.Claimed:
    now = datetime.fromisoformat("2026-12-01T08:00:00+00:00")
    return outbox.Claimed(
        row_id, f"k{row_id}", f"<{row_id}@x>", SENDER, (to,), "S", "t\n", None, 0, now, (), {}
    )


def test_an_envelope_built_ahead_is_given_only_to_its_own_row_and_only_once() -> None:
    made: list[int] = []

    def envelope(row: outbox.Claimed, now: datetime) -> str:
        made.append(row.id)
        return f"envelope {row.id}"

    route = Route(transport=SimpleNamespace(channel="email"), envelope=envelope)  # type: ignore[arg-type]
    ahead = Ahead(lambda: datetime.fromisoformat("2026-12-01T08:00:00+00:00"))
    assert ahead.meanwhile(route) is None  # nothing to build ahead
    ahead.next = claimed(2, "b@acme.example")
    build = ahead.meanwhile(route)
    assert build is not None
    build()
    assert ahead.take(claimed(3, "c@acme.example")) is None  # another row: built for nothing, dropped
    assert ahead.take(claimed(2, "b@acme.example")) is None
    build()
    assert ahead.take(claimed(2, "b@acme.example")) == "envelope 2"
    assert ahead.take(claimed(2, "b@acme.example")) is None
    assert made == [2, 2]
    ahead.next = replace(claimed(4, "d@acme.example"), channel="hooks")
    assert ahead.meanwhile(route) is None  # another channel's row: built by its own route
    ahead.next = claimed(5, "e@acme.example")
    paced = replace(route, limit=RateLimit(Decimal(1)))
    assert ahead.meanwhile(paced) is None  # the next one waits for its turn anyway


def test_what_building_ahead_raised_is_raised_when_the_row_is_sent() -> None:
    def envelope(row: outbox.Claimed, now: datetime) -> str:
        raise TransportError("sender cannot be a From header", permanent=True)

    route = Route(transport=SimpleNamespace(channel="email"), envelope=envelope)  # type: ignore[arg-type]
    ahead = Ahead(lambda: datetime.fromisoformat("2026-12-01T08:00:00+00:00"))
    ahead.next = claimed(2, "b@acme.example")
    build = ahead.meanwhile(route)
    assert build is not None
    build()  # the transport's call never raises
    with pytest.raises(TransportError, match="From header"):
        ahead.take(claimed(2, "b@acme.example"))
