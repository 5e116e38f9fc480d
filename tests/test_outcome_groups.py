"""Outcomes written in groups: when a group is due (deliver/pending.py), and writing many
outcomes in one statement telling which rows the worker still held (outbox.record_many)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select, update

from balancewatch import outbox
from balancewatch.deliver.pending import Pending
from balancewatch.outbox import RowUpdate
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import T0

LEASE = timedelta(minutes=5)


def claimed(row_id: int) -> outbox.Claimed:
    return outbox.Claimed(row_id, f"k{row_id}", "<m@x>", "a@x", ("hook",), "s", "t", None, 1, T0)


def test_a_group_is_due_when_full_or_when_its_oldest_has_waited() -> None:
    now = [100.0]
    pending = Pending(clock=lambda: now[0])
    assert not pending.due(3)
    for row_id in (1, 2):
        pending.add(claimed(row_id), RowUpdate(outbox.SENT, {}))
    assert not pending.due(3)
    now[0] += 0.25  # the oldest has waited past WITHIN
    assert pending.due(3)
    assert [row.id for row, _update in pending.take()] == [1, 2] and not pending
    pending.add(claimed(3), RowUpdate(outbox.SENT, {}))
    assert pending.due(1)  # email: every outcome at once


def test_record_many_writes_each_outcome_and_names_the_rows_another_worker_took(engine: Engine) -> None:
    messages = [
        outbox.NewMessage(f"key-{n}", "alert", "a@x.example", ("hook",), "s", "t", None, channel="hook")
        for n in range(3)
    ]
    with engine.begin() as conn:
        outbox.add(conn, messages, T0, "x.example")
        rows = outbox.claim(conn, "alpha", T0, 10, LEASE)
        # The middle row's lease ran out and another worker took it.
        conn.execute(update(OUTBOX_TABLE).where(OUTBOX_TABLE.c.id == rows[1].id).values(claimed_by="beta"))
    retry_at = T0 + timedelta(minutes=1)
    outcomes = [
        (rows[0].id, RowUpdate(outbox.SENT, {"hook": {"status": "sent"}}, sent_at=T0)),
        (rows[1].id, RowUpdate(outbox.SENT, {"hook": {"status": "sent"}}, sent_at=T0)),
        (rows[2].id, RowUpdate(outbox.PENDING, {"hook": {"status": "pending"}}, retry_at, "HTTP 503")),
    ]
    with engine.begin() as conn:
        assert outbox.record_many(conn, "alpha", outcomes) == [True, False, True]
    with engine.connect() as conn:
        found = conn.execute(
            select(OUTBOX_TABLE.c.status, OUTBOX_TABLE.c.last_error, OUTBOX_TABLE.c.deliveries).order_by(
                OUTBOX_TABLE.c.id
            )
        ).all()
    assert [(status, error) for status, error, _ in found] == [
        ("sent", None),
        ("sending", None),  # beta's now: untouched
        ("pending", "HTTP 503"),
    ]
    assert found[2][2] == {"hook": {"status": "pending"}}
