"""One decision, every destination, on each backend: an alert emailed to the owner, posted to a
chat channel through Apprise and sent to a webhook signed by the Standard Webhooks spec; each
its own outbox row, retried, parked and requeued on its own.

Real parts: the SMTP server and the HTTP receivers listen on loopback; Apprise posts with its
generic ``json://`` form; the receiver verifies every signature with ``standardwebhooks``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import Engine, select

from balancewatch import outbox
from balancewatch.cli import main
from balancewatch.config import Settings, load_settings
from balancewatch.core import shipped
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.pipeline import Pipeline, build_pipeline
from balancewatch.store.db import make_engine
from balancewatch.store.tables import OUTBOX_TABLE
from tests.conftest import T0
from tests.helpers import account, set_balance
from tests.smtpserver import SmtpServer
from tests.webhook_receiver import Reply, WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "webhook-payload.schema.json").read_text())
RULE = """\
alerts:
  - id: low
    accounts: {currency: USD}
    below: [100, 10]
    exhausted: true
    notify: [owner, channel:finance, channel:ops-chat, channel:platform]
"""


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as receiver:
        yield receiver


@pytest.fixture
def chat() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


Setup = Callable[..., tuple[Settings, Pipeline]]


@pytest.fixture
def setup(
    tmp_path: Path, db_url: str, smtp_server: SmtpServer, hook: WebhookReceiver, chat: WebhookReceiver
) -> Setup:
    """Settings with the channels pointed at the receivers, the rules ``rules``, and a pipeline."""

    def make(rules: str = RULE, chat_rate: int = 0, **extra: str) -> tuple[Settings, Pipeline]:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir(exist_ok=True)
        (rules_dir / "rules.yaml").write_text(rules)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"rules_dir: {rules_dir}\nstate_dir: {tmp_path / 'state'}\n"
            "delivery: {from: alerts@platform.example, retry: {initial: 30s, max: 10m}}\n"
            "channels:\n"
            "  finance: {type: email, to: [Finance@Example.com, acme@owner.example]}\n"
            f"  ops-chat: {{type: chat, url: 'json://127.0.0.1:{chat.port}/room', rate: {chat_rate}}}\n"
            f"  platform: {{type: webhook, url: '{hook.url}/hooks', secret_env: HOOK_SECRET, timeout: 2s}}\n"
        )
        environ = {
            "HOOK_SECRET": SECRET,
            "BALANCEWATCH_DATABASE__URL": db_url,
            **{f"BALANCEWATCH_{k.upper()}": v for k, v in smtp_server.env().items()},
            **extra,
        }
        settings = load_settings(config, environ)
        live = load_set(settings.rules_dir, shipped.templates_dir(), channels=tuple(settings.channels))
        return settings, build_pipeline(make_engine(db_url), settings, live)

    return make


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(select(OUTBOX_TABLE).order_by(OUTBOX_TABLE.c.id)).all()
    return {row.channel: row for row in found}


def test_one_alert_goes_to_the_owner_the_chat_and_the_webhook_each_once(
    setup: Setup, engine: Engine, smtp_server: SmtpServer, hook: WebhookReceiver, chat: WebhookReceiver
) -> None:
    _settings, pipeline = setup()
    account(engine, "acme")
    set_balance(engine, "acme", "USD", 5_00, T0)

    pipeline.evaluate(T0)
    by_channel = rows(engine)
    assert set(by_channel) == {"email", "ops-chat", "platform"}
    # The finance channel's addresses join the email; the owner's, listed twice, goes once.
    assert by_channel["email"].recipients == ["acme@owner.example", "Finance@Example.com"]
    assert pipeline.deliver(T0).outcomes["sent"] == 3

    (posted,) = hook.wait_for(1)
    assert posted.verified is True
    event = json.loads(posted.body)
    jsonschema.validate(event, SCHEMA)
    assert posted.headers["webhook-id"] == event["id"] == outbox.event_id(by_channel["email"].idem_key)
    assert event["type"] == "balance.below"
    assert event["data"]["balance"] == {"minor": 500, "decimal": "5.00"}
    assert event["data"]["step"]["decimal"] == "10.00"
    (message,) = chat.wait_for(1)
    said = json.loads(message.body)
    assert said["title"] == by_channel["email"].subject
    assert "acme" in said["message"].lower()
    received = smtp_server.wait_for(2)
    assert sorted(r.rcpt_tos[0].lower() for r in received) == ["acme@owner.example", "finance@example.com"]


def test_a_webhook_answering_503_is_retried_after_its_retry_after_and_email_goes_on(
    setup: Setup, engine: Engine, smtp_server: SmtpServer, hook: WebhookReceiver
) -> None:
    _settings, pipeline = setup()
    account(engine, "acme")
    set_balance(engine, "acme", "USD", 5_00, T0)
    hook.respond = lambda _request: Reply(503, {"Retry-After": "600"}, b"maintenance")
    pipeline.evaluate(T0)

    stats = pipeline.deliver(T0)
    assert (stats.outcomes["sent"], stats.outcomes["retry"]) == (2, 1)
    assert len(smtp_server.wait_for(2)) == 2
    webhook = rows(engine)["platform"]
    assert (webhook.status, webhook.next_attempt_at) == ("pending", T0 + timedelta(seconds=600))
    assert "HTTP 503" in webhook.last_error

    hook.respond = lambda _request: Reply(204)
    assert pipeline.deliver(T0 + timedelta(seconds=599)).claimed == 0  # its Retry-After holds
    assert pipeline.deliver(T0 + timedelta(seconds=600), lane="platform").outcomes["sent"] == 1
    assert len(hook.ids) == 1 and len(hook.requests) == 2  # the same event id both times


def test_a_webhook_refusing_for_good_is_parked_with_its_answer_and_can_be_retried(
    setup: Setup, engine: Engine, hook: WebhookReceiver, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, pipeline = setup()
    account(engine, "acme")
    set_balance(engine, "acme", "USD", 5_00, T0)
    hook.script(Reply(410, body=b"endpoint\r\nremoved"))
    pipeline.evaluate(T0)
    pipeline.deliver(T0)

    webhook = rows(engine)["platform"]
    assert webhook.status == "parked"
    assert webhook.last_error == "platform: HTTP 410 Gone: endpoint removed"
    environ = {"BALANCEWATCH_CONFIG": str(settings.source), "HOOK_SECRET": SECRET}
    environ["BALANCEWATCH_DATABASE__URL"] = db_url
    assert main(["outbox", "list", "--status", "parked", "--channel", "platform"], environ) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{webhook.id} ")
    assert main(["outbox", "retry", webhook.idem_key], environ) == 0
    # `outbox retry` makes it due at once by the wall clock.
    assert pipeline.deliver(datetime.now(UTC), lane="platform").outcomes["sent"] == 1
    assert rows(engine)["platform"].status == "sent"


def test_a_rule_notifying_only_a_chat_channel_writes_no_email(
    setup: Setup, engine: Engine, chat: WebhookReceiver, smtp_server: SmtpServer
) -> None:
    _settings, pipeline = setup(
        RULE.replace("[owner, channel:finance, channel:ops-chat, channel:platform]", "channel:ops-chat")
    )
    account(engine, "acme")
    set_balance(engine, "acme", "USD", 5_00, T0)
    pipeline.evaluate(T0)
    assert set(rows(engine)) == {"ops-chat"}
    assert pipeline.deliver(T0).outcomes["sent"] == 1
    assert len(chat.wait_for(1)) == 1
    assert smtp_server.received == []


@pytest.mark.parametrize("channel", ["platform", "ops-chat", "finance"])
def test_send_test_reaches_each_kind_of_channel(
    setup: Setup,
    channel: str,
    hook: WebhookReceiver,
    chat: WebhookReceiver,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, _pipeline = setup()
    environ = {"BALANCEWATCH_CONFIG": str(settings.source), "HOOK_SECRET": SECRET}
    environ["BALANCEWATCH_DATABASE__URL"] = settings.database.url
    environ.update({f"BALANCEWATCH_{k.upper()}": v for k, v in smtp_server.env().items()})
    assert main(["send-test", "--channel", channel], environ) == 0
    assert capsys.readouterr().out.startswith("sent to ")
    if channel == "platform":
        (posted,) = hook.wait_for(1)
        assert posted.verified and json.loads(posted.body)["type"] == "test"
        jsonschema.validate(json.loads(posted.body), SCHEMA)
    elif channel == "ops-chat":
        assert len(chat.wait_for(1)) == 1
    else:
        assert len(smtp_server.wait_for(2)) == 2


def test_send_test_to_a_channel_the_config_lacks_says_which_exist(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _pipeline = setup()
    environ = {"BALANCEWATCH_CONFIG": str(settings.source), "HOOK_SECRET": SECRET}
    assert main(["send-test", "--channel", "nowhere"], environ) == 1
    assert capsys.readouterr().err.strip() == (
        "balancewatch send-test: no channel 'nowhere' in the config (channels: finance, ops-chat, platform)"
    )


def test_a_failed_top_up_and_a_report_reach_the_webhook_as_their_events(
    setup: Setup, engine: Engine, hook: WebhookReceiver, db_url: str
) -> None:
    rules = (
        "alerts:\n  - id: auto-recharge\n    accounts: {currency: USD}\n    below: [50]\n"
        "    topup: {amount: 200}\n    notify: [owner, channel:platform]\n"
        "reports:\n  - id: monthly\n    schedule: monthly\n    contents: usage\n    empty: send\n"
        "    notify: channel:platform\n"
    )
    # The top-up hook is the same receiver: it answers 202 (accepted, waiting for the credit).
    hook.respond = lambda request: (
        Reply(202, body=b'{"status": "requested"}') if request.path == "/topups" else Reply(200)
    )
    settings, pipeline = setup(rules, BALANCEWATCH_TOPUP__HOOK__URL=f"{hook.url}/topups")
    account(engine, "acme")
    set_balance(engine, "acme", "USD", 40_00, T0)
    pipeline.evaluate(T0)
    pipeline.topups(T0)
    environ = {"BALANCEWATCH_CONFIG": str(settings.source), "HOOK_SECRET": SECRET}
    environ |= {"BALANCEWATCH_DATABASE__URL": db_url, "BALANCEWATCH_TOPUP__HOOK__URL": f"{hook.url}/topups"}
    assert main(["topup", "fail", "1", "--reason", "Card expired"], environ) == 0
    assert main(["report", "run", "monthly", "--account", "acme"], environ) == 0
    pipeline.deliver(datetime.now(UTC))

    events = {}
    for request in hook.wait_for(3):
        if request.path == "/hooks":
            assert request.verified
            event = json.loads(request.body)
            jsonschema.validate(event, SCHEMA)
            events[event["type"]] = event["data"]
    assert set(events) == {"topup.failed", "report.ready"}
    assert events["topup.failed"]["requested"] == {"minor": 20000, "decimal": "200.00"}
    assert events["topup.failed"]["reason"] == "Card expired"
    assert events["report.ready"]["report"] == "monthly"
    assert events["report.ready"]["account"]["id"] == "acme"


def test_a_drop_to_zero_and_the_credit_after_it_are_exhausted_and_restored_events(
    setup: Setup, engine: Engine, hook: WebhookReceiver
) -> None:
    rules = (
        "alerts:\n  - id: out\n    accounts: {currency: USD}\n    exhausted: true\n    restored: true\n"
        "    notify: channel:platform\n"
    )
    _settings, pipeline = setup(rules)
    account(engine, "acme")
    set_balance(engine, "acme", "USD", 0, T0)
    pipeline.evaluate(T0)
    set_balance(engine, "acme", "USD", 50_00, T0 + timedelta(minutes=1))
    pipeline.evaluate(T0 + timedelta(hours=1))
    pipeline.deliver(T0 + timedelta(hours=1))
    events = [json.loads(r.body) for r in hook.wait_for(2)]
    for event in events:
        jsonschema.validate(event, SCHEMA)
    assert [e["type"] for e in events] == ["balance.exhausted", "balance.restored"]
    assert events[0]["data"]["step"] == {"minor": 0, "decimal": "0.00", "exhausted": True, "follows": "fixed"}


def test_a_chat_channel_is_sent_no_faster_than_its_rate(
    setup: Setup, engine: Engine, chat: WebhookReceiver
) -> None:
    rules = RULE.replace("[owner, channel:finance, channel:ops-chat, channel:platform]", "channel:ops-chat")
    _settings, pipeline = setup(rules, chat_rate=10)
    for number in range(6):
        account(engine, f"acct-{number}")
        set_balance(engine, f"acct-{number}", "USD", 5_00, T0)
    pipeline.evaluate(T0)
    started = time.monotonic()
    assert pipeline.deliver(T0, lane="ops-chat").outcomes["sent"] == 6
    # 10 a second, evenly spaced: six messages span at least five intervals of 0.1 s.
    assert time.monotonic() - started >= 0.5
    assert len(chat.wait_for(6)) == 6
