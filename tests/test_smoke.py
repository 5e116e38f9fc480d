"""The spine, end to end on each backend: a debit crosses a step, one email arrives."""

from __future__ import annotations

from sqlmodel import Session

from balancewatch.runtime.service import build_pipeline
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from tests.conftest import Clock

RULES = """
alerts:
  - id: ladder
    accounts: {currency: USD}
    below: [250, 100, 10]
    template: low-balance
"""


def test_a_debit_across_a_step_sends_one_email(
    engine, make_settings, live_from, db_url, smtp_server, clock: Clock
):
    settings = make_settings(db_url, **smtp_server.env())
    with Session(engine) as s:
        add_account(s, "acme", "Acme Ltd", "owner@acme.example")
        ledger.post(s, "acme", "USD", 30_000, "top-up", occurred_at=clock(), now=clock())
        s.commit()
    pipeline = build_pipeline(engine, settings, live_from(RULES))
    pipeline.evaluate(clock())
    with Session(engine) as s:
        ledger.post(s, "acme", "USD", -21_000, "usage", occurred_at=clock(), now=clock.advance(minutes=1))
        s.commit()
    stats = pipeline.evaluate(clock.advance(minutes=1))
    assert stats.decided == {"ladder": 1}
    pipeline.deliver(clock())
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@acme.example",)
    assert mail.message["Subject"] == "Acme Ltd: USD balance $90.00 is below $100.00"
