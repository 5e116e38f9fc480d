"""What a report says, against small hand-computed ledgers, on SQLite and PostgreSQL.

Each test writes a ledger as balancewatch or a billing system would (through
``store.ledger.post``, which records ``balance_after``, or as bare rows
without it), builds a report over a batch of accounts and checks the exact
numbers, the local days they fall in, the rendered parts and the CSV.
Amounts are in minor units (cents, paise) unless a test formats them.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, insert
from sqlmodel import Session

from balancewatch.config import Settings
from balancewatch.core import shipped
from balancewatch.core.money import Money
from balancewatch.core.problems import ProblemsError
from balancewatch.evaluate import usage
from balancewatch.render.templates import load_templates
from balancewatch.reports.base import AccountInfo, Built, Period
from balancewatch.reports.contents import build
from balancewatch.reports.contents.csv_attachment import csv_text
from balancewatch.reports.contents.localdays import local_days
from balancewatch.reports.samples import sample_contexts
from balancewatch.rules.reports import CompiledReport, ReportRule, compile_report
from balancewatch.runtime.loadset import load_set
from balancewatch.store import ledger
from balancewatch.store.tables import AlertState, LedgerEntry, UsageSummary
from tests.helpers import account, set_balance

LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
STATE = AlertState.__table__  # type: ignore[attr-defined]
SUMMARY = UsageSummary.__table__  # type: ignore[attr-defined]
KOLKATA, BERLIN, NEW_YORK = ZoneInfo("Asia/Kolkata"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
APRIL_1 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
MONEY = re.compile(r"-?[$₹€£¥][\d.,]*\d")
TEMPLATES = {
    "usage": "usage-report",
    "daywise": "daywise-report",
    "transactions": "transactions-report",
    "low-balance": "low-balance-report",
}


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def settings(db_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(db_url)


def report(contents: str, **fields: Any) -> CompiledReport:
    rule = {"id": f"{contents}-report", "schedule": "monthly on 1 at 08:00", "contents": contents}
    if contents == "low-balance":
        rule["notify"] = ["ops@platform.example"]
    return compile_report(ReportRule.model_validate({**rule, **fields}))


def month(year: int, number: int, zone: ZoneInfo) -> Period:
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return Period("month", start, end, str(zone), f"{year}-{number:02d}")


def week(first: date, zone: ZoneInfo) -> Period:
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    after = first + timedelta(days=7)
    year, number, _ = first.isocalendar()
    return Period(
        "week",
        start,
        datetime(after.year, after.month, after.day, tzinfo=zone),
        str(zone),
        f"{year}-W{number:02d}",
    )


def day(which: date, zone: ZoneInfo) -> Period:
    after = which + timedelta(days=1)
    start = datetime(which.year, which.month, which.day, tzinfo=zone)
    return Period(
        "day", start, datetime(after.year, after.month, after.day, tzinfo=zone), str(zone), which.isoformat()
    )


def info(account_id: str, zone: ZoneInfo, locale: str = "en_US") -> AccountInfo:
    return AccountInfo(account_id, account_id.capitalize(), f"{account_id}@owner.example", locale, str(zone))


def entry(
    engine: Engine,
    account_id: str,
    amount: int,
    kind: str,
    at: datetime,
    *,
    service: str | None = None,
    quantity: int | None = None,
    reference: str | None = None,
    currency: str = "USD",
) -> None:
    """An entry posted through balancewatch: the balance moves and ``balance_after`` is recorded."""
    with Session(engine) as s:
        ledger.post(
            s,
            account_id,
            currency,
            amount,
            kind,
            occurred_at=at,
            now=at,
            service=service,
            quantity=quantity,
            reference=reference,
        )
        s.commit()


def billing_entry(
    engine: Engine,
    account_id: str,
    amount: int,
    at: datetime,
    *,
    kind: str = "usage",
    balance_after: int | None = None,
    currency: str = "USD",
) -> None:
    """An entry as a billing system writes it: a bare row, usually without ``balance_after``."""
    with engine.begin() as conn:
        conn.execute(
            insert(LEDGER),
            {
                "account_id": account_id,
                "currency": currency,
                "amount": amount,
                "kind": kind,
                "occurred_at": at,
                "balance_after": balance_after,
            },
        )


def built(
    engine: Engine,
    rep: CompiledReport,
    accounts: Sequence[AccountInfo],
    period: Period,
    settings: Settings,
    now: datetime = APRIL_1,
    **kwargs: Any,
) -> list[Built]:
    with engine.connect() as conn:
        return list(build(conn, rep, accounts, period, now, settings, **kwargs))


def one(engine: Engine, rep: CompiledReport, who: AccountInfo, period: Period, settings: Settings) -> Any:
    """The only currency section of ``who``'s report."""
    [b] = built(engine, rep, [who], period, settings)
    [section] = b.context["currencies"]
    return section


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def spent_by_day(section: dict[str, Any], key: str = "days") -> dict[int, int]:
    return {d["date"].day: d["spent"].minor for d in section[key] if d["spent"].minor}


