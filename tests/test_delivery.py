"""Delivery from the outbox: claim, send, record, retry, park; on each backend.

The SMTP server is real (aiosmtpd on loopback) and the files are real files;
time is the test's clock, so backoff and leases are checked without sleeping.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.deliver.files import FileTransport
from balancewatch.deliver.message import build
from balancewatch.deliver.registry import make_transport
from balancewatch.deliver.smtp import SmtpTransport
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline, describe_transport
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import Clock
from tests.smtpserver import SmtpServer

SENDER = "Balance alerts <alerts@platform.example>"
DOMAIN = "platform.example"
LEASE = timedelta(minutes=5)
NO_RULES = "alerts: []\n"


def add_messages(
    engine: Engine, now: datetime, *recipients: Sequence[str], prefix: str = "alert/test"
) -> list[str]:
    """Record one outbox row per recipient list, as a decision would; return their keys."""
    messages = [
        outbox.NewMessage(
            idem_key=f"{prefix}/{i}",
            kind="alert",
            sender=SENDER,
            recipients=tuple(to),
            subject=f"Message {i}: USD balance $90.00 is below $100.00",
            text=f"Your USD balance has fallen to $90.00 (message {i}).\n",
            html=f"<p>Your USD balance has fallen to <b>$90.00</b> (message {i}).</p>",
        )
        for i, to in enumerate(recipients, start=1)
    ]
    with engine.begin() as conn:
        outbox.add(conn, messages, now, DOMAIN)
    return [m.idem_key for m in messages]


def outbox_rows(engine: Engine) -> dict[str, Any]:
    """Every outbox row by idempotency key."""
    with engine.connect() as conn:
        return {r.idem_key: r for r in conn.execute(select(OUTBOX_TABLE).order_by(OUTBOX_TABLE.c.id))}


@pytest.fixture
def smtp_pipeline(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> Pipeline:
    settings = make_settings(db_url, **smtp_server.env(), smtp__timeout="5s")
    return build_pipeline(engine, settings, live_from(NO_RULES))


def test_a_notification_is_recorded_once_under_its_idempotency_key(engine: Engine, clock: Clock) -> None:
    add_messages(engine, clock(), ["owner@acme.example"])
    with pytest.raises(IntegrityError):
        add_messages(engine, clock.advance(minutes=1), ["owner@acme.example"])
    assert len(outbox_rows(engine)) == 1


def test_the_message_id_is_derived_from_the_idempotency_key(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    key = "alert/default-ladder/acme/USD/10000/1/0"
    assert outbox.message_id(key, DOMAIN) == outbox.message_id(key, DOMAIN)
    assert outbox.message_id(key, DOMAIN) != outbox.message_id(key.replace("/1/0", "/2/0"), DOMAIN)
    assert outbox.message_id(key, DOMAIN).endswith(f"@{DOMAIN}>")

    [key] = add_messages(engine, clock(), ["owner@acme.example"], prefix=key)
    smtp_pipeline.deliver(clock())
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Message-ID"] == outbox.message_id(key, DOMAIN)


def test_one_smtp_connection_carries_a_whole_batch(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    keys = add_messages(engine, clock(), ["a@acme.example"], ["b@acme.example"], ["c@acme.example"])
    stats = smtp_pipeline.deliver(clock())
    assert stats.outcomes == {"sent": 3}
    mails = smtp_server.wait_for(3)
    assert len(mails) == 3
    assert len({m.peer for m in mails}) == 1
    assert sorted(m.rcpt_tos for m in mails) == [
        ("a@acme.example",),
        ("b@acme.example",),
        ("c@acme.example",),
    ]
    rows = outbox_rows(engine)
    assert [(rows[k].status, rows[k].attempts, rows[k].sent_at) for k in keys] == [("sent", 1, clock())] * 3


def test_nothing_is_lost_while_the_smtp_server_is_down(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    keys = add_messages(engine, clock(), ["a@acme.example"], ["b@acme.example"])
    smtp_server.stop()
    assert smtp_pipeline.deliver(clock()).outcomes == {"retry": 2}
    rows = outbox_rows(engine)
    for key in keys:
        assert rows[key].status == "pending"
        assert rows[key].attempts == 1
        assert clock() < rows[key].next_attempt_at <= clock() + timedelta(seconds=30)
        assert f"connect to 127.0.0.1:{smtp_server.port}" in rows[key].last_error

    smtp_server.start()
    assert smtp_pipeline.deliver(clock()).claimed == 0  # not due before its backoff
    assert smtp_pipeline.deliver(clock.advance(seconds=30)).outcomes == {"sent": 2}
    assert len(smtp_server.wait_for(2)) == 2
    assert smtp_pipeline.deliver(clock.advance(days=1)).claimed == 0
    assert len(smtp_server.received) == 2
    assert {outbox_rows(engine)[k].status for k in keys} == {"sent"}


def test_a_550_for_a_recipient_parks_that_message_with_the_reason_and_delivers_the_others(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse["gone@acme.example"] = "550 5.1.1 no such user"
    gone, kept = add_messages(engine, clock(), ["gone@acme.example"], ["owner@acme.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"parked": 1, "sent": 1}
    rows = outbox_rows(engine)
    assert rows[gone].status == "parked"
    assert "gone@acme.example: 550 5.1.1 no such user" in rows[gone].last_error
    assert rows[kept].status == "sent"
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)

    del smtp_server.refuse["gone@acme.example"]
    assert smtp_pipeline.deliver(clock.advance(days=3)).claimed == 0  # parked is never retried
    assert outbox_rows(engine)[gone].status == "parked"


def test_a_recipient_refused_for_good_among_several_is_parked_alone_and_the_others_get_the_message(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse["gone@acme.example"] = "550 5.1.1 no such user"
    [key] = add_messages(engine, clock(), ["owner@acme.example", "gone@acme.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"parked": 1}
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)
    row = outbox_rows(engine)[key]
    assert row.status == "parked"  # done, and something needs a look: it shows as parked
    assert row.last_error == "gone@acme.example: 550 5.1.1 no such user"
    assert {a: e["status"] for a, e in row.deliveries.items()} == {
        "owner@acme.example": "sent",
        "gone@acme.example": "parked",
    }
    assert row.sent_at == clock()

    del smtp_server.refuse["gone@acme.example"]
    assert smtp_pipeline.deliver(clock.advance(days=3)).claimed == 0  # parked is never retried
    assert len(smtp_server.received) == 1


def test_a_4xx_reply_is_retried_with_backoff_and_then_delivered(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse["owner@acme.example"] = "451 4.3.0 mailbox busy, try later"
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"retry": 1}
    row = outbox_rows(engine)[key]
    assert (row.status, row.attempts) == ("pending", 1)
    assert clock() < row.next_attempt_at <= clock() + timedelta(seconds=30)
    assert "451 4.3.0 mailbox busy" in row.last_error

    assert smtp_pipeline.deliver(clock.advance(seconds=30)).outcomes == {"retry": 1}
    row = outbox_rows(engine)[key]
    assert row.attempts == 2
    assert row.next_attempt_at - clock() > timedelta(seconds=50)  # the second wait is about twice the first

    del smtp_server.refuse["owner@acme.example"]
    assert smtp_pipeline.deliver(clock.advance(minutes=1)).outcomes == {"sent": 1}
    assert len(smtp_server.wait_for(1)) == 1
    assert (outbox_rows(engine)[key].status, outbox_rows(engine)[key].attempts) == ("sent", 3)


@pytest.mark.parametrize("failure", ["4xx reply", "server down"])
def test_a_message_still_failing_after_give_up_after_is_parked_with_its_last_error(
    failure: str,
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    settings = make_settings(db_url, **smtp_server.env(), delivery__retry__give_up_after="1h")
    pipeline = build_pipeline(engine, settings, live_from(NO_RULES))
    if failure == "server down":
        smtp_server.stop()
        expected = f"connect to 127.0.0.1:{smtp_server.port}"
    else:
        smtp_server.refuse["owner@acme.example"] = "452 4.2.2 mailbox full"
        expected = "452 4.2.2 mailbox full"
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    assert pipeline.deliver(clock()).outcomes == {"retry": 1}
    assert pipeline.deliver(clock.advance(minutes=59)).outcomes == {"retry": 1}
    assert pipeline.deliver(clock.advance(minutes=1)).outcomes == {"parked": 1}
    row = outbox_rows(engine)[key]
    assert row.status == "parked"
    assert row.last_error.startswith("gave up after 3 attempts: ")
    assert expected in row.last_error
    assert pipeline.deliver(clock.advance(days=1)).claimed == 0
    assert smtp_server.received == []


def test_a_row_whose_lease_expired_is_claimed_again_by_another_worker(engine: Engine, clock: Clock) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    with engine.begin() as conn:
        [first] = outbox.claim(conn, "worker-a", clock(), 10, LEASE)
    with engine.begin() as conn:
        assert outbox.claim(conn, "worker-b", clock.advance(minutes=4), 10, LEASE) == []
    with engine.begin() as conn:
        [again] = outbox.claim(conn, "worker-b", clock.advance(minutes=2), 10, LEASE)
    assert (again.id, again.attempts) == (first.id, 2)
    delivered = outbox.RowUpdate(outbox.SENT, {"owner@acme.example": {"status": "sent"}}, sent_at=clock())
    with engine.begin() as conn:
        assert outbox.record(conn, first.id, "worker-a", delivered) is False  # the dead worker lost it
        assert outbox.record(conn, again.id, "worker-b", delivered) is True
    row = outbox_rows(engine)[key]
    assert (row.status, row.claimed_by) == ("sent", "worker-b")


def test_workers_claiming_at_the_same_time_never_get_the_same_row(engine: Engine, clock: Clock) -> None:
    add_messages(engine, clock(), *([f"owner{i}@acme.example"] for i in range(30)))
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(3)

    def work(name: str) -> None:
        start.wait()
        got: list[int] = []
        while True:
            with engine.begin() as conn:
                batch = outbox.claim(conn, name, clock(), 2, LEASE)
            if not batch:
                break
            got.extend(row.id for row in batch)
        claimed[name] = got

    workers = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    every = [row_id for got in claimed.values() for row_id in got]
    assert len(claimed) == 3
    assert len(every) == 30
    assert len(set(every)) == 30


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_on_postgres_a_second_worker_skips_locked_rows_instead_of_waiting(
    engine: Engine, clock: Clock
) -> None:
    add_messages(engine, clock(), *([f"owner{i}@acme.example"] for i in range(6)))
    with engine.connect() as first:
        tx = first.begin()
        mine = outbox.claim(first, "worker-a", clock(), 3, LEASE)  # locked, not yet committed
        with engine.begin() as second:
            second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            theirs = outbox.claim(second, "worker-b", clock(), 3, LEASE)
        tx.commit()
    assert len(mine) == len(theirs) == 3
    assert not {r.id for r in mine} & {r.id for r in theirs}


def test_backoff_grows_exponentially_and_is_capped() -> None:
    initial, ceiling = timedelta(seconds=30), timedelta(hours=1)
    delays = [outbox.backoff(n, initial, ceiling, row_id=7) for n in range(1, 12)]
    assert timedelta(seconds=27) <= delays[0] <= initial
    for shorter, longer in itertools.pairwise(delays[:7]):
        assert 1.7 < longer / shorter < 2.3
    assert all(d <= ceiling for d in delays)
    assert delays[-1] >= ceiling * 0.9
    assert outbox.backoff(3, initial, ceiling, row_id=7) == delays[2]  # reproducible


def test_backoff_stays_capped_however_many_attempts_were_made() -> None:
    for attempts in (40, 64, 1_000, 10**6):
        assert timedelta(minutes=54) <= outbox.backoff(attempts, timedelta(seconds=30), timedelta(hours=1))
        assert outbox.backoff(attempts, timedelta(seconds=30), timedelta(hours=1)) <= timedelta(hours=1)


def test_rows_failing_together_do_not_all_retry_in_the_same_second() -> None:
    delays = {outbox.backoff(2, timedelta(minutes=1), timedelta(hours=1), row_id=i) for i in range(20)}
    assert len(delays) > 10


def test_files_is_the_transport_when_no_smtp_host_is_configured(
    db_url: str, make_settings: Callable[..., Settings], smtp_server: SmtpServer
) -> None:
    files = make_settings(db_url)
    assert isinstance(make_transport(files), FileTransport)
    assert describe_transport(files) == f"files in {files.mail_dir} (no SMTP host configured)"
    smtp = make_settings(db_url, **smtp_server.env())
    assert isinstance(make_transport(smtp), SmtpTransport)
    assert describe_transport(smtp) == f"SMTP 127.0.0.1:{smtp_server.port} (none)"


@pytest.fixture
def files_pipeline(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet]
) -> Pipeline:
    return build_pipeline(engine, make_settings(db_url), live_from(NO_RULES))


def read_eml(path: Path) -> email.message.EmailMessage:
    with path.open("rb") as handle:
        return email.message_from_binary_file(handle, policy=email.policy.default)  # type: ignore[return-value]


def test_the_file_transport_writes_eml_files_a_mail_client_can_read(
    engine: Engine, clock: Clock, files_pipeline: Pipeline
) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example", "billing@acme.example"])
    assert files_pipeline.deliver(clock()).outcomes == {"sent": 1}
    paths = sorted(files_pipeline.settings.mail_dir.iterdir())
    assert [p.suffix for p in paths] == [".eml", ".eml"]  # a copy for each recipient
    copies = {str(msg["To"]): msg for msg in map(read_eml, paths)}
    assert sorted(copies) == ["billing@acme.example", "owner@acme.example"]
    for msg in copies.values():
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert plain is not None and html is not None
        assert plain.get_content() == "Your USD balance has fallen to $90.00 (message 1).\n"
        assert "<b>$90.00</b>" in html.get_content()
        assert msg["Subject"] == "Message 1: USD balance $90.00 is below $100.00"
        assert msg["From"] == SENDER
        assert msg["Message-ID"] == outbox.message_id(key, DOMAIN)
        assert msg["Auto-Submitted"] == "auto-generated"
    assert outbox_rows(engine)[key].status == "sent"


def test_a_message_delivered_twice_to_files_leaves_one_file(
    engine: Engine, clock: Clock, files_pipeline: Pipeline
) -> None:
    [key] = add_messages(engine, clock(), ["owner@acme.example"])
    mail_dir = files_pipeline.settings.mail_dir
    with engine.begin() as conn:
        [row] = outbox.claim(conn, "dead-worker", clock(), 10, LEASE)
    with FileTransport(mail_dir) as transport:
        transport.send(build(row, clock()))  # written; the worker dies before recording it
    [first] = mail_dir.iterdir()

    assert files_pipeline.deliver(clock.advance(minutes=6)).outcomes == {"sent": 1}
    assert list(mail_dir.iterdir()) == [first]
    assert read_eml(first)["Message-ID"] == outbox.message_id(key, DOMAIN)
    assert outbox_rows(engine)[key].attempts == 2


def test_an_internationalized_domain_is_sent_in_its_ascii_form(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    add_messages(engine, clock(), ["owner@bücher.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"sent": 1}
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@xn--bcher-kva.example",)
    assert mail.message["To"] == "owner@xn--bcher-kva.example"


def test_a_non_ascii_mailbox_goes_out_over_smtputf8(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    add_messages(engine, clock(), ["jörg@acme.example"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"sent": 1}
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("jörg@acme.example",)
    assert mail.message["To"] == "jörg@acme.example"


def test_a_non_ascii_mailbox_is_parked_when_the_server_lacks_smtputf8_and_the_batch_goes_on(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
) -> None:
    server = SmtpServer(smtputf8=False)
    server.start()
    try:
        pipeline = build_pipeline(engine, make_settings(db_url, **server.env()), live_from(NO_RULES))
        jorg, owner = add_messages(engine, clock(), ["jörg@acme.example"], ["owner@acme.example"])
        assert pipeline.deliver(clock()).outcomes == {"parked": 1, "sent": 1}
        rows = outbox_rows(engine)
        assert rows[jorg].status == "parked"
        assert "does not offer SMTPUTF8" in rows[jorg].last_error
        assert rows[owner].status == "sent"
        [mail] = server.wait_for(1)
        assert mail.rcpt_tos == ("owner@acme.example",)
    finally:
        server.stop()


def test_an_invalid_address_is_parked_as_such_and_a_valid_one_beside_it_still_gets_the_message(
    engine: Engine, clock: Clock, smtp_pipeline: Pipeline, smtp_server: SmtpServer
) -> None:
    bad, mixed = add_messages(engine, clock(), ["not an address"], ["owner@acme.example", "nobody@"])
    assert smtp_pipeline.deliver(clock()).outcomes == {"parked": 2}
    rows = outbox_rows(engine)
    assert rows[bad].status == "parked"
    assert rows[bad].last_error.startswith("not an address: invalid address: ")
    assert rows[mixed].status == "parked"
    assert rows[mixed].last_error.startswith("nobody@: invalid address: ")
    assert rows[mixed].deliveries["owner@acme.example"]["status"] == "sent"
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)


def test_delivery_asked_to_stop_finishes_the_message_in_flight_and_hands_back_the_rest(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    settings = make_settings(db_url, **smtp_server.env(), delivery__batch_size="2")
    pipeline = build_pipeline(engine, settings, live_from(NO_RULES))
    keys = add_messages(engine, clock(), *([f"owner{i}@acme.example"] for i in range(5)))
    smtp_server.hold()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(pipeline.deliver(clock())))
    worker.start()
    smtp_server.wait_holding()
    pipeline.stopping.set()
    smtp_server.release()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert results[0].outcomes == {"sent": 1, "released": 1}
    rows = outbox_rows(engine)
    assert [rows[k].status for k in keys] == ["sent", "pending", "pending", "pending", "pending"]
    assert [rows[k].attempts for k in keys[1:]] == [0, 0, 0, 0]
    assert [rows[k].claimed_by for k in keys[1:]] == [None] * 4
    assert len(smtp_server.wait_for(1)) == 1


@pytest.mark.parametrize("batch_size", ["1", "2"], ids=["next batch", "same batch"])
def test_a_slow_server_never_lets_another_worker_claim_a_row_still_being_delivered(
    batch_size: str,
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    settings = make_settings(
        db_url, **smtp_server.env(), delivery__batch_size=batch_size, delivery__lease="5m"
    )
    pipeline = build_pipeline(engine, settings, live_from(NO_RULES))
    add_messages(engine, clock(), ["first@acme.example"], ["second@acme.example"])
    smtp_server.hold()
    worker = threading.Thread(target=pipeline.deliver, args=(clock(), clock))
    worker.start()
    try:
        smtp_server.wait_holding(1)
        clock.advance(minutes=6)  # the first message took longer than the lease
        smtp_server.release(1)
        smtp_server.wait_holding(2)  # the second one is in flight now
        with engine.begin() as conn:
            stolen = outbox.claim(conn, "other-instance", clock(), 10, LEASE)
    finally:
        smtp_server.release()
        worker.join(timeout=20)
    assert stolen == []
    assert len(smtp_server.wait_for(2)) == 2
    assert {r.status for r in outbox_rows(engine).values()} == {"sent"}


def test_an_attachment_travels_with_its_message_as_a_named_file(
    engine: Engine, clock: Clock, files_pipeline: Pipeline
) -> None:
    csv_text = "date,amount\n2026-03-01,12.50\n"
    message = outbox.NewMessage(
        idem_key="report/test/1",
        kind="report",
        sender=SENDER,
        recipients=("owner@acme.example",),
        subject="March usage",
        text="Your report.\n",
        html="<p>Your report.</p>",
        attachments=(outbox.Attachment("usage-2026-03.csv", "text/csv", csv_text),),
    )
    with engine.begin() as conn:
        outbox.add(conn, [message], clock(), DOMAIN)
    assert files_pipeline.deliver(clock()).outcomes == {"sent": 1}
    [path] = files_pipeline.settings.mail_dir.iterdir()
    msg = read_eml(path)
    assert msg.get_content_type() == "multipart/mixed"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "usage-2026-03.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_content().replace("\r\n", "\n") == csv_text  # text/csv reads back as text
    assert msg.get_body(("plain",)).get_content() == "Your report.\n"
