"""The chat transport end to end: Apprise's generic ``json://`` and ``form://`` services
posting to a real HTTP endpoint on loopback (``tests/webhook_receiver.py``).

What Apprise 2.3 posts: ``json://`` a JSON object ``{"version": "1.0", "title", "message",
"attachments": [], "type": "info"}``; ``form://`` the same fields (without attachments) as
``application/x-www-form-urlencoded``. A user and password in the URL become HTTP basic auth;
a query argument Apprise does not know (``?token=``) is dropped, not sent.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs

import pytest

from balancewatch.config.channels import ChatChannel
from balancewatch.deliver.chat import ChatEnvelope, ChatTransport, build_chat, masked, secret_parts
from balancewatch.deliver.errors import TransportError
from balancewatch.outbox import Claimed
from tests.webhook_receiver import Reply, WebhookReceiver

# Apprise imports imghdr when it loads its plugins, at the first Apprise object.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

CHANNEL = "ops-chat"
PASSWORD, TOKEN, SEGMENT = "s3cr3tpass", "abcdef", "Xy9SecretSegment"
SETTINGS = ChatChannel(type="chat")
TITLE = "Balance low: acct-1 (EUR 4.20)"
BODY = "The prepaid balance of acct-1 is EUR 4.20,\nbelow the EUR 10.00 you asked to hear about. ✓"


def make_row() -> Claimed:
    return Claimed(
        id=7,
        idem_key=f"alert:acct-1:low:1#{CHANNEL}",
        message_id="<m@balancewatch.invalid>",
        sender="",
        recipients=(CHANNEL,),
        subject=TITLE,
        text=BODY,
        html=None,
        attempts=0,
        created_at=datetime.now(UTC),
        channel=CHANNEL,
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def secret_url(receiver: WebhookReceiver, scheme: str = "json") -> str:
    return f"{scheme}://user:{PASSWORD}@127.0.0.1:{receiver.port}/hook/{SEGMENT}?token={TOKEN}"


def send(url: str) -> dict[str, TransportError]:
    with ChatTransport(CHANNEL, SETTINGS, url) as transport:
        return transport.send(build_chat(make_row(), datetime.now(UTC)))


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, TOKEN, SEGMENT):
        assert secret not in text


def test_the_envelope_is_the_rows_subject_and_text() -> None:
    assert build_chat(make_row(), datetime.now(UTC)) == ChatEnvelope(
        TITLE, BODY, (CHANNEL,), {CHANNEL: CHANNEL}
    )
    sent = dataclasses.replace(make_row(), deliveries={CHANNEL: {"status": "parked"}})
    assert build_chat(sent, datetime.now(UTC)).recipients == ()


def test_json_posts_title_and_body_as_a_json_object(receiver: WebhookReceiver) -> None:
    assert send(f"json://127.0.0.1:{receiver.port}/path") == {}
    [got] = receiver.wait_for(1)
    assert (got.method, got.path) == ("POST", "/path")
    assert got.headers["content-type"] == "application/json"
    assert json.loads(got.body) == {
        "version": "1.0",
        "title": TITLE,
        "message": BODY,
        "attachments": [],
        "type": "info",
    }


def test_form_posts_title_and_body_as_form_fields(receiver: WebhookReceiver) -> None:
    assert send(f"form://127.0.0.1:{receiver.port}/path") == {}
    [got] = receiver.wait_for(1)
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(got.text, keep_blank_values=True)
    assert fields == {"version": ["1.0"], "title": [TITLE], "message": [BODY], "type": ["info"]}


def test_a_user_and_password_become_basic_auth_and_an_unknown_query_is_not_sent(
    receiver: WebhookReceiver,
) -> None:
    assert send(secret_url(receiver)) == {}
    [got] = receiver.wait_for(1)
    assert got.path == f"/hook/{SEGMENT}"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()


def test_one_transport_sends_several_messages(receiver: WebhookReceiver) -> None:
    with ChatTransport(CHANNEL, SETTINGS, f"json://127.0.0.1:{receiver.port}/path") as transport:
        for _ in range(3):
            assert transport.send(build_chat(make_row(), datetime.now(UTC))) == {}
    assert len(receiver.wait_for(3)) == 3


def test_a_500_is_a_temporary_failure_with_apprises_reason_and_no_secret(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script(Reply(500, body=f"upstream said {TOKEN} {PASSWORD} {SEGMENT}".encode()))
    refused = send(secret_url(receiver))
    assert list(refused) == [CHANNEL]
    error = refused[CHANNEL]
    assert not error.permanent and not error.connection and error.retry_after is None
    assert str(error) == "chat: Failed to send JSON POST notification: Internal server error., error=500."
    assert_no_secret(str(error))
    for record in caplog.records:
        assert_no_secret(record.getMessage())
    assert not [r for r in caplog.records if r.name.startswith(("apprise", "urllib3"))]


def test_nothing_listening_is_a_temporary_failure_naming_only_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as bound:  # bound, not listening: the port refuses connections
        bound.bind(("127.0.0.1", 0))
        url = f"json://user:{PASSWORD}@127.0.0.1:{bound.getsockname()[1]}/hook/{SEGMENT}?token={TOKEN}"
        [error] = send(url).values()
    assert not error.permanent
    assert str(error) == "chat: A Connection error occurred sending JSON notification to 127.0.0.1."
    for text in (str(error), *(r.getMessage() for r in caplog.records)):
        assert_no_secret(text)


def test_a_url_apprise_does_not_know_is_refused_for_good_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransportError) as caught:
        ChatTransport(CHANNEL, SETTINGS, f"bogus://user:{PASSWORD}@host/{SEGMENT}?token={TOKEN}")
    assert caught.value.permanent
    assert str(caught.value).startswith("the chat URL is not one Apprise knows: bogus://... (")
    for text in (str(caught.value), *(r.getMessage() for r in caplog.records)):
        assert_no_secret(text)
        assert "s...s" not in text  # Apprise's own half-masked copy of the password


def test_a_url_without_a_scheme_is_refused_without_showing_it() -> None:
    with pytest.raises(TransportError, match=r"Apprise knows: \(no scheme://\)\.\.\.") as caught:
        ChatTransport(CHANNEL, SETTINGS, f"{SEGMENT}/{TOKEN}")
    assert_no_secret(str(caught.value))


def test_apprise_logs_outside_a_send_still_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    ChatTransport(CHANNEL, SETTINGS, "json://127.0.0.1:9/path")
    logging.getLogger("apprise").error("a word from Apprise elsewhere")
    assert "a word from Apprise elsewhere" in caplog.text


def test_secret_parts_of_service_urls() -> None:
    parts = secret_parts(f"json://user:{PASSWORD}@hooks.example.com:8443/a/{SEGMENT}?token={TOKEN}&x=1#frag")
    assert {PASSWORD, SEGMENT, TOKEN, "user"} <= set(parts)
    assert "hooks.example.com" not in parts and "x" not in parts and "1" not in parts
    # Where the host is a token (Slack, Discord, Telegram), it is a secret too.
    assert {"T1234ABCD", "B5678EFGH", "xoxbsecret99"} <= set(
        secret_parts("slack://T1234ABCD/B5678EFGH/xoxbsecret99")
    )
    assert {"123456:AAbbCCdd", "AAbbCCdd"} <= set(secret_parts("tgram://123456:AAbbCCdd/987654"))
    # Percent-encoded parts are masked as Apprise would print them, decoded.
    assert "p@ss word" in secret_parts("json://u:p%40ss%20word@127.0.0.1/x")


def test_masked_hides_every_part_on_one_line() -> None:
    url = f"json://user:{PASSWORD}@127.0.0.1/hook/{SEGMENT}?token={TOKEN}"
    text = masked(f"failed {url}\n at {SEGMENT} with {TOKEN}", secret_parts(url))
    assert text == "failed *** at *** with ***"