def parsed(b: Built) -> list[dict[str, str]]:
    text = csv_text(b)
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == b.csv_header
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


# --- usage ------------------------------------------------------------------------------------------


@pytest.fixture
def acme(engine: Engine) -> AccountInfo:
    """A month of SMS and voice for acme and its subaccount acme-eu (UTC), with February before it.

    Balances after each entry: 10,000; 8,800; 8,500 | 7,750; 7,300; 7,020; 12,020; 11,920; 11,845 | 11,345.
    """
    account(engine, "acme")
    account(engine, "acme-eu", name="Acme Europe", parent_id="acme")
    at = lambda m, d, h=10, mi=0: datetime(2026, m, d, h, mi, tzinfo=UTC)  # noqa: E731
    entry(engine, "acme", 10_000, "top-up", at(2, 10), reference="t-feb")
    entry(engine, "acme", -1_200, "usage", at(2, 20), service="sms", quantity=160)
    entry(engine, "acme-eu", -300, "usage", at(2, 25), service="voice", quantity=20)
    entry(engine, "acme", -750, "usage", at(3, 2), service="sms", quantity=100)
    entry(engine, "acme-eu", -450, "usage", at(3, 2, 11), service="sms", quantity=60)
    entry(engine, "acme-eu", -280, "usage", at(3, 15, 12), service="voice", quantity=20)
    entry(engine, "acme", 5_000, "top-up", at(3, 20, 9), reference="t-mar")
    entry(engine, "acme", -100, "adjustment", at(3, 21, 9), reference="fix-1")
    entry(engine, "acme", -75, "usage", at(3, 31, 23, 59), service="sms", quantity=10)
    entry(engine, "acme", -500, "usage", at(4, 1, 0), service="sms", quantity=70)
    with engine.begin() as conn:
        usage.refresh(conn, APRIL_1, [30], timedelta(days=3))
    return info("acme", ZoneInfo("UTC"))


def test_usage_totals_services_subaccounts_and_the_previous_month_match_the_hand_computed_ledger(
    engine: Engine, settings: Settings, acme: AccountInfo
) -> None:
    [b] = built(engine, report("usage"), [acme], month(2026, 3, ZoneInfo("UTC")), settings)
    [c] = b.context["currencies"]
    assert (b.empty, c["entry_count"]) == (False, 6)
    assert (c["spent"], c["credited"], c["other_debits"], c["net"]) == (
        usd(1_555),
        usd(5_000),
        usd(100),
        usd(3_345),
    )
    assert [(s["name"], s["spent"], s["quantity"], s["share_percent"]) for s in c["services"]] == [
        ("sms", usd(1_275), 170, Decimal("82.0")),
        ("voice", usd(280), 20, Decimal("18.0")),
    ]
    assert [(a["id"], a["main"], a["spent"], a["share_percent"]) for a in c["subaccounts"]] == [
        ("acme", True, usd(825), Decimal("53.1")),
        ("acme-eu", False, usd(730), Decimal("46.9")),
    ]
    assert c["previous"] == {
        "spent": usd(1_500),
        "change": usd(55),
        "change_percent": Decimal("3.7"),
        "direction": "up",
    }
    assert b.context["previous_period"]["label"] == "February 2026"
    assert len(c["daily"]) == 31
    assert spent_by_day(c, "daily") == {2: 1_200, 15: 280, 31: 75}
    assert [d["bar_percent"] for d in c["daily"] if d["spent"].minor] == [100, 23, 6]
    assert (c["highest_day"]["date"], c["average_daily"]) == (date(2026, 3, 2), usd(50))


