"""Each recipient gets a message of their own: its To names them alone, so a rule's
``notify: [owner, finance@…]`` shows neither the owner's address to finance nor finance's to
the owner. The copies share Subject, body, Date and the row's Message-ID (as Bcc copies
would), and each recipient's outcome is their own.

A real SMTP server on loopback (aiosmtpd) and real ``.eml`` files; time is the test's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from balancewatch.config import Settings
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.files import FileTransport
from balancewatch.deliver.mailindex import write_index
from balancewatch.deliver.message import build
from balancewatch.deliver.registry import make_transport
from balancewatch.deliver.smtp import SmtpTransport
from balancewatch.liveset import LiveSet
from balancewatch.outbox import Claimed
from balancewatch.runtime.service import Pipeline, build_pipeline
from tests.conftest import Clock
from tests.helpers import account, post
from tests.smtpserver import SmtpServer
from tests.test_delivery import add_messages, outbox_rows, read_eml

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

OWNER = "acme@owner.example"  # tests.helpers.account's owner of "acme"
FINANCE = "finance@platform.example"
OPS = "ops@platform.example"
EVERYONE = (OWNER, FINANCE, OPS)


def rules(notify: str) -> str:
    return f"""
alerts:
  - id: ladder
    accounts: {{currency: USD}}
    below: [250, 100, 10]
    template: low-balance
    notify: {notify}
"""


def low_balance(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    notify: str,
    **env: str,
) -> Pipeline:
    """A pipeline with the rule notifying ``notify``, and acme's USD balance at $90: one alert due."""
    pipeline = build_pipeline(engine, make_settings(db_url, **env), live_from(rules(notify)))
    account(engine, "acme")
    post(engine, "acme", "USD", 9_000, clock())
    assert pipeline.evaluate(clock()).decided == {"ladder": 1}
    return pipeline


def headers(data: bytes) -> str:
    """The header block of a message as it went out."""
    return data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8").lower()


def assert_private(
    data: bytes, envelope_addresses: Iterable[str], recipient: str, everyone: Iterable[str]
) -> None:
    """``data`` (and its SMTP envelope) name ``recipient`` and none of the others of ``everyone``."""
    block = headers(data)
    assert f"\nto: {recipient.lower()}\n" in f"\n{block}\n"
    for other in everyone:
        if other.lower() != recipient.lower():
            assert other.lower() not in block, f"{other} shows in {recipient}'s copy"
            assert other.lower() not in {a.lower() for a in envelope_addresses}


