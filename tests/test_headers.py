"""Nothing a user controls (account names, owner emails) can add a mail header or a recipient."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from sqlmodel import Session

from balancewatch.config import Settings
from balancewatch.liveset import LiveSet
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from balancewatch.store.tables import Account
from tests.conftest import Clock
from tests.smtpserver import SmtpServer
from tests.test_delivery import outbox_rows

RULES = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    template: low-balance
"""


def low_balance_pipeline(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> Pipeline:
    return build_pipeline(engine, make_settings(db_url, **smtp_server.env()), live_from(RULES))


def fund(engine: Engine, clock: Clock, account_id: str, major: int) -> None:
    with Session(engine) as s:
        ledger.post(s, account_id, "USD", major * 100, "top-up", occurred_at=clock(), now=clock())
        s.commit()


def test_a_line_break_in_an_account_name_stays_inside_the_subject(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    with Session(engine) as s:
        add_account(s, "acme", "Acme\r\nBcc: evil@x.example", "owner@acme.example")
        s.commit()
    fund(engine, clock, "acme", 90)
    pipeline = low_balance_pipeline(engine, db_url, make_settings, live_from, smtp_server)
    assert pipeline.evaluate(clock()).decided == {"ladder": 1}
    assert pipeline.deliver(clock()).outcomes == {"sent": 1}

    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)
    msg = mail.message
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Acme Bcc: evil@x.example: USD balance $90.00 is below $100.00"
    assert msg["To"] == "owner@acme.example"
    header_lines = mail.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert not [line for line in header_lines if line.lower().startswith(b"bcc")]


def test_an_owner_email_carrying_a_line_break_is_parked_as_an_invalid_address(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    # The platform's app writes accounts directly, past the CLI's validation.
    with Session(engine) as s:
        s.add(Account(id="evil", name="Evil Ltd", owner_email="owner@evil.example\r\nBcc: victim@x.example"))
        add_account(s, "acme", "Acme Ltd", "owner@acme.example")
        s.commit()
    fund(engine, clock, "evil", 90)
    fund(engine, clock, "acme", 90)
    pipeline = low_balance_pipeline(engine, db_url, make_settings, live_from, smtp_server)
    assert pipeline.evaluate(clock()).decided == {"ladder": 2}
    assert pipeline.deliver(clock()).outcomes == {"parked": 1, "sent": 1}

    parked = [r for r in outbox_rows(engine).values() if r.account_id == "evil"]
    assert [r.status for r in parked] == ["parked"]
    assert parked[0].last_error == (
        "'owner@evil.example\\r\\nBcc: victim@x.example': invalid address: line breaks in an address"
    )
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)
    assert mail.message["Bcc"] is None
    assert b"victim@x.example" not in mail.data


def test_an_owner_email_with_a_trailing_line_break_reaches_only_the_owner(
    engine: Engine,
    db_url: str,
    clock: Clock,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    smtp_server: SmtpServer,
) -> None:
    with Session(engine) as s:
        s.add(Account(id="acme", name="Acme Ltd", owner_email="owner@acme.example\r\n"))
        s.commit()
    fund(engine, clock, "acme", 90)
    pipeline = low_balance_pipeline(engine, db_url, make_settings, live_from, smtp_server)
    pipeline.evaluate(clock())
    assert pipeline.deliver(clock()).outcomes == {"sent": 1}
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)
    assert mail.message["To"] == "owner@acme.example"