def test_daywise_rows_match_the_hand_computed_ledger_day_by_day(
    engine: Engine, settings: Settings, acme: AccountInfo
) -> None:
    d = one(engine, report("daywise"), acme, month(2026, 3, ZoneInfo("UTC")), settings)
    # February left 10,000 - 1,200 - 300 = 8,500; March's entries move it day by day.
    assert (d["opening"], d["closing"], d["balance_source"]) == (usd(8_500), usd(11_845), "ledger")
    assert len(d["days"]) == 31
    moved = {
        row["date"].day: (row["spent"], row["credited"], row["other_debits"], row["net"], row["entry_count"])
        for row in d["days"]
        if row["entry_count"]
    }
    assert moved == {
        2: (usd(1_200), usd(0), usd(0), usd(-1_200), 2),  # acme's and acme-eu's SMS
        15: (usd(280), usd(0), usd(0), usd(-280), 1),
        20: (usd(0), usd(5_000), usd(0), usd(5_000), 1),
        21: (usd(0), usd(0), usd(100), usd(-100), 1),  # a negative adjustment is not usage
        31: (usd(75), usd(0), usd(0), usd(-75), 1),  # 23:59 is still March; April's 00:00 is not
    }
    closing = {row["date"].day: row["closing"] for row in d["days"]}
    assert [closing[day] for day in (1, 2, 14, 15, 19, 20, 21, 30, 31)] == [
        usd(8_500),
        usd(7_300),
        usd(7_300),
        usd(7_020),
        usd(7_020),
        usd(12_020),
        usd(11_920),
        usd(11_920),
        usd(11_845),
    ]


def test_usage_shows_the_balance_at_the_end_from_the_ledger_and_adu_and_runway_from_the_balance_now(
    engine: Engine, settings: Settings, acme: AccountInfo
) -> None:
    c = one(engine, report("usage"), acme, month(2026, 3, ZoneInfo("UTC")), settings)
    assert (c["balance_end"], c["balance_end_source"], c["balance_now"]) == (
        usd(11_845),
        "ledger",
        usd(11_345),
    )
    # 2,055 of usage since 2 March 08:00 over 30 days = 68.5, rounded to 69; 11,345 / 69 = 164.42 days.
    assert (c["usage"]["adu"], c["usage"]["runway_days"], c["usage"]["window_days"]) == (
        usd(69),
        Decimal("164.4"),
        30,
    )


def test_usage_csv_holds_the_period_grouped_by_day_account_kind_and_service(
    engine: Engine, settings: Settings, acme: AccountInfo
) -> None:
    [b] = built(engine, report("usage"), [acme], month(2026, 3, ZoneInfo("UTC")), settings)
    rows = parsed(b)
    assert [tuple(r.values()) for r in rows] == [
        ("2026-03-02", "USD", "acme", "Acme", "usage", "sms", "100", "-7.50", "1"),
        ("2026-03-02", "USD", "acme-eu", "Acme Europe", "usage", "sms", "60", "-4.50", "1"),
        ("2026-03-15", "USD", "acme-eu", "Acme Europe", "usage", "voice", "20", "-2.80", "1"),
        ("2026-03-20", "USD", "acme", "Acme", "top-up", "", "", "50.00", "1"),
        ("2026-03-21", "USD", "acme", "Acme", "adjustment", "", "", "-1.00", "1"),
        ("2026-03-31", "USD", "acme", "Acme", "usage", "sms", "10", "-0.75", "1"),
    ]
    assert -sum(Decimal(r["amount"]) for r in rows if r["kind"] == "usage") == Decimal("15.55")


def test_the_balance_at_the_end_is_derived_from_todays_balance_when_the_ledger_has_no_balance_after(
    engine: Engine, settings: Settings
) -> None:
    account(engine, "beta")
    set_balance(engine, "beta", "USD", 10_000, datetime(2026, 3, 1, tzinfo=UTC))
    billing_entry(engine, "beta", -300, datetime(2026, 3, 5, 10, tzinfo=UTC))
    billing_entry(engine, "beta", -200, datetime(2026, 3, 6, 10, tzinfo=UTC))
    billing_entry(engine, "beta", -100, datetime(2026, 4, 2, 10, tzinfo=UTC))
    set_balance(engine, "beta", "USD", 9_400, datetime(2026, 4, 2, 10, tzinfo=UTC))
    march, beta = month(2026, 3, ZoneInfo("UTC")), info("beta", ZoneInfo("UTC"))
    c = one(engine, report("usage"), beta, march, settings)
    # 9,400 now, less the 100 debited after March: 9,500 when March ended.
    assert (c["spent"], c["balance_end"], c["balance_end_source"]) == (usd(500), usd(9_500), "derived")
    d = one(engine, report("daywise"), beta, march, settings)
    assert (d["opening"], d["closing"], d["balance_source"]) == (usd(10_000), usd(9_500), "derived")
    assert [d["days"][i]["closing"] for i in (3, 4, 5, 30)] == [
        usd(10_000),
        usd(9_700),
        usd(9_500),
        usd(9_500),
    ]


# --- local days -------------------------------------------------------------------------------------


