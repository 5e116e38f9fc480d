"""Outcomes per recipient: a server that refuses one recipient, for now or for good, neither
loses nor blocks the others, and nobody gets the message twice.

A real SMTP server on loopback answers RCPT per address; time is the test's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import Clock
from tests.smtpserver import SmtpServer
from tests.test_delivery import NO_RULES, add_messages, outbox_rows, smtp_pipeline  # noqa: F401

THREE = ["owner@acme.example", "grey@acme.example", "finance@acme.example"]


def statuses(row: object) -> dict[str, str]:
    return {address: entry["status"] for address, entry in row.deliveries.items()}  # type: ignore[attr-defined]


def test_a_greylisted_recipient_is_retried_alone_and_gets_the_message_once(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse["grey@acme.example"] = "451 4.7.1 Greylisted, please try again later"
    [key] = add_messages(engine, clock(), THREE)
    assert smtp_pipeline.deliver(clock()).outcomes == {"retry": 1}
    first, other = smtp_server.wait_for(2)  # each recipient has a copy of their own
    assert [(m.rcpt_tos, m.message["To"]) for m in (first, other)] == [
        (("owner@acme.example",), "owner@acme.example"),
        (("finance@acme.example",), "finance@acme.example"),
    ]
    row = outbox_rows(engine)[key]
    assert row.status == "pending"
    assert statuses(row) == {
        "owner@acme.example": "sent",
        "grey@acme.example": "pending",
        "finance@acme.example": "sent",
    }
    assert row.last_error == "grey@acme.example: 451 4.7.1 Greylisted, please try again later"
    assert clock() < row.next_attempt_at <= clock() + timedelta(seconds=30)

    assert smtp_pipeline.deliver(clock.advance(seconds=10)).claimed == 0  # not before its backoff
    del smtp_server.refuse["grey@acme.example"]
    assert smtp_pipeline.deliver(clock.advance(seconds=30)).outcomes == {"sent": 1}
    _first, _other, second = smtp_server.wait_for(3)
    assert second.rcpt_tos == ("grey@acme.example",)
    assert second.message["Message-ID"] == first.message["Message-ID"]  # one decision, one Message-ID
    assert second.message["To"] == "grey@acme.example"
    assert second.message["Subject"] == first.message["Subject"]
    row = outbox_rows(engine)[key]
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert set(statuses(row).values()) == {"sent"}
    assert row.deliveries["grey@acme.example"]["attempts"] == 2
    assert row.deliveries["owner@acme.example"]["attempts"] == 1

    assert smtp_pipeline.deliver(clock.advance(days=1)).claimed == 0
    assert len(smtp_server.received) == 3


def test_one_recipient_refused_for_good_and_one_for_now_park_and_retry_each_on_its_own(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse["grey@acme.example"] = "450 4.2.0 mailbox busy"
    smtp_server.refuse["finance@acme.example"] = "550 5.1.1 no such user"
    [key] = add_messages(engine, clock(), THREE)
    assert smtp_pipeline.deliver(clock()).outcomes == {"retry": 1}
    row = outbox_rows(engine)[key]
    assert statuses(row) == {
        "owner@acme.example": "sent",
        "grey@acme.example": "pending",
        "finance@acme.example": "parked",
    }

    del smtp_server.refuse["grey@acme.example"]
    del smtp_server.refuse["finance@acme.example"]  # a parked address is not tried again
    assert smtp_pipeline.deliver(clock.advance(minutes=1)).outcomes == {"parked": 1}
    row = outbox_rows(engine)[key]
    assert row.status == "parked"
    assert row.last_error == "finance@acme.example: 550 5.1.1 no such user"
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [
        ("owner@acme.example",),
        ("grey@acme.example",),
    ]


def test_every_recipient_refused_for_now_leaves_the_whole_message_to_retry(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    for address in THREE:
        smtp_server.refuse[address] = "451 4.3.2 system not accepting network messages"
    [key] = add_messages(engine, clock(), THREE)
    assert smtp_pipeline.deliver(clock()).outcomes == {"retry": 1}
    row = outbox_rows(engine)[key]
    assert set(statuses(row).values()) == {"pending"}
    assert row.last_error == (
        "owner@acme.example, grey@acme.example, finance@acme.example: "
        "451 4.3.2 system not accepting network messages"
    )
    smtp_server.refuse.clear()
    assert smtp_pipeline.deliver(clock.advance(minutes=1)).outcomes == {"sent": 1}
    mails = smtp_server.wait_for(3)
    assert [(m.rcpt_tos, m.message["To"]) for m in mails] == [((a,), a) for a in THREE]


def test_a_421_closing_the_session_keeps_every_message_of_the_batch_for_a_retry(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse["owner@acme.example"] = "421 4.3.2 shutting down"
    first, second = add_messages(engine, clock(), ["owner@acme.example"], ["other@acme.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"retry": 2}
    rows = outbox_rows(engine)
    assert [rows[k].status for k in (first, second)] == ["pending", "pending"]
    assert "421 4.3.2 shutting down" in rows[first].last_error
    smtp_server.refuse.clear()
    assert smtp_pipeline.deliver(clock.advance(minutes=1)).outcomes == {"sent": 2}


def test_a_recipient_still_greylisted_after_give_up_after_is_parked_and_the_others_keep_their_copy(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    settings = make_settings(db_url, **smtp_server.env(), delivery__retry__give_up_after="1h")
    pipeline = build_pipeline(engine, settings, live_from(NO_RULES))
    smtp_server.refuse["grey@acme.example"] = "451 4.7.1 Greylisted"
    [key] = add_messages(engine, clock(), ["owner@acme.example", "grey@acme.example"])
    assert pipeline.deliver(clock()).outcomes == {"retry": 1}
    assert pipeline.deliver(clock.advance(hours=1)).outcomes == {"parked": 1}
    row = outbox_rows(engine)[key]
    assert statuses(row) == {"owner@acme.example": "sent", "grey@acme.example": "parked"}
    assert row.last_error == "gave up after 2 attempts: grey@acme.example: 451 4.7.1 Greylisted"
    assert [m.rcpt_tos for m in smtp_server.received] == [("owner@acme.example",)]


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        (["owner@acme.example", "OWNER@ACME.EXAMPLE"], ("owner@acme.example",)),
        (
            ["Owner@Acme.example", " owner@acme.example ", "ops@acme.example"],
            ("Owner@Acme.example", "ops@acme.example"),
        ),
    ],
)
def test_the_same_address_in_other_capitals_gets_the_message_once(
    written: list[str],
    kept: tuple[str, ...],
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    [key] = add_messages(engine, clock(), written)
    assert tuple(outbox_rows(engine)[key].recipients) == kept
    assert smtp_pipeline.deliver(clock()).outcomes == {"sent": 1}
    mails = smtp_server.wait_for(len(kept))
    assert len(smtp_server.received) == len(kept)  # a copy for each address, once
    assert sorted(a.casefold() for m in mails for a in m.rcpt_tos) == sorted(k.casefold() for k in kept)
    assert all(len(m.rcpt_tos) == 1 and m.message["To"] == m.rcpt_tos[0] for m in mails)


def test_a_multi_line_refusal_is_kept_on_one_line(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse["gone@acme.example"] = (
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
        "550 5.1.1 Please try double-checking the recipient's email address."
    )
    [key] = add_messages(engine, clock(), ["gone@acme.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"parked": 1}
    row = outbox_rows(engine)[key]
    assert row.last_error == (
        "gone@acme.example: 550 5.1.1 The email account that you tried to reach does not exist. "
        "5.1.1 Please try double-checking the recipient's email address."
    )


def test_a_message_without_any_recipient_is_parked_not_taken_for_sent(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    [key] = add_messages(engine, clock(), ["  "])  # say an owner_email the platform left blank
    assert smtp_pipeline.deliver(clock()).outcomes == {"parked": 1}
    row = outbox_rows(engine)[key]
    assert (row.status, row.last_error) == ("parked", "no recipients: the message has no address to go to")
    assert smtp_server.received == []


def test_a_worker_that_lost_its_next_row_to_another_stops_before_sending_it(
    engine: Engine,
    clock: Clock,
    smtp_pipeline: Pipeline,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    first, second = add_messages(engine, clock(), ["a@acme.example"], ["b@acme.example"])
    smtp_server.hold()
    worker = threading.Thread(target=smtp_pipeline.deliver, args=(clock(), clock))
    worker.start()
    try:
        smtp_server.wait_holding(1)
        with engine.begin() as conn:  # another instance took the second row over meanwhile
            conn.execute(
                update(OUTBOX_TABLE)
                .where(OUTBOX_TABLE.c.idem_key == second)
                .values(claimed_by="other-instance")
            )
    finally:
        smtp_server.release()
        worker.join(timeout=20)
    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [("a@acme.example",)]
    rows = outbox_rows(engine)
    assert (rows[first].status, rows[second].claimed_by) == ("sent", "other-instance")
    assert len(smtp_server.received) == 1
