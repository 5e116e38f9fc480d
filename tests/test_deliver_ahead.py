"""An email's outcome is written while the next message goes out, and committed before the server
can accept that one (``deliver/records.py``): at no moment are two accepted messages unrecorded.

When that write fails, the next message is broken off in its DATA (the server never accepts it),
the outcome is kept and written once the database answers, and the rest goes then, each message
once. When the write finds the next row taken over by another worker, that row is not sent and
the batch goes on over a new session. A real SMTP server (aiosmtpd on loopback); time is the
test's clock; the database fails where the test says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from balancewatch import outbox
from balancewatch.runtime.service import Pipeline
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import Clock
from tests.smtpserver import SmtpServer
from tests.test_delivery import add_messages, outbox_rows, smtp_pipeline  # noqa: F401  # a fixture

Record = Callable[..., tuple[bool, bool]]


def failing_at(calls: int, real: Record) -> Record:
    """``outbox.record_and_renew`` failing as a lost database at its ``calls``-th call."""
    count = 0

    def record(*args: Any, **kwargs: Any) -> tuple[bool, bool]:
        nonlocal count
        count += 1
        if count == calls:
            raise OperationalError("UPDATE outbox", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    return record


def test_a_failed_write_stops_the_next_message_before_the_server_accepts_it(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = add_messages(engine, clock(), ["a@acme.example"], ["b@acme.example"], ["c@acme.example"])
    monkeypatch.setattr(outbox, "record_and_renew", failing_at(2, outbox.record_and_renew))
    with pytest.raises(SQLAlchemyError):
        smtp_pipeline.deliver(clock())
    assert [m.rcpt_tos for m in smtp_server.received] == [("a@acme.example",), ("b@acme.example",)]
    courier = smtp_pipeline.courier
    assert courier.unrecorded.outcomes.keys() == {outbox_rows(engine)[keys[1]].id}
    assert courier.unrecorded.releases == {outbox_rows(engine)[keys[2]].id}

    monkeypatch.undo()
    stats = smtp_pipeline.deliver(clock())
    assert stats.outcomes == {"sent": 2, "released": 1}  # b's kept outcome, then c
    # Each once: a c accepted in the broken-off session would be here twice.
    assert sorted(m.rcpt_tos for m in smtp_server.wait_for(3)) == [
        ("a@acme.example",),
        ("b@acme.example",),
        ("c@acme.example",),
    ]
    assert {row.status for row in outbox_rows(engine).values()} == {"sent"}


def test_a_row_taken_over_meanwhile_is_not_sent_and_the_batch_goes_on(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = add_messages(engine, clock(), ["a@acme.example"], ["b@acme.example"], ["c@acme.example"])
    b = outbox_rows(engine)[keys[1]].id
    real = outbox.record_and_renew

    def taken_over(conn: Connection, *args: Any) -> tuple[bool, bool]:
        # Another instance takes b over while a's outcome is being written.
        conn.execute(update(OUTBOX_TABLE).where(OUTBOX_TABLE.c.id == b).values(claimed_by="other"))
        return real(conn, *args)

    monkeypatch.setattr(outbox, "record_and_renew", taken_over)
    stats = smtp_pipeline.deliver(clock())
    assert stats.outcomes == {"sent": 2, "lost": 1}
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [("a@acme.example",), ("c@acme.example",)]
    assert len({m.peer for m in smtp_server.received}) == 2  # b broken off in its DATA: a new session
    rows = outbox_rows(engine)
    assert (rows[keys[1]].status, rows[keys[1]].claimed_by) == ("sending", "other")
    assert rows[keys[0]].status == rows[keys[2]].status == "sent"