def test_a_debit_at_2330_in_kolkata_belongs_to_that_local_day_not_the_utc_one(
    engine: Engine, settings: Settings
) -> None:
    account(engine, "india", locale="en_IN")
    entry(engine, "india", 100_000, "top-up", datetime(2026, 2, 28, 10, tzinfo=KOLKATA), currency="INR")
    debits = [
        (datetime(2026, 3, 1, 0, 30, tzinfo=KOLKATA), -400),  # 28 Feb 19:00 UTC
        (datetime(2026, 3, 14, 23, 30, tzinfo=KOLKATA), -100),  # 14 Mar 18:00 UTC
        (datetime(2026, 3, 15, 5, 0, tzinfo=KOLKATA), -200),  # 14 Mar 23:30 UTC
        (datetime(2026, 3, 31, 23, 30, tzinfo=KOLKATA), -800),  # 31 Mar 18:00 UTC
        (datetime(2026, 4, 1, 0, 10, tzinfo=KOLKATA), -1_600),  # 31 Mar 18:40 UTC: April in Kolkata
    ]
    for at, amount in debits:
        entry(engine, "india", amount, "usage", at, currency="INR", service="sms")
    india = info("india", KOLKATA, "en_IN")
    d = one(engine, report("daywise"), india, month(2026, 3, KOLKATA), settings)
    assert spent_by_day(d) == {1: 400, 14: 100, 15: 200, 31: 800}
    assert (d["totals"]["spent"], d["totals"]["entry_count"]) == (Money(1_500, "INR"), 4)
    the_14th = one(engine, report("usage", period="day"), india, day(date(2026, 3, 14), KOLKATA), settings)
    assert the_14th["spent"] == Money(100, "INR")
    utc_14th = AccountInfo("india", "India", "india@owner.example", "en_IN", "UTC")
    in_utc = one(
        engine, report("usage", period="day"), utc_14th, day(date(2026, 3, 14), ZoneInfo("UTC")), settings
    )
    assert in_utc["spent"] == Money(300, "INR")


def test_a_dst_month_in_berlin_buckets_its_23_hour_and_25_hour_days_right(
    engine: Engine, settings: Settings
) -> None:
    account(engine, "berlin")
    entry(engine, "berlin", 100_000, "top-up", datetime(2026, 3, 1, 12, tzinfo=BERLIN))
    for at, amount in [
        (datetime(2026, 3, 28, 23, 30, tzinfo=BERLIN), -1),
        (datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN), -10),  # 28 Mar 23:30 UTC
        (datetime(2026, 3, 29, 23, 30, tzinfo=BERLIN), -100),  # 29 Mar 21:30 UTC, summer time
        (datetime(2026, 3, 30, 0, 30, tzinfo=BERLIN), -1_000),  # 29 Mar 22:30 UTC
        (datetime(2026, 10, 25, 0, 30, tzinfo=BERLIN), -10),  # 24 Oct 22:30 UTC
        (datetime(2026, 10, 25, 23, 30, tzinfo=BERLIN), -100),  # 25 Oct 22:30 UTC, winter time
        (datetime(2026, 10, 26, 0, 30, tzinfo=BERLIN), -1_000),  # 25 Oct 23:30 UTC
    ]:
        entry(engine, "berlin", amount, "usage", at)
    march, october = month(2026, 3, BERLIN), month(2026, 10, BERLIN)
    assert local_days(march)[28].end - local_days(march)[28].start == timedelta(hours=23)
    assert local_days(october)[24].end - local_days(october)[24].start == timedelta(hours=25)
    who = info("berlin", BERLIN, "de_DE")
    assert spent_by_day(one(engine, report("daywise"), who, march, settings)) == {28: 1, 29: 110, 30: 1_000}
    assert spent_by_day(one(engine, report("daywise"), who, october, settings)) == {25: 110, 26: 1_000}
    daily = one(engine, report("usage"), who, october, settings)["daily"]
    assert (len(daily), daily[24]["label"]) == (31, "So., 25. Okt.")


# --- transactions -----------------------------------------------------------------------------------


