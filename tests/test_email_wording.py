"""What recipients read: the shipped emails' wording for every shape of data, the footer the
operator controls, subjects read back exactly by mail parsers, and spaces every font shows.

Each test renders the shipped templates through the real template set (and, for subjects, the
real message building of ``deliver``), so a fault a new user would notice fails here first.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from balancewatch.alerts.context import sample_alert_context
from balancewatch.alerts.context import sample_contexts as alert_samples
from balancewatch.config import EmailSettings, Settings, load_settings
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.deliver.message import build as build_message
from balancewatch.liveset import LiveSet
from balancewatch.outbox.rows import Claimed
from balancewatch.render.context import SAMPLE_NOW
from balancewatch.render.templates import Rendered, TemplateSet, load_templates, one_line
from balancewatch.reports.base import Period
from balancewatch.reports.contents import build as build_report
from balancewatch.reports.contents.context import period_context
from balancewatch.reports.contents.csv_attachment import csv_text
from balancewatch.reports.samples import sample_contexts as report_samples
from balancewatch.rules.reports import ReportRule, compile_report
from balancewatch.runtime.service import build_pipeline
from balancewatch.store.tables import AlertState
from balancewatch.topup.notify import sample_contexts as topup_samples
from tests.conftest import Clock
from tests.helpers import account, outbox, post, set_balance

STATE = AlertState.__table__  # type: ignore[attr-defined]
ALERT_TEMPLATES = ("low-balance", "runway", "recommended-threshold")
CUSTOMER_REPORTS = {
    "usage": "usage-report",
    "daywise": "daywise-report",
    "transactions": "transactions-report",
}


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return load_templates(shipped.templates_dir())


def every_customer_email(templates: TemplateSet) -> Iterator[tuple[str, dict[str, Any], Rendered]]:
    """Every shipped template a customer receives, rendered with each of its samples."""
    for name in ALERT_TEMPLATES:
        for context in alert_samples("alert"):
            yield name, context, templates.render(name, context)
    for context in alert_samples("restored"):
        yield "balance-restored", context, templates.render("balance-restored", context)
    for context in topup_samples():
        yield "topup-failed", context, templates.render("topup-failed", context)
    for contents, name in CUSTOMER_REPORTS.items():
        for context in report_samples(contents):
            yield name, context, templates.render(name, context)


def parts(rendered: Rendered) -> str:
    return "\n".join((rendered.subject, rendered.text, rendered.html or ""))


# --- 1. the operators' low-balance report compares currencies by ratios ----------------------------


def low(engine: Engine, account_id: str, currency: str, balance: int, step: int) -> None:
    """A balance at or below a fired fixed step of rule ``ladder``, without usage figures."""
    account(engine, account_id)
    set_balance(engine, account_id, currency, balance, datetime(2026, 3, 31, tzinfo=UTC))
    with engine.begin() as conn:
        conn.execute(
            insert(STATE),
            {
                "rule_id": "ladder",
                "account_id": account_id,
                "currency": currency,
                "step": step,
                "status": "fired",
                "episode": 1,
                "fired_at": datetime(2026, 3, 31, 6, tzinfo=UTC),
            },
        )


def test_low_balances_of_different_currencies_rank_by_the_share_of_their_step_left(
    engine: Engine, db_url: str, make_settings: Callable[..., Settings], templates: TemplateSet
) -> None:
    # ₹1,371 is 17 % of its ₹8,000 step: more urgent than $239.17 of $250 (95 %) or €50 of €100,
    # whatever their face values.
    low(engine, "dollar", "USD", 23_917, 25_000)
    low(engine, "rupee", "INR", 137_100, 800_000)
    low(engine, "euro", "EUR", 5_000, 10_000)
    low(engine, "yen", "JPY", 0, 1_000)  # used up: first
    rule = ReportRule.model_validate(
        {
            "id": "ops",
            "schedule": "daily at 08:00",
            "contents": "low-balance",
            "notify": ["ops@platform.example"],
            "attach_csv": True,
        }
    )
    now = datetime(2026, 4, 1, 8, tzinfo=UTC)
    with engine.connect() as conn:
        [built] = build_report(
            conn, compile_report(rule), [], Period("now", now, now, "UTC", "now"), now, make_settings(db_url)
        )
    order = [(b["account"]["id"], b["step_left_percent"]) for b in built.context["balances"]]
    assert order == [("yen", 0), ("rupee", 17), ("euro", 50), ("dollar", 95)]
    csv_rows = [line.split(",") for line in csv_text(built).splitlines()[1:]]
    assert [(r[0], r[1], r[9]) for r in csv_rows] == [
        ("1", "yen", "0"),
        ("2", "rupee", "17"),
        ("3", "euro", "50"),
        ("4", "dollar", "95"),
    ]
    rendered = templates.render("low-balance-report", built.context)
    assert "balance ÷ step" in rendered.text and "balance ÷ step" in (rendered.html or "")
    assert re.search(r"2\s+Rupee\s+₹1,371\.00 .* ₹8,000\.00\s+17%", rendered.text)


# --- 2. a used-up balance has no "how long it lasts" --------------------------------------------------


@pytest.mark.parametrize("name", ["low-balance", "runway"])
@pytest.mark.parametrize("reminder", [False, True])
def test_an_exhausted_balance_email_has_no_runway_section(
    templates: TemplateSet, name: str, reminder: bool
) -> None:
    context = sample_alert_context("exhausted")
    context["alert"] = {**context["alert"], "reminder": reminder, "reminder_number": 2 if reminder else 0}
    assert context["alert"]["exhausted"] and context["usage"]["available"]
    rendered = templates.render(name, context)
    html = rendered.html or ""
    assert "used up" in rendered.text and "used up" in html
    for words in ("How long it lasts", "How we worked it out", "lasts", "a day on average", "at that rate"):
        assert words not in rendered.text, words
        assert words not in html, words


# --- 3. phrases about periods read right for every history length ----------------------------------

# Wording that a phrase for a period or a count put into a sentence gets wrong.
BAD_WORDING = re.compile(
    r"the (less than a day|one day) since|\b1 days\b|the last one day|last less than"
    r"|(fewer|less) than (less|about)|fewer than (one|0)|needs less than|over the last (less|one|a) "
    r"|  +[.,:;)]"
)


def with_history(context: dict[str, Any], days_counted: Decimal, window_days: int) -> dict[str, Any]:
    """``context`` with usage averaged over ``days_counted`` days of history in a window of
    ``window_days`` (ok however short, as with a small ``usage.min_history``)."""
    usage = dict(context["usage"])
    usage.update(
        available=True,
        status="ok",
        window_days=window_days,
        days_counted=min(days_counted, Decimal(window_days)),
        first_at=SAMPLE_NOW - timedelta(days=float(days_counted)),
        min_history_days=Decimal("0.5"),
        recommend_days=Decimal("0.5"),
    )
    return {**context, "usage": usage}


@pytest.mark.parametrize("days_counted", [Decimal("0.13"), Decimal(1), Decimal(10)])
@pytest.mark.parametrize("window_days", [1, 30])
def test_phrases_about_a_period_read_right_for_every_history_length(
    templates: TemplateSet, days_counted: Decimal, window_days: int
) -> None:
    for variant in ("usage", "runway", "no-usage", "no-history"):
        base = sample_alert_context(variant)
        context = with_history(base, days_counted, window_days)
        if variant == "no-usage":
            context["usage"].update(available=False, status="no-usage", adu=None, runway_days=None)
        if variant == "no-history":
            context["usage"].update(available=False, status="short-history", adu=None, runway_days=None)
        context["alert"] = {**context["alert"], "usage_times": Decimal("0.5")}
        for name in (*ALERT_TEMPLATES, "balance-restored"):
            text = parts(templates.render(name, context))
            assert not BAD_WORDING.search(text), (name, variant, BAD_WORDING.search(text))
    context = with_history(sample_alert_context("usage"), days_counted, window_days)
    text = parts(templates.render("low-balance", context))
    if days_counted < window_days:
        expected = {
            Decimal(
                "0.13"
            ): "Usage by subaccount over the time since your first ledger entry (less than a day)",
            Decimal(1): "Usage by subaccount over the day since your first ledger entry",
            Decimal(10): "Usage by subaccount over the 10 days since your first ledger entry",
        }[days_counted]
    else:
        expected = "Usage by subaccount over the last day" if window_days == 1 else "over the last 30 days"
    assert expected in text


@pytest.mark.parametrize("days_counted", [Decimal("0.13"), Decimal(1), Decimal(10)])
def test_the_usage_report_says_its_average_window_right_for_every_history_length(
    templates: TemplateSet, days_counted: Decimal
) -> None:
    for context in report_samples("usage"):
        for section in context["currencies"]:
            section["usage"] = with_history({"usage": section["usage"]}, days_counted, 30)["usage"]
            section["usage"]["runway_days"] = Decimal(2)
            section["usage"]["adu"] = section["usage"]["total"]
        text = parts(templates.render("usage-report", context))
        assert not BAD_WORDING.search(text), BAD_WORDING.search(text)


# --- 4. the footer is the operator's ---------------------------------------------------------------


def test_by_default_customers_see_neither_balancewatch_nor_the_rule(templates: TemplateSet) -> None:
    for name, context, rendered in every_customer_email(templates):
        text = parts(rendered)
        assert "balancewatch" not in text.lower(), name
        for internal in (
            context.get("rule", {}).get("description"),
            context.get("report", {}).get("description"),
        ):
            if internal:
                assert internal not in text, (name, internal)
        assert "default-ladder" not in text, name


def test_the_operator_names_the_product_and_writes_the_footer(templates: TemplateSet) -> None:
    email_settings = EmailSettings(
        product_name="Acme Messaging", footer="Questions? support@acme.example\nAcme Inc. <Springfield>\n"
    )
    footer = {"product_name": email_settings.product_name, "footer": email_settings.footer}
    assert email_settings.footer == "Questions? support@acme.example\nAcme Inc. <Springfield>"
    for name, context, _ in every_customer_email(templates):
        rendered = templates.render(name, {**context, "email": footer})
        assert rendered.text.endswith(
            "--\nAcme Messaging\nQuestions? support@acme.example\nAcme Inc. <Springfield>\n"
        ), name
        html = rendered.html or ""
        assert "Sent by Acme Messaging for account" in html, name
        assert "Questions? support@acme.example<br>Acme Inc. &lt;Springfield&gt;" in html, name


def test_the_email_settings_reach_reports_and_are_checked(
    tmp_path: Path, engine: Engine, db_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(db_url, email__product_name="Acme Messaging", email__footer="Call 555-0100")
    assert (settings.email.product_name, settings.email.footer) == ("Acme Messaging", "Call 555-0100")
    account(engine, "acme")
    rule = ReportRule.model_validate(
        {"id": "monthly", "schedule": "monthly on 1 at 08:00", "contents": "usage"}
    )
    from zoneinfo import ZoneInfo

    from tests.test_report_contents import info, month  # the report tests' own helpers

    with engine.connect() as conn:
        [built] = build_report(
            conn,
            compile_report(rule),
            [info("acme", ZoneInfo("UTC"))],
            month(2026, 3, ZoneInfo("UTC")),
            datetime(2026, 4, 1, 8, tzinfo=UTC),
            settings,
        )
    assert built.context["email"] == {"product_name": "Acme Messaging", "footer": "Call 555-0100"}

    path = tmp_path / "config.yaml"
    path.write_text('email:\n  product_name: "Acme\\nBcc: x@y.example"\n')
    environ = {
        "BALANCEWATCH_RULES_DIR": str(shipped.rules_dir()),
        "BALANCEWATCH_TEMPLATES_DIR": str(shipped.templates_dir()),
        "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
    }
    with pytest.raises(ProblemsError) as caught:
        load_settings(path, environ, ())
    [problem] = caught.value.problems
    assert str(problem) == f"{path}:2: email.product_name: write the product name on one line"


# --- 5. subjects: one line, one space, read back exactly ---------------------------------------------


def test_a_subject_collapses_every_run_of_whitespace_but_keeps_a_lone_no_break_space() -> None:
    assert one_line(" Reminder:\n  Acme \t (-0,20\u00a0€) \u00a0 ok ") == "Reminder: Acme (-0,20\u00a0€) ok"
    assert one_line("8:00\u202fAM") == "8:00\u00a0AM"


def subjects(templates: TemplateSet) -> Iterator[str]:
    """Long subjects: every alert shape for long names, in de_DE EUR and en_IN INR."""
    names = ["Acme Deutschland GmbH", "Müller & Söhne Telekommunikation Aktiengesellschaft"]
    names += ["Acme " + "x" * n for n in range(0, 60, 3)]  # every place a fold could fall
    for locale, currency in (("de_DE", "EUR"), ("en_IN", "INR"), ("en_US", "USD")):
        for name in names:
            for variant in ("crossed", "exhausted", "reminder", "runway", "usage", "owner"):
                context = sample_alert_context(variant, currency=currency, locale=locale, name=name)
                for template in ALERT_TEMPLATES:
                    yield templates.render(template, context).subject


def claimed(subject: str, now: datetime) -> Claimed:
    """An outbox row as the courier claims it, with ``subject``."""
    return Claimed(1, "k", "<1@x.example>", "alerts@x.example", ("o@x.example",), subject, "t", None, 0, now)


def read_back(data: bytes) -> tuple[str, str]:
    """The Subject as Python's default parser and its compat32 parser (decoded) read it."""
    modern = str(email.message_from_bytes(data, policy=email.policy.default)["Subject"])
    legacy = email.message_from_bytes(data, policy=email.policy.compat32)["Subject"]
    return modern, str(make_header(decode_header(legacy)))


