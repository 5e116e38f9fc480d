"""The webhook transport against a real HTTP endpoint on loopback: what it sends, and what each
answer (or no answer) means for the event.

No mock of the HTTP client: ``tests/webhook_receiver.py`` records the requests and answers as
each test scripts it; signatures are checked with the standardwebhooks library itself.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from balancewatch import __version__
from balancewatch.config.channels import WebhookChannel
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.webhook import (
    WebhookEnvelope,
    WebhookTransport,
    build_webhook,
    retry_after,
)
from balancewatch.outbox import Claimed, channel_key, event_id
from tests.test_tls import make_certificate, server_context
from tests.webhook_receiver import Reply, WebhookReceiver

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
CHANNEL = "platform"
TOKEN = "q7Zt0ken9x"  # in the URL's query: must never show
HEADER_SECRET = "Bearer hdr-s3cret-V4lue"
PAYLOAD = {"type": "balance.below", "data": {"account": "acct-1", "balance": "4.20", "note": "é ✓"}}


def make_row(idem_key: str = "alert:acct-1:low:1", text: str | None = None) -> Claimed:
    return Claimed(
        id=1,
        idem_key=channel_key(idem_key, CHANNEL),
        message_id="<m@balancewatch.invalid>",
        sender="",
        recipients=(CHANNEL,),
        subject="balance.below",
        text=json.dumps(PAYLOAD, ensure_ascii=False) if text is None else text,
        html=None,
        attempts=0,
        created_at=datetime.now(UTC),
        channel=CHANNEL,
    )


def channel(url: str, timeout: float = 5.0, **extra: object) -> WebhookChannel:
    return WebhookChannel.model_validate(
        {
            "type": "webhook",
            "url": url,
            "timeout": timedelta(seconds=timeout),
            "headers": {"Authorization": SecretStr(HEADER_SECRET), "X-Tenant": SecretStr("north")},
            **extra,
        }
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as r:
        yield r


def hook_url(receiver: WebhookReceiver) -> str:
    return f"{receiver.url}/hooks/balance?token={TOKEN}"


def deliver(url: str, row: Claimed | None = None, timeout: float = 5.0) -> dict[str, TransportError]:
    with WebhookTransport(CHANNEL, channel(url, timeout), SECRET) as transport:
        return transport.send(build_webhook(row or make_row(), datetime.now(UTC)))


def only_error(refused: dict[str, TransportError]) -> TransportError:
    assert list(refused) == [CHANNEL]
    return refused[CHANNEL]


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text and "token=" not in text
    assert HEADER_SECRET not in text and "hdr-s3cret" not in text


def test_the_envelope_is_the_rows_text_and_its_decisions_id() -> None:
    row = make_row()
    envelope = build_webhook(row, datetime.now(UTC))
    assert envelope == WebhookEnvelope(
        row.text.encode("utf-8"), event_id(row.idem_key), (CHANNEL,), {CHANNEL: CHANNEL}
    )
    # The email row of the same decision (its key without "#channel") names the same event.
    assert envelope.webhook_id == event_id("alert:acct-1:low:1")
    assert envelope.rejected == {}


def test_a_delivered_row_has_no_recipient_due() -> None:
    sent = dataclasses.replace(make_row(), deliveries={CHANNEL: {"status": "sent"}})
    assert build_webhook(sent, datetime.now(UTC)).recipients == ()


def test_a_post_carries_the_payload_signed_with_the_standard_headers(receiver: WebhookReceiver) -> None:
    row = make_row()
    assert deliver(hook_url(receiver), row) == {}
    [got] = receiver.wait_for(1)
    assert got.method == "POST"
    assert got.path == f"/hooks/balance?token={TOKEN}"
    assert got.body == row.text.encode("utf-8")
    assert json.loads(got.body) == PAYLOAD
    assert got.verified is True
    assert got.headers["webhook-id"] == event_id(row.idem_key)
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == f"balancewatch/{__version__}"
    assert got.headers["authorization"] == HEADER_SECRET
    assert got.headers["x-tenant"] == "north"


def test_the_signature_covers_the_clocks_time(receiver: WebhookReceiver) -> None:
    sent_at = datetime.now(UTC).replace(microsecond=999_999) - timedelta(seconds=30)
    with WebhookTransport(CHANNEL, channel(hook_url(receiver)), SECRET, clock=lambda: sent_at) as transport:
        assert transport.send(build_webhook(make_row(), sent_at)) == {}
    [got] = receiver.wait_for(1)
    assert got.headers["webhook-timestamp"] == str(int(sent_at.timestamp()))
    assert got.verified is True


def test_a_wrong_secret_does_not_verify() -> None:
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with WebhookReceiver(secret=other) as receiver:
        assert deliver(hook_url(receiver)) == {}
        assert receiver.wait_for(1)[0].verified is False


def test_every_delivery_of_a_row_has_the_same_id_and_several_go_over_one_connection(
    receiver: WebhookReceiver,
) -> None:
    row, other = make_row(), make_row("alert:acct-2:low:1")
    with WebhookTransport(CHANNEL, channel(hook_url(receiver)), SECRET) as transport:
        for r in (row, row, other):
            assert transport.send(build_webhook(r, datetime.now(UTC))) == {}
    got = receiver.wait_for(3)
    assert [g.headers["webhook-id"] for g in got] == [event_id(row.idem_key)] * 2 + [event_id(other.idem_key)]
    assert receiver.ids == {event_id(row.idem_key), event_id(other.idem_key)}
    assert all(g.verified for g in got)
    assert len({g.peer for g in got}) == 1  # kept alive: one connection for the batch
    # A later batch (a retry after a crash) sends the same id again.
    assert deliver(hook_url(receiver), row) == {}
    assert receiver.wait_for(4)[3].headers["webhook-id"] == event_id(row.idem_key)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_delivered(receiver: WebhookReceiver, status: int) -> None:
    receiver.script(Reply(status, body=b"" if status == 204 else b"ok"))
    assert deliver(hook_url(receiver)) == {}


def test_a_503_with_retry_after_in_seconds_is_tried_again_not_sooner(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(503, {"Retry-After": "120"}, b"maintenance until noon"))
    error = only_error(deliver(hook_url(receiver)))
    assert not error.permanent and not error.connection
    assert error.retry_after == timedelta(seconds=120)
    assert str(error) == "HTTP 503 Service Unavailable: maintenance until noon"


def test_retry_after_as_an_http_date_counts_from_the_clock(receiver: WebhookReceiver) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    receiver.script(Reply(503, {"Retry-After": format_datetime(now + timedelta(minutes=5), usegmt=True)}))
    with WebhookTransport(CHANNEL, channel(hook_url(receiver)), SECRET, clock=lambda: now) as transport:
        error = only_error(transport.send(build_webhook(make_row(), now)))
    assert error.retry_after == timedelta(minutes=5)
    assert str(error) == "HTTP 503 Service Unavailable"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", timedelta(0)),
        (" 30 ", timedelta(seconds=30)),
        ("-5", timedelta(0)),
        ("Wed, 01 Jan 2025 12:00:30 GMT", timedelta(seconds=30)),
        ("Wed, 01 Jan 2025 11:00:00 GMT", timedelta(0)),  # in the past
        ("Wednesday, 01-Jan-25 12:01:00 GMT", timedelta(minutes=1)),  # RFC 850, obsolete but read
        ("Wed Jan  1 12:02:00 2025", timedelta(minutes=2)),  # asctime
        ("soon", None),
        ("", None),
        (None, None),
        ("99999999999999999999", timedelta(days=365)),
    ],
)
def test_retry_after_forms(value: str | None, expected: timedelta | None) -> None:
    assert retry_after(value, datetime(2025, 1, 1, 12, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize(("status", "phrase"), [(429, "Too Many Requests"), (408, "Request Timeout")])
def test_429_and_408_are_tried_again(receiver: WebhookReceiver, status: int, phrase: str) -> None:
    receiver.script(Reply(status, {"Retry-After": "7"} if status == 429 else {}))
    error = only_error(deliver(hook_url(receiver)))
    assert not error.permanent and not error.connection
    assert error.retry_after == (timedelta(seconds=7) if status == 429 else None)
    assert str(error) == f"HTTP {status} {phrase}"


def test_a_5xx_without_retry_after_leaves_the_wait_to_the_backoff(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(500, body=b"boom"))
    error = only_error(deliver(hook_url(receiver)))
    assert (error.permanent, error.retry_after, str(error)) == (
        False,
        None,
        "HTTP 500 Internal Server Error: boom",
    )


@pytest.mark.parametrize(("status", "phrase"), [(400, "Bad Request"), (404, "Not Found"), (410, "Gone")])
def test_other_4xx_are_refused_for_good_with_the_start_of_the_body_on_one_line(
    receiver: WebhookReceiver, status: int, phrase: str
) -> None:
    body = b"  no such\r\nendpoint\t\x1b[31m here " + b"x" * 400
    receiver.script(Reply(status, {"Retry-After": "60"}, body))
    error = only_error(deliver(hook_url(receiver)))
    assert error.permanent and not error.connection and error.retry_after is None
    text = str(error)
    assert text.startswith(f"HTTP {status} {phrase}: no such endpoint [31m here xxx")
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    quoted = text.split(": ", 1)[1]
    assert len(quoted) <= 200


def test_a_redirect_is_not_followed_and_refused(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(302, {"Location": f"{receiver.url}/elsewhere"}, b"moved"))
    error = only_error(deliver(hook_url(receiver)))
    assert error.permanent and str(error) == "HTTP 302 Found: moved"
    assert len(receiver.wait_for(1)) == 1  # nothing went to /elsewhere


def test_a_status_of_no_standard_meaning_is_refused_for_good(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(499, body=b"closed"))
    error = only_error(deliver(hook_url(receiver)))
    assert error.permanent and str(error) == "HTTP 499 (unknown status): closed"


def test_a_body_with_invalid_utf8_is_quoted_with_replacements(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(422, body=b"bad \xff\xfe input"))
    assert (
        str(only_error(deliver(hook_url(receiver))))
        == "HTTP 422 Unprocessable Entity: bad \ufffd\ufffd input"
    )


def test_a_huge_answer_is_read_only_so_far(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(400, body=b"y" * (4 * 1024 * 1024)))
    started = time.monotonic()
    error = only_error(deliver(hook_url(receiver)))
    assert str(error) == "HTTP 400 Bad Request: " + "y" * 200
    assert time.monotonic() - started < 5


def test_an_answer_quoting_the_query_or_a_header_shows_neither(receiver: WebhookReceiver) -> None:
    echoed = f"denied {hook_url(receiver)} with {HEADER_SECRET} token {TOKEN}".encode()
    receiver.script(Reply(403, body=echoed))
    error = only_error(deliver(hook_url(receiver)))
    assert_no_secret(str(error))
    assert f"{receiver.url}/hooks/balance" in str(error)


def test_nothing_listening_is_a_connection_failure() -> None:
    with socket.socket() as bound:  # bound, not listening: the port refuses connections
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/hook?token={TOKEN}"
        with pytest.raises(TransportError) as caught:
            deliver(url)
    assert caught.value.connection and not caught.value.permanent
    assert str(caught.value) == f"POST {url.split('?')[0]}: connection refused"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_server_slower_than_the_timeout_is_a_connection_failure_after_the_timeout(
    receiver: WebhookReceiver,
) -> None:
    receiver.script(Reply(200, delay=30))
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        deliver(hook_url(receiver), timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert caught.value.connection
    assert str(caught.value) == f"POST {receiver.url}/hooks/balance: no answer within 0.3s"


def test_abort_breaks_off_a_post_in_progress(receiver: WebhookReceiver) -> None:
    receiver.script(Reply(200, delay=30))
    outcome: list[BaseException | dict[str, TransportError]] = []
    transport = WebhookTransport(CHANNEL, channel(hook_url(receiver), timeout=20), SECRET)

    def send() -> None:
        try:
            outcome.append(transport.send(build_webhook(make_row(), datetime.now(UTC))))
        except TransportError as exc:
            outcome.append(exc)

    with transport:
        sender = threading.Thread(target=send)
        sender.start()
        receiver.wait_for(1)  # the request is in; its answer is held back
        started = time.monotonic()
        transport.abort()
        sender.join(timeout=10)
    assert time.monotonic() - started < 3
    [error] = outcome
    assert isinstance(error, TransportError) and error.connection
    assert str(error) == f"POST {receiver.url}/hooks/balance: broken off"


def test_abort_without_a_session_does_nothing() -> None:
    WebhookTransport(CHANNEL, channel("https://hooks.example/x"), SECRET).abort()


def test_send_outside_a_session_is_a_connection_failure() -> None:
    transport = WebhookTransport(CHANNEL, channel("https://hooks.example/x"), SECRET)
    with pytest.raises(TransportError) as caught:
        transport.send(build_webhook(make_row(), datetime.now(UTC)))
    assert caught.value.connection


@pytest.fixture(scope="module")
def loopback_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("webhook-tls"), "DNS:localhost,IP:127.0.0.1")


def test_https_with_the_ca_file_is_delivered(loopback_cert: tuple[Path, Path]) -> None:
    with WebhookReceiver(secret=SECRET, tls=server_context(loopback_cert)) as receiver:
        settings = channel(hook_url(receiver), ca_file=loopback_cert[0])
        with WebhookTransport(CHANNEL, settings, SECRET) as transport:
            assert transport.send(build_webhook(make_row(), datetime.now(UTC))) == {}
        assert receiver.wait_for(1)[0].verified is True


def test_an_unreadable_ca_file_fails_the_session(tmp_path: Path) -> None:
    transport = WebhookTransport(
        CHANNEL, channel("https://hooks.example/x", ca_file=tmp_path / "no.pem"), SECRET
    )
    with pytest.raises(TransportError) as caught, transport:
        pass
    assert caught.value.connection and "no.pem" in str(caught.value)


def test_an_untrusted_certificate_is_a_connection_failure(loopback_cert: tuple[Path, Path]) -> None:
    with WebhookReceiver(secret=SECRET, tls=server_context(loopback_cert)) as receiver:
        with pytest.raises(TransportError) as caught:
            deliver(hook_url(receiver))
        assert caught.value.connection
        assert "certificate verify failed" in str(caught.value)
        assert_no_secret(str(caught.value))
        assert receiver.requests == []


def test_the_query_and_header_values_show_in_no_error_and_no_log(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script(Reply(404, body=b"gone"), Reply(503), Reply(200, delay=30))
    errors = [str(only_error(deliver(hook_url(receiver)))) for _ in range(2)]
    with pytest.raises(TransportError) as caught:
        deliver(hook_url(receiver), timeout=0.2)
    errors.append(str(caught.value))
    for text in [*errors, *(r.getMessage() for r in caplog.records)]:
        assert_no_secret(text)
    assert any("HTTP Request: POST" in r.getMessage() for r in caplog.records)  # httpx's own line