def test_transactions_list_every_entry_with_local_time_kind_amount_reference_and_balance_after(
    engine: Engine, settings: Settings
) -> None:
    account(engine, "gamma")
    account(engine, "gamma-sub", name="Gamma Sub", parent_id="gamma")
    entry(engine, "gamma", 10_000, "top-up", datetime(2026, 3, 1, 12, tzinfo=NEW_YORK), reference="t0")
    entry(
        engine,
        "gamma",
        -250,
        "usage",
        datetime(2026, 3, 9, 9, tzinfo=NEW_YORK),
        service="sms",
        quantity=50,
        reference="u1",
    )
    entry(engine, "gamma", 2_000, "top-up", datetime(2026, 3, 10, 22, 30, tzinfo=NEW_YORK), reference="t1")
    entry(
        engine,
        "gamma-sub",
        -100,
        "usage",
        datetime(2026, 3, 15, 23, 59, tzinfo=NEW_YORK),
        service="voice",
        quantity=5,
        reference="v1",
    )
    entry(engine, "gamma", -50, "usage", datetime(2026, 3, 16, 10, tzinfo=NEW_YORK), reference="u2")
    [b] = built(
        engine,
        report("transactions", period="week"),
        [info("gamma", NEW_YORK)],
        week(date(2026, 3, 9), NEW_YORK),
        settings,
    )
    [c] = b.context["currencies"]
    assert [
        (
            e["at"].strftime("%m-%d %H:%M"),
            e["kind"],
            e["amount"],
            e["reference"],
            e["balance_after"],
            e["account"]["id"],
        )
        for e in c["entries"]
    ] == [
        ("03-09 09:00", "usage", usd(-250), "u1", usd(9_750), "gamma"),
        ("03-10 22:30", "top-up", usd(2_000), "t1", usd(11_750), "gamma"),
        ("03-15 23:59", "usage", usd(-100), "v1", usd(11_650), "gamma-sub"),
    ]
    assert (c["opening"], c["opening_source"], c["closing"], c["closing_source"]) == (
        usd(10_000),
        "ledger",
        usd(11_650),
        "ledger",
    )
    assert c["totals"] == {"count": 3, "credited": usd(2_000), "debited": usd(350), "net": usd(1_650)}
    rows = parsed(b)
    assert tuple(rows[1].values()) == (
        "2026-03-10", "22:30:00", "2026-03-10T22:30:00-04:00", "USD", "gamma", "Gamma",
        "top-up", "", "", "20.00", "t1", "117.50",
    )  # fmt: skip
    assert (rows[2]["account_name"], rows[2]["quantity"], rows[2]["balance_after"]) == (
        "Gamma Sub",
        "5",
        "116.50",
    )


def test_the_balance_after_an_entry_without_one_runs_on_from_the_last_balance_the_ledger_gave(
    engine: Engine, settings: Settings
) -> None:
    account(engine, "delta")
    entry(engine, "delta", 10_000, "top-up", datetime(2026, 3, 1, 12, tzinfo=NEW_YORK))
    at = lambda d: datetime(2026, 3, d, 10, tzinfo=NEW_YORK)  # noqa: E731
    billing_entry(engine, "delta", -300, at(9))
    billing_entry(engine, "delta", -200, at(10))
    billing_entry(engine, "delta", -100, at(11), balance_after=9_300)  # the billing system knew of a fee
    billing_entry(engine, "delta", -50, at(12))
    set_balance(engine, "delta", "USD", 9_250, at(12))
    c = one(
        engine,
        report("transactions", period="week"),
        info("delta", NEW_YORK),
        week(date(2026, 3, 9), NEW_YORK),
        settings,
    )
    assert [(e["balance_after"].minor, e["balance_after_source"]) for e in c["entries"]] == [
        (9_700, "computed"),
        (9_500, "computed"),
        (9_300, "ledger"),
        (9_250, "computed"),
    ]
    assert (c["opening"], c["opening_source"], c["closing"], c["closing_source"]) == (
        usd(10_000),
        "ledger",
        usd(9_250),
        "derived",
    )


# --- empty periods and batches ----------------------------------------------------------------------


def test_an_account_without_entries_in_the_period_is_empty_and_still_gets_its_numbers(
    engine: Engine, settings: Settings
) -> None:
    account(engine, "quiet")
    account(engine, "unfunded")
    entry(engine, "quiet", 4_200, "top-up", datetime(2026, 2, 1, tzinfo=UTC))
    entry(engine, "quiet", -200, "usage", datetime(2026, 4, 2, tzinfo=UTC))
    march, zone = month(2026, 3, ZoneInfo("UTC")), ZoneInfo("UTC")
    templates = load_templates(shipped.templates_dir())
    for contents in ("usage", "daywise", "transactions"):
        builts = built(
            engine, report(contents), [info("unfunded", zone), info("quiet", zone)], march, settings
        )
        assert [
            (b.account.id, b.empty, len(b.csv_rows) if contents != "daywise" else 0)
            for b in builts
            if b.account
        ] == [
            ("quiet", True, 0),
            ("unfunded", True, 0),
        ]
        quiet, unfunded = builts
        assert unfunded.context["currencies"] == []
        text = templates.render(TEMPLATES[contents], quiet.context).text
        assert (
            "No transactions in this period" if contents == "transactions" else "No usage in this period"
        ) in text
        assert "$42.00" in text
    c = one(engine, report("usage"), info("quiet", zone), march, settings)
    assert (c["spent"], c["balance_end"], c["previous"]["direction"]) == (usd(0), usd(4_200), "same")