def test_every_subject_is_read_back_exactly_as_rendered(templates: TemplateSet) -> None:
    now = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    seen = set()
    for subject in subjects(templates):
        assert "  " not in subject and subject == subject.strip(), subject
        if subject in seen:
            continue
        seen.add(subject)
        row = Claimed(
            1, "k", "<1@x.example>", "alerts@x.example", ("o@x.example",), subject, "t", None, 0, now
        )
        data = build_message(row, now).as_bytes("o@x.example")
        assert read_back(data) == (subject, subject), subject
        header = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
        assert all(len(line) <= 998 for line in header.split("\r\n"))
    assert any(len(s) > 78 and not s.isascii() for s in seen)
    assert any(len(s) > 78 and s.isascii() for s in seen)


def test_text_that_looks_like_an_encoded_word_stays_as_written() -> None:
    now = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    subject = "Acme =?utf-8?q?Evil?= Ltd: USD balance $84.12 is below $100.00"
    assert read_back(build_message(claimed(subject, now), now).as_bytes("o@x.example")) == (subject, subject)


# --- 6. no narrow no-break space: "8:00:00AM" in fonts without it --------------------------------------


@pytest.mark.parametrize("locale", ["en_US", "fr_FR", "en_IN"])
def test_no_email_holds_a_narrow_no_break_space(templates: TemplateSet, locale: str) -> None:
    for name, context, _ in every_customer_email(templates):
        rendered = templates.render(name, {**context, "locale": locale})
        assert "\u202f" not in parts(rendered), (name, locale)
    text = templates.render(
        "low-balance", sample_alert_context("crossed", currency="EUR", locale=locale)
    ).text
    if locale == "fr_FR":  # digit groups: "11 216 SMS", "84,12 €", each with a no-break space
        assert "about 11\u00a0216 SMS" in text and "84,12\u00a0€" in text, text
    else:  # CLDR's en_US and en_IN times: "5:30:00 AM"
        assert re.search(r"\d:\d\d:\d\d\u00a0AM", text), text
    label = period_context(Period("now", SAMPLE_NOW, SAMPLE_NOW, "UTC", "now"), SAMPLE_NOW, locale)["label"]
    assert "\u202f" not in label


def test_the_daemons_alerts_carry_the_configured_footer(
    engine: Engine,
    db_url: str,
    make_settings: Callable[..., Settings],
    live_from: Callable[[str], LiveSet],
    clock: Clock,
) -> None:
    settings = make_settings(db_url, email__product_name="Acme Messaging", email__footer="Call 555-0100")
    rules = "alerts:\n  - id: ladder\n    accounts: {currency: USD}\n    below: [100]\n"
    pipeline = build_pipeline(engine, settings, live_from(rules))
    account(engine, "acme")
    post(engine, "acme", "USD", 5_000, clock())
    pipeline.evaluate(clock.advance(minutes=1))
    [sent] = outbox(engine, "acme")
    assert sent.text.endswith("--\nAcme Messaging\nCall 555-0100\n")
    assert "ladder" not in sent.text