def test_an_alert_to_the_owner_and_two_rule_addresses_is_three_messages_each_naming_only_its_recipient(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    pipeline = low_balance(
        engine, db_url, clock, make_settings, live_from, f"[owner, {FINANCE}, {OPS}]", **smtp_server.env()
    )
    assert pipeline.deliver(clock()).outcomes == {"sent": 1}
    mails = smtp_server.wait_for(3)
    assert len(smtp_server.received) == 3
    assert [m.rcpt_tos for m in mails] == [(a,) for a in EVERYONE]
    for mail, recipient in zip(mails, EVERYONE, strict=True):
        assert_private(mail.data, (mail.mail_from, *mail.rcpt_tos), recipient, EVERYONE)
        assert mail.message["To"] == recipient
        assert mail.message["Cc"] is None and mail.message["Bcc"] is None
    assert len({m.peer for m in mails}) == 1  # one session carries them all
    for name in ("Subject", "Date", "Message-ID", "From"):
        assert len({str(m.message[name]) for m in mails}) == 1, name
    bodies = [m.message.get_body(("plain",)) for m in mails]
    assert len({b.get_content() for b in bodies if b is not None}) == 1 and None not in bodies
    [row] = outbox_rows(engine).values()
    assert row.status == "sent"
    assert {a: d["status"] for a, d in row.deliveries.items()} == dict.fromkeys(EVERYONE, "sent")


@SQLITE
def test_a_recipient_refused_for_good_is_parked_and_the_others_get_their_copy_once(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse[FINANCE] = "550 5.1.1 no such user"
    pipeline = low_balance(
        engine, db_url, clock, make_settings, live_from, f"[owner, {FINANCE}, {OPS}]", **smtp_server.env()
    )
    assert pipeline.deliver(clock()).outcomes == {"parked": 1}
    [row] = outbox_rows(engine).values()
    assert {a: d["status"] for a, d in row.deliveries.items()} == {
        OWNER: "sent",
        FINANCE: "parked",
        OPS: "sent",
    }
    assert row.last_error == f"{FINANCE}: 550 5.1.1 no such user"

    del smtp_server.refuse[FINANCE]  # a parked address is not tried again, nor are the others
    assert pipeline.deliver(clock.advance(hours=1)).claimed == 0
    assert [(m.rcpt_tos, m.message["To"]) for m in smtp_server.received] == [
        ((OWNER,), OWNER),
        ((OPS,), OPS),
    ]


@SQLITE
def test_a_recipient_refused_for_now_is_retried_later_alone(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    smtp_server.refuse[FINANCE] = "451 4.7.1 Greylisted, please try again later"
    pipeline = low_balance(
        engine, db_url, clock, make_settings, live_from, f"[owner, {FINANCE}, {OPS}]", **smtp_server.env()
    )
    assert pipeline.deliver(clock()).outcomes == {"retry": 1}
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [(OWNER,), (OPS,)]

    del smtp_server.refuse[FINANCE]
    assert pipeline.deliver(clock.advance(minutes=5)).outcomes == {"sent": 1}
    mails = smtp_server.wait_for(3)
    assert len(mails) == 3
    retried = mails[2]
    assert (retried.rcpt_tos, retried.message["To"]) == ((FINANCE,), FINANCE)
    assert_private(retried.data, retried.rcpt_tos, FINANCE, EVERYONE)
    assert retried.message["Message-ID"] == mails[0].message["Message-ID"]
    [row] = outbox_rows(engine).values()
    assert (row.status, row.attempts) == ("sent", 2)
    assert pipeline.deliver(clock.advance(days=1)).claimed == 0
    assert len(smtp_server.received) == 3


@SQLITE
def test_a_session_closing_after_one_copy_keeps_that_copy_sent_and_retries_only_the_rest(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    # The owner's copy is accepted; at finance's RCPT the server closes the session (421).
    smtp_server.refuse[FINANCE] = "421 4.3.2 shutting down"
    pipeline = low_balance(
        engine, db_url, clock, make_settings, live_from, f"[owner, {FINANCE}, {OPS}]", **smtp_server.env()
    )
    [other] = add_messages(engine, clock(), ["other@acme.example"])  # next in the same batch
    assert pipeline.deliver(clock()).outcomes == {"retry": 2}
    rows = outbox_rows(engine)
    alert = next(r for key, r in rows.items() if key != other)
    assert {a: d["status"] for a, d in alert.deliveries.items()} == {
        OWNER: "sent",
        FINANCE: "pending",
        OPS: "pending",
    }
    assert "421 4.3.2 shutting down" in alert.last_error
    assert rows[other].status == "pending"  # the session is gone: the batch's rest waits
    assert [m.rcpt_tos for m in smtp_server.received] == [(OWNER,)]

    del smtp_server.refuse[FINANCE]
    assert pipeline.deliver(clock.advance(hours=1)).outcomes == {"sent": 2}
    assert sorted(m.rcpt_tos for m in smtp_server.wait_for(4)) == sorted(
        [(OWNER,), (FINANCE,), (OPS,), ("other@acme.example",)]
    )  # the owner once: the copy accepted before the session closed is not sent again
    assert len(smtp_server.received) == 4


NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def claimed(recipients: tuple[str, ...], message_id: str = "<1@platform.example>") -> Claimed:
    """An outbox row as the courier claims it, to ``recipients``."""
    sender = "Alerts <alerts@platform.example>"
    return Claimed(1, "k", message_id, sender, recipients, "Low balance", "Text.\n", None, 0, NOW)


def test_a_connection_dropping_at_the_second_copy_reports_the_first_delivered_and_the_session_broken(
    make_settings: Callable[..., Settings], smtp_server: SmtpServer
) -> None:
    transport = make_transport(make_settings(None, **smtp_server.env()))
    assert isinstance(transport, SmtpTransport)
    envelope = build(claimed((OWNER, FINANCE)), NOW)
    result: list[dict[str, TransportError]] = []
    smtp_server.hold()
    with transport:
        sending = threading.Thread(target=lambda: result.append(transport.send(envelope)))
        sending.start()
        try:
            smtp_server.wait_holding(1)
            smtp_server.release(1)  # the owner's copy is accepted
            smtp_server.wait_holding(2)
            transport.abort()  # the connection drops while finance's copy waits in DATA
        finally:
            smtp_server.release()
            sending.join(timeout=20)
        [refused] = result  # returned, not raised: the owner's copy went
        assert list(refused) == [FINANCE]
        assert refused[FINANCE].connection and not refused[FINANCE].permanent
        with pytest.raises(TransportError) as broken:  # the next message fails the batch's rest
            transport.send(build(claimed((OPS,), "<2@platform.example>"), NOW))
        assert broken.value.connection
    assert smtp_server.received[0].rcpt_tos == (OWNER,)


def test_a_connection_failing_at_the_first_copy_fails_the_whole_message(
    make_settings: Callable[..., Settings], smtp_server: SmtpServer
) -> None:
    smtp_server.refuse[OWNER] = "421 4.3.2 shutting down"
    transport = make_transport(make_settings(None, **smtp_server.env()))
    with transport, pytest.raises(TransportError) as failed:
        transport.send(build(claimed((OWNER, FINANCE)), NOW))
    assert failed.value.connection and "421 4.3.2 shutting down" in str(failed.value)
    assert smtp_server.received == []


def test_the_envelope_carries_no_to_and_makes_a_copy_only_for_its_recipients() -> None:
    envelope = build(claimed((OWNER, FINANCE)), NOW)
    assert envelope.message["To"] is None
    mine = envelope.for_recipient(FINANCE)
    assert mine["To"] == FINANCE and envelope.message["To"] is None  # a copy: the shared one is unchanged
    assert [name for name, _ in mine.items()][:4] == ["From", "To", "Subject", "Date"]
    assert OWNER not in envelope.as_bytes(FINANCE).decode()
    with pytest.raises(ValueError, match="not a recipient"):
        envelope.for_recipient(OPS)


def test_addresses_equal_but_for_capitals_in_one_row_get_one_copy() -> None:
    # outbox.add keeps one of them; a row written before it did may hold both.
    envelope = build(claimed(("Ops@Platform.example", OPS, OWNER)), NOW)
    assert envelope.recipients == ("Ops@platform.example", OWNER)
    assert envelope.due == {
        "Ops@Platform.example": "Ops@platform.example",
        OPS: "Ops@platform.example",
        OWNER: OWNER,
    }


@SQLITE
def test_the_file_transport_writes_a_file_per_recipient_naming_only_them(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
) -> None:
    pipeline = low_balance(engine, db_url, clock, make_settings, live_from, f"[owner, {FINANCE}, {OPS}]")
    assert pipeline.deliver(clock()).outcomes == {"sent": 1}
    mail_dir = pipeline.settings.mail_dir
    paths = sorted(mail_dir.glob("*.eml"))
    assert len(paths) == 3
    copies = {str(read_eml(p)["To"]): p for p in paths}
    assert sorted(copies) == sorted(EVERYONE)
    for recipient, path in copies.items():
        assert_private(path.read_bytes(), (), recipient, EVERYONE)
    assert len({read_eml(p)["Message-ID"] for p in paths}) == 1

    # Written again (at-least-once after a crash), the same files are rewritten, none added.
    [row] = outbox_rows(engine).values()
    again = claimed(EVERYONE, row.message_id)
    with FileTransport(mail_dir) as transport:
        assert transport.send(build(again, clock())) == {}
    assert sorted(mail_dir.glob("*.eml")) == paths

    index = write_index(mail_dir).read_text()
    assert [_to_cell(line) for line in index.splitlines() if line.startswith("<tr><td>")] == sorted(EVERYONE)


def _to_cell(line: str) -> str:
    """The To cell of one line of the mail index."""
    return line.split("</td><td>", 2)[1]


@SQLITE
def test_an_address_listed_twice_in_other_capitals_gets_one_message(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    pipeline = low_balance(
        engine,
        db_url,
        clock,
        make_settings,
        live_from,
        "[owner, Ops@Example.com, ops@example.com]",
        **smtp_server.env(),
    )
    assert pipeline.deliver(clock()).outcomes == {"sent": 1}
    mails = smtp_server.wait_for(2)
    assert len(smtp_server.received) == 2
    assert [m.rcpt_tos for m in mails] == [(OWNER,), ("Ops@example.com",)]
    assert [m.message["To"] for m in mails] == [OWNER, "Ops@example.com"]
    assert_private(mails[0].data, mails[0].rcpt_tos, OWNER, (OWNER, "ops@example.com"))
    assert_private(mails[1].data, mails[1].rcpt_tos, "ops@example.com", (OWNER, "ops@example.com"))