def test_a_batch_is_built_with_the_same_few_queries_whatever_its_size(
    engine: Engine, settings: Settings
) -> None:
    names = [f"acct-{n:02d}" for n in range(24)]
    for n, name in enumerate(names):
        account(engine, name)
        entry(engine, name, 5_000, "top-up", datetime(2026, 2, 27, tzinfo=UTC))
        entry(engine, name, -(n + 1), "usage", datetime(2026, 3, 3, tzinfo=UTC), service="sms")
    march, zone = month(2026, 3, ZoneInfo("UTC")), ZoneInfo("UTC")
    statements: list[str] = []

    def count(*args: Any) -> None:
        if not str(args[2]).startswith("BEGIN"):  # SQLite transactions begin IMMEDIATE here
            statements.append(str(args[2]).split("\n")[0][:60])

    event.listen(engine, "before_cursor_execute", count)
    try:
        for contents in ("usage", "daywise", "transactions"):
            queries = []
            for batch in (names[:2], names):
                statements.clear()
                builts = built(engine, report(contents), [info(n, zone) for n in batch], march, settings)
                assert [b.account.id for b in builts if b.account] == batch
                queries.append(len(statements))
            # Usage: one more here, as nothing refreshed the usage summary and the figures are computed.
            most = 7 if contents == "usage" else 6
            assert queries[0] == queries[1] <= most, (contents, queries, statements)
        spent = [
            one(engine, report("usage"), info(n, zone), march, settings)["spent"].minor for n in names[:3]
        ]
        assert spent == [1, 2, 3]
    finally:
        event.remove(engine, "before_cursor_execute", count)


# --- low balances -----------------------------------------------------------------------------------


def fired(engine: Engine, rule_id: str, account_id: str, step: int, status: str = "fired") -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(STATE),
            {
                "rule_id": rule_id,
                "account_id": account_id,
                "currency": "USD",
                "step": step,
                "status": status,
                "episode": 1,
                "fired_at": datetime(2026, 3, 31, 6, tzinfo=UTC),
            },
        )


def summary(engine: Engine, account_id: str, adu: int | None) -> None:
    """A usage summary row as ``usage.refresh`` writes it."""
    with engine.begin() as conn:
        conn.execute(
            insert(SUMMARY),
            {
                "account_id": account_id,
                "currency": "USD",
                "window_days": 30,
                "usage_total": 30 * (adu or 0),
                "days_counted": 30.0 if adu else 1.0,
                "adu": adu,
                "status": "ok" if adu else "short-history",
                "computed_at": APRIL_1,
            },
        )


@pytest.fixture
def lows(engine: Engine) -> None:
    """Balances, fired steps and usage: runways 5.0 (a), 1.5 (b), 0 (c), 5.0 (h); none for d, e, f."""
    at = datetime(2026, 3, 31, tzinfo=UTC)
    setups: list[tuple[str, int, list[tuple[str, int, str]], int | None]] = [
        ("a", 500, [("ladder", 1_000, "fired")], 100),
        ("b", 300, [("ladder", 1_000, "fired"), ("ladder", 500, "fired")], 200),
        ("c", -20, [("ladder", 1_000, "fired"), ("ladder", 0, "fired")], 50),
        ("d", 400, [("ladder", 1_000, "fired")], None),
        ("e", 100, [("ladder", 1_000, "fired")], 0),
        ("f", 800, [("other", 1_000, "fired")], None),
        ("g", 2_000, [("ladder", 1_000, "fired")], 10),  # back above the step, not yet re-armed
        ("h", 5_000, [("recommended", -1, "fired")], 1_000),  # a step that follows usage
        ("i", 100, [("ladder", 1_000, "armed")], 10),
    ]
    for name, balance, states, adu in setups:
        account(engine, name)
        set_balance(engine, name, "USD", balance, at)
        for rule_id, step, status in states:
            fired(engine, rule_id, name, step, status)
        if adu is not None:
            summary(engine, name, adu or None)
    account(engine, "post", billing="postpaid")
    set_balance(engine, "post", "USD", 10, at)
    fired(engine, "ladder", "post", 1_000)


