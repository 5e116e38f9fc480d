"""A failing channel holds up no other: `balancewatch run` as a real process, with a webhook channel
whose endpoint holds every answer 2 s and then refuses it (503, ``Retry-After: 1``), delivers every
email at once; the webhook events follow once the endpoint answers 200.

Each channel is delivered by a scheduler job of its own (``deliver`` for email, ``deliver:NAME``
for a channel), so 20 events at 2 s each (40 s in a row) cannot hold the emails back: neither
those decided at start nor those decided while the webhook lane is busy. Every wait is on a
condition with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from balancewatch.outbox import event_id
from balancewatch.store import ledger
from tests.conftest import write_rules
from tests.smtpserver import SmtpServer
from tests.test_daemon import Cli, add_funded_account, cli, wait_until  # noqa: F401
from tests.test_delivery import outbox_rows
from tests.webhook_receiver import Received, Reply, WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ACCOUNTS = 20
HOLD = 2.0  # seconds the endpoint holds each answer: 40 s for the 20 events one after the other
EMAIL_BOUND = 10.0  # seconds from the daemon being ready until every email has arrived
RULES = """\
alerts:
  - id: low
    accounts: {currency: USD}
    below: [100]
    template: low-balance
    notify: [owner, channel:platform]
"""


def refuse(_request: Received) -> Reply:
    """What the endpoint answers while it is down: 503 after holding the answer ``HOLD`` seconds."""
    return Reply(503, {"Retry-After": "1"}, b"down for maintenance", delay=HOLD)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """The webhook endpoint, down (``refuse``) until the test says otherwise; it checks signatures."""
    with WebhookReceiver(secret=SECRET, respond=refuse) as receiver:
        yield receiver


def configure(tmp_path: Path, rules_dir: Path, hook: WebhookReceiver) -> dict[str, str]:
    """The rule notifying the owner and the webhook, and a config naming the channel; the variables
    that point the daemon at it."""
    write_rules(rules_dir, RULES)
    config = tmp_path / "config.yaml"
    config.write_text(
        "delivery: {interval: 1s, retry: {initial: 1s}}\n"
        "channels:\n"
        f"  platform: {{type: webhook, url: '{hook.url}/hooks', secret_env: HOOK_SECRET, timeout: 5s}}\n"
    )
    return {"BALANCEWATCH_CONFIG": str(config), "HOOK_SECRET": SECRET}


def lower(engine: Engine, accounts: range) -> None:
    """The balances of ``accounts`` fall to $90, below the rule's step, in one write."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        for i in accounts:
            ledger.set_balance(session, f"acct{i:02d}", "USD", 9_000, now)
        session.commit()


def webhook_rows(engine: Engine) -> list[Any]:
    """The webhook channel's outbox rows, in id order."""
    return [row for row in outbox_rows(engine).values() if row.channel == "platform"]


def refused_pending(engine: Engine) -> bool:
    """Whether a webhook row waits, pending, with the endpoint's 503 as its last error."""
    return any(r.status == "pending" and "HTTP 503" in (r.last_error or "") for r in webhook_rows(engine))


def test_a_webhook_answering_503_slowly_does_not_delay_email_and_its_events_follow_once_it_recovers(
    cli: Cli,  # noqa: F811
    smtp_server: SmtpServer,
    hook: WebhookReceiver,
    engine: Engine,
    tmp_path: Path,
    rules_dir: Path,
) -> None:
    environ = configure(tmp_path, rules_dir, hook)
    for i in range(ACCOUNTS):
        add_funded_account(engine, f"acct{i:02d}", f"Account {i}", f"acct{i:02d}@owner.example", 200)
    half = ACCOUNTS // 2
    lower(engine, range(half))

    cli.start(environ)
    ready = time.monotonic()
    # The second half is decided while the webhook lane is busy with the first (10 x 2 s): its
    # emails must not wait for it either.
    hook.wait_for(1, timeout=EMAIL_BOUND)
    lower(engine, range(half, ACCOUNTS))
    mails = smtp_server.wait_for(ACCOUNTS, timeout=EMAIL_BOUND)
    assert time.monotonic() - ready < EMAIL_BOUND
    assert sorted(to for mail in mails for to in mail.rcpt_tos) == [
        f"acct{i:02d}@owner.example" for i in range(ACCOUNTS)
    ]
    # Meanwhile the webhook lane is still working through its 503s, 2 s each.
    wait_until(lambda: refused_pending(engine), "a webhook row pending with its 503")
    rows = webhook_rows(engine)
    assert len(rows) == ACCOUNTS
    assert not [r for r in rows if r.status == "sent"]
    tried = [r for r in rows if r.last_error is not None]
    assert tried and all("HTTP 503" in r.last_error for r in tried), [r.last_error for r in tried]
    assert len(hook.requests) < ACCOUNTS  # not even one pass over the events yet

    hook.respond = lambda _request: Reply(200)
    expected = {event_id(r.idem_key) for r in rows}
    wait_until(lambda: hook.ids >= expected, "every webhook event", timeout=40.0)
    wait_until(
        lambda: {r.status for r in webhook_rows(engine)} == {"sent"}, "every webhook row sent", timeout=20.0
    )
    assert hook.ids == expected
    assert all(r.verified for r in hook.requests)
