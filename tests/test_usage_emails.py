"""What the shipped emails say about usage, through the real pipeline on SQLite and PostgreSQL:
the arithmetic of the average, the days left, the recommended threshold, and why there is none.

Every account here used $42.00 a day for the last 30 days ($1,260.00) unless a test says
otherwise, so one day of usage is $42.00 and three days $126.00. Amounts are in cents.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from balancewatch.alerts.context import SAMPLE_VARIANTS, sample_alert_context, sample_contexts
from balancewatch.config import Settings
from balancewatch.core import shipped
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import load_templates
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store.tables import OwnerPreference
from tests.conftest import Clock
from tests.helpers import OUTBOX, Sent, account, outbox, post, set_balance

DAY = timedelta(days=1)
PREFS = OwnerPreference.__table__  # type: ignore[attr-defined]
MakePipeline = Callable[[str], Pipeline]
ALERT_TEMPLATES = ("low-balance", "runway", "recommended-threshold", "balance-restored")


@pytest.fixture
def make_pipeline(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], live_from: Callable[[str], LiveSet]
) -> MakePipeline:
    """A pipeline over the test database running ``rules``; usage refreshed at every evaluation."""

    def make(rules: str) -> Pipeline:
        return build_pipeline(engine, make_settings(db_url, usage__refresh="1ms"), live_from(rules))

    return make


def rule(below: str, template: str = "low-balance") -> str:
    return (
        f"alerts:\n  - id: r\n    accounts: {{currency: USD}}\n    below: {below}\n    template: {template}\n"
    )


def busy(engine: Engine, clock: Clock, account_id: str = "acme", per_day: int = 4_200) -> None:
    """An account opened 40 days ago that used ``per_day`` every day of the last 30."""
    account(engine, account_id, name="Acme Ltd")
    post(engine, account_id, "USD", 1_000_000, clock() - 40 * DAY)
    for n in range(30):
        post(engine, account_id, "USD", -per_day, clock() - n * DAY - timedelta(hours=1))


def email_at(engine: Engine, pipeline: Pipeline, clock: Clock, balance: int) -> Sent:
    """The one email deciding after the balance is set to ``balance`` sends."""
    set_balance(engine, "acme", "USD", balance, clock())
    pipeline.evaluate(clock())
    [sent] = outbox(engine)
    return sent


def html_of(sent: Sent, engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(select(OUTBOX.c.html).where(OUTBOX.c.idem_key == sent.idem_key)).scalar_one()


# --- the low-balance email ---------------------------------------------------------------------------


def test_a_fixed_threshold_email_shows_the_average_its_arithmetic_and_the_days_left(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("[100]"))
    busy(engine, clock)

    sent = email_at(engine, pipeline, clock, 8_412)

    assert sent.subject == "Acme Ltd: USD balance $84.12 is below $100.00"
    assert "Your USD balance has fallen to $84.12, below the alert threshold of $100.00." in sent.text
    assert (
        "You used $1,260.00 over the last 30 days, an average of $42.00 a day; "
        "at that rate $84.12 lasts about 2 days."
    ) in sent.text
    assert (
        "We recommend an alert at $42.00 for this balance: one day of your average usage ($42.00 a day)."
    ) in sent.text
    html = html_of(sent, engine)
    for figure in ("$1,260.00", "$42.00", "about 2 days", "$1,260.00 ÷ 30 days"):
        assert figure in html


def test_a_step_at_one_day_of_usage_is_told_as_one_day_of_usage_not_as_a_bare_amount(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("[average-daily-usage]"))
    busy(engine, clock)

    sent = email_at(engine, pipeline, clock, 4_000)

    assert sent.subject == "Acme Ltd: USD balance $40.00 is below one day of usage ($42.00)"
    assert "fallen to $40.00, below one day of your average usage ($42.00)." in sent.text
    assert "at that rate $40.00 lasts less than a day." in sent.text
    assert "We recommend" not in sent.text  # the alert is the recommendation
    assert "one day of your average usage ($42.00)" in html_of(sent, engine)


def test_a_runway_step_says_about_how_many_days_are_left(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("{runway: 3d}"))
    busy(engine, clock)

    sent = email_at(engine, pipeline, clock, 11_950)

    assert sent.subject == "Acme Ltd: about 2.8 days of USD credit left ($119.50)"
    assert (
        "fallen to $119.50, below 3 days of usage ($126.00): about 2.8 days left at your current usage."
    ) in sent.text
    assert "About 2.8 days of credit left" in html_of(sent, engine)


def test_an_owners_threshold_is_told_as_the_threshold_they_set(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("owner"))
    busy(engine, clock)
    with engine.begin() as conn:
        conn.execute(
            insert(PREFS).values(
                account_id="acme", currency="USD", threshold_1=50_000, recipients=[], updated_at=clock()
            )
        )

    sent = email_at(engine, pipeline, clock, 45_000)

    assert sent.subject == "Acme Ltd: USD balance $450.00 is below your threshold of $500.00"
    assert "fallen to $450.00, below the threshold you set ($500.00)." in sent.text


def test_an_account_without_usage_gets_no_usage_alert_and_its_email_says_why_there_is_no_estimate(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("[average-daily-usage, 100]"))
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 20_000, clock() - 40 * DAY)

    sent = email_at(engine, pipeline, clock, 9_000)

    assert sent.step == 10_000  # the fixed step; no usage, no step at a day of it
    assert (
        "We cannot estimate how long your balance lasts: there was no usage in the last 30 days to average."
    ) in sent.text
    assert "We recommend" not in sent.text
    assert "there was no usage in the last 30 days to average" in html_of(sent, engine)


def test_a_young_account_is_told_how_much_history_an_estimate_needs(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("[100]"))
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 20_000, clock() - DAY)
    post(engine, "acme", "USD", -5_000, clock() - timedelta(hours=2))

    sent = email_at(engine, pipeline, clock, 9_000)

    assert (
        "We cannot estimate how long your balance lasts: your account has one day of ledger history, "
        "and an estimate needs 3 days."
    ) in sent.text


def test_the_usage_of_a_younger_account_is_averaged_over_the_days_since_its_first_entry(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("[100]"))
    account(engine, "acme", name="Acme Ltd")
    post(engine, "acme", "USD", 50_000, clock() - 10 * DAY)
    post(engine, "acme", "USD", -30_000, clock() - 5 * DAY)

    sent = email_at(engine, pipeline, clock, 9_000)

    assert (
        "You used $300.00 over the 10 days since your first ledger entry, an average of $30.00 a day; "
        "at that rate $90.00 lasts about 3 days."
    ) in sent.text


# --- the runway and recommended-threshold emails ------------------------------------------------------


def test_the_runway_email_shows_how_the_days_left_were_worked_out(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("{runway: 3d}", template="runway"))
    busy(engine, clock)

    sent = email_at(engine, pipeline, clock, 11_950)

    assert sent.subject == "Acme Ltd: about 2.8 days of USD credit left ($119.50)"
    assert "At your current usage, your USD balance of $119.50 lasts about 2.8 days." in sent.text
    assert "This alert is for less than 3 days of usage left ($126.00)." in sent.text
    assert "- $1,260.00 ÷ 30 days = $42.00 a day on average.\n" in sent.text
    assert "- $119.50 ÷ $42.00 a day = about 2.8 days.\n" in sent.text
    assert "$119.50 ÷ $42.00 a day" in html_of(sent, engine)


def test_the_recommended_threshold_email_says_what_we_recommend_and_why(
    engine: Engine, make_pipeline: MakePipeline, clock: Clock
) -> None:
    pipeline = make_pipeline(rule("[average-daily-usage]", template="recommended-threshold"))
    busy(engine, clock)

    sent = email_at(engine, pipeline, clock, 4_000)

    assert sent.subject == "Acme Ltd: USD balance $40.00 is below your recommended alert of $42.00"
    assert (
        "We recommend an alert at $42.00, one day of usage, because you used $1,260.00 over the last "
        "30 days: an average of $42.00 a day ($1,260.00 ÷ 30 days)."
    ) in sent.text
    assert "Alert thresholds of your own replace it." in sent.text
    html = html_of(sent, engine)
    assert "Recommended alert" in html
    assert "Why $42.00" in html


# --- the sample contexts `check` and previews render ------------------------------------------------


def shape(context: dict[str, Any]) -> tuple[str, bool, str, bool, bool]:
    alert = context["alert"]
    return (
        alert["follows"],
        alert["runway"],
        context["usage"]["status"],
        bool(context["messages_left"]),
        bool(context["subaccounts"]),
    )


def test_the_samples_cover_every_shape_a_template_sees() -> None:
    shapes = [shape(sample_alert_context(v)) for v in SAMPLE_VARIANTS]

    assert {s[0] for s in shapes} == {"fixed", "usage", "owner"}
    assert any(s[1] for s in shapes)  # a runway step
    assert {s[2] for s in shapes} == {"ok", "short-history", "no-usage"}
    assert {s[3] for s in shapes} == {True, False}
    assert {s[4] for s in shapes} == {True, False}


@pytest.mark.parametrize("kind", ["alert", "restored"])
def test_every_shipped_template_renders_every_sample_with_the_same_numbers_in_text_and_html(
    kind: str,
) -> None:
    templates = load_templates(shipped.templates_dir())
    for name in ALERT_TEMPLATES:
        for context in sample_contexts(kind):
            rendered = templates.render(name, context)
            assert rendered.html is not None
            # A used-up balance lasts no time: its email has no "how long it lasts" arithmetic.
            if (
                context["usage"]["available"]
                and name != "balance-restored"
                and not context["alert"]["exhausted"]
            ):
                for figure in ("$1,260.00", "$42.00"):
                    assert figure in rendered.text, (name, figure)
                    assert figure in rendered.html, (name, figure)