def test_the_low_balance_report_lists_every_balance_below_a_fired_step_most_urgent_first(
    engine: Engine, settings: Settings, lows: None
) -> None:
    [b] = built(engine, report("low-balance"), [], Period("now", APRIL_1, APRIL_1, "UTC", "now"), settings)
    assert (b.account, b.empty, b.context["count"], b.context["exhausted_count"]) == (None, False, 7, 1)
    rows = [
        (
            r["account"]["id"],
            r["balance"].minor,
            None if r["adu"] is None else r["adu"].minor,
            r["runway_days"],
        )
        for r in b.context["balances"]
    ]
    # Used up first, then by the share of the step left (e 10%, d 40%, a 50%, b 60% of its $5
    # step, f 80%), then the balance whose only step follows usage.
    assert rows == [
        ("c", -20, 50, Decimal("0.0")),
        ("e", 100, None, None),
        ("d", 400, None, None),
        ("a", 500, 100, Decimal("5.0")),
        ("b", 300, 200, Decimal("1.5")),
        ("f", 800, None, None),
        ("h", 5_000, 1_000, Decimal("5.0")),
    ]
    left = {r["account"]["id"]: r["step_left_percent"] for r in b.context["balances"]}
    assert left == {"c": 0, "e": 10, "d": 40, "a": 50, "b": 60, "f": 80, "h": None}
    steps = {r["account"]["id"]: (r["step"], r["follows_usage"], r["rules"]) for r in b.context["balances"]}
    assert steps["c"] == (usd(0), False, ["ladder"])
    assert steps["b"] == (usd(500), False, ["ladder"])
    assert steps["h"] == (None, True, ["recommended"])
    assert parsed(b)[0] == {
        "rank": "1",
        "account_id": "c",
        "account_name": "C",
        "owner_email": "c@owner.example",
        "currency": "USD",
        "balance": "-0.20",
        "adu": "0.50",
        "runway_days": "0.0",
        "step": "0.00",
        "step_left_percent": "0",
        "rules": "ladder",
        "fired_at": "2026-03-31T06:00:00+00:00",
    }


def test_the_low_balance_report_counts_only_the_rules_it_is_given_and_the_accounts_it_selects(
    engine: Engine, settings: Settings, lows: None
) -> None:
    now = Period("now", APRIL_1, APRIL_1, "UTC", "now")
    [b] = built(engine, report("low-balance"), [], now, settings, rule_ids=["ladder", "recommended"])
    assert [r["account"]["id"] for r in b.context["balances"]] == ["c", "e", "d", "a", "b", "h"]
    [only] = built(engine, report("low-balance", accounts={"ids": ["a", "g"]}), [], now, settings)
    assert [r["account"]["id"] for r in only.context["balances"]] == ["a"]
    [none] = built(engine, report("low-balance"), [], now, settings, rule_ids=[])
    assert (none.empty, none.context["balances"], none.csv_rows) == (True, [], [])


# --- rendering --------------------------------------------------------------------------------------


@pytest.fixture
def rupees(engine: Engine) -> AccountInfo:
    """A month in INR (en_IN) with a subaccount whose name needs quoting in CSV, large enough for lakhs."""
    account(engine, "rupee", locale="en_IN")
    account(engine, "rupee-sub", name='Rupee, "South"', parent_id="rupee")
    at = lambda m, d, h=10: datetime(2026, m, d, h, tzinfo=KOLKATA)  # noqa: E731
    entry(engine, "rupee", 25_000_000, "top-up", at(2, 1), currency="INR", reference="t-1")
    entry(engine, "rupee", -1_234_550, "usage", at(2, 10), currency="INR", service="sms", quantity=49_382)
    for d in range(1, 32, 3):
        entry(
            engine,
            "rupee",
            -(10_000 + d * 137),
            "usage",
            at(3, d),
            currency="INR",
            service="sms",
            quantity=400 + d,
        )
        entry(
            engine,
            "rupee-sub",
            -(2_500 + d * 11),
            "usage",
            at(3, d, 18),
            currency="INR",
            service="voice",
            quantity=60,
        )
    entry(engine, "rupee", 12_345_600, "top-up", at(3, 12, 23), currency="INR", reference="t-2")
    billing_entry(engine, "rupee", -4_500, at(3, 20), kind="adjustment", currency="INR")
    with engine.begin() as conn:
        usage.refresh(conn, APRIL_1, [30], timedelta(days=3))
        conn.execute(
            insert(STATE),
            {
                "rule_id": "ladder",
                "account_id": "rupee",
                "currency": "INR",
                "step": 50_000_000,
                "status": "fired",
            },
        )
    return info("rupee", KOLKATA, "en_IN")


def rendered_builts(engine: Engine, settings: Settings, who: AccountInfo, contents: str) -> Built:
    if contents == "low-balance":
        period = Period("now", APRIL_1, APRIL_1, "Asia/Kolkata", "now")
        [b] = built(engine, report(contents), [], period, settings)
    else:
        [b] = built(engine, report(contents), [who], month(2026, 3, KOLKATA), settings)
    return b


@pytest.mark.parametrize("contents", ["usage", "daywise", "transactions", "low-balance"])
def test_the_html_and_text_parts_agree_on_every_amount(
    engine: Engine, settings: Settings, rupees: AccountInfo, contents: str
) -> None:
    b = rendered_builts(engine, settings, rupees, contents)
    parts = load_templates(shipped.templates_dir()).render(TEMPLATES[contents], b.context)
    assert parts.html is not None
    in_text, in_html = set(MONEY.findall(parts.text)), set(MONEY.findall(parts.html))
    assert in_text == in_html
    assert len(in_text) >= 3
    if contents == "low-balance":  # for operators: in the configured default locale
        assert (b.context["locale"], "₹359,475.02" in in_text) == ("en_US", True)
    else:  # in the owner's: lakhs
        assert any(re.fullmatch(r"-?₹\d{1,2},\d\d,\d{3}\.\d\d", m) for m in in_text), in_text
    assert "<script" not in parts.html and "src=" not in parts.html
    assert 'Rupee, "South"' in parts.text or contents in ("daywise", "low-balance")


@pytest.mark.parametrize("contents", ["usage", "daywise", "transactions", "low-balance"])
def test_the_csv_parses_and_adds_up_to_the_numbers_of_the_email(
    engine: Engine, settings: Settings, rupees: AccountInfo, contents: str
) -> None:
    b = rendered_builts(engine, settings, rupees, contents)
    rows = parsed(b)
    assert rows and all(r.get("currency", "INR") == "INR" for r in rows)
    major = lambda m: m.major  # noqa: E731
    if contents == "low-balance":
        [low] = b.context["balances"]
        assert (rows[0]["account_id"], Decimal(rows[0]["balance"])) == ("rupee", major(low["balance"]))
        return
    [c] = b.context["currencies"]
    amounts = [Decimal(r.get("amount") or r["net"]) for r in rows]
    if contents == "usage":
        assert -sum(a for a, r in zip(amounts, rows, strict=True) if r["kind"] == "usage") == major(
            c["spent"]
        )
        assert {r["account_name"] for r in rows} == {"Rupee", 'Rupee, "South"'}
    elif contents == "daywise":
        assert len(rows) == 31
        assert sum(Decimal(r["spent"]) for r in rows) == major(c["totals"]["spent"])
        assert Decimal(rows[-1]["closing_balance"]) == major(c["closing"])
        assert all(re.fullmatch(r"2026-03-\d\d", r["date"]) for r in rows)
    else:
        assert sum(amounts) == major(c["totals"]["net"])
        assert Decimal(rows[-1]["balance_after"]) == major(c["closing"])
        assert rows[0]["occurred_at"].endswith("+05:30")


# --- samples and check ------------------------------------------------------------------------------


@pytest.mark.parametrize("contents", ["usage", "daywise", "transactions", "low-balance"])
def test_every_sample_renders_with_the_shipped_template_and_one_is_an_empty_period(contents: str) -> None:
    templates = load_templates(shipped.templates_dir())
    contexts = sample_contexts(contents)
    assert [c["empty"] for c in contexts].count(True) == 1
    for context in contexts:
        parts = templates.render(TEMPLATES[contents], context)
        assert parts.html is not None
        assert set(MONEY.findall(parts.text)) == set(MONEY.findall(parts.html))


REPORTS = """\
reports:
  - id: monthly-usage
    schedule: monthly on 1 at 08:00
    contents: usage
  - id: low
    schedule: daily at 07:00
    contents: low-balance
    notify: [ops@platform.example]
"""


def test_check_renders_report_templates_with_samples_and_names_the_line_of_a_typo(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "reports.yaml").write_text(REPORTS)
    assert len(load_set(rules, shipped.templates_dir()).reports) == 2
    templates = tmp_path / "templates"
    shutil.copytree(shipped.templates_dir(), templates)
    body = templates / "usage-report" / "body.txt"
    body.write_text(body.read_text() + "{{ currencies[0].spnt | money }}\n")
    with pytest.raises(ProblemsError) as caught:
        load_set(rules, templates)
    lines = len(body.read_text().splitlines())
    assert [str(p) for p in caught.value.problems] == [
        f"{body}:{lines}: 'dict object' has no attribute 'spnt'"
    ]
