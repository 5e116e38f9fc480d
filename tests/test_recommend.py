"""``balancewatch recommend ACCOUNT``, run in-process against SQLite and PostgreSQL.

The ledger is written as a billing system would (amounts in cents); the
command computes as of ``--at`` (the test clock), so nothing depends on today.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from balancewatch.cli import main
from tests.conftest import Clock
from tests.helpers import account, post

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Recommend = Callable[..., Result]


@pytest.fixture
def recommend(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db_url: str, clock: Clock
) -> Iterator[Recommend]:
    """Run ``balancewatch recommend ARGV --at <the test clock>`` and capture its output."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def invoke(*argv: str, **env: str) -> Result:
        environ = {
            "BALANCEWATCH_STATE_DIR": str(tmp_path / "state"),
            "BALANCEWATCH_LOG__LEVEL": "warning",
            "BALANCEWATCH_DATABASE__URL": db_url,
            **{f"BALANCEWATCH_{k.upper()}": v for k, v in env.items()},
        }
        capsys.readouterr()
        code = main(["recommend", *argv, "--at", clock().isoformat()], environ)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield invoke
    root.handlers[:], root.level = handlers, level  # the CLI sets up logging for a whole process


def ok(result: Result) -> str:
    assert (result.code, result.err) == (0, ""), result
    return result.out


def as_json(result: Result) -> dict[str, Any]:
    return json.loads(ok(result))


def busy(engine: Engine, clock: Clock, account_id: str = "acme", **kwargs: Any) -> None:
    """An account opened 40 days ago with $10,000.00 that used $42.00 a day for the last 30 days."""
    account(engine, account_id, name="Acme Ltd", **kwargs)
    post(engine, account_id, "USD", 1_000_000, clock() - 40 * DAY)
    for n in range(30):
        post(engine, account_id, "USD", -4_200, clock() - n * DAY - timedelta(hours=1))


def test_an_account_with_usage_gets_a_day_of_its_average_and_the_arithmetic(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    busy(engine, clock)

    out = ok(recommend("acme"))

    assert out.splitlines() == [
        "acme (Acme Ltd): recommended alert thresholds, 1 day of average usage, as of 2026-03-01 09:00 UTC",
        "",
        "USD: recommended alert at $42.00",
        "  window:       the last 30 days, 2026-01-30 09:00 UTC to 2026-03-01 09:00 UTC",
        "  total usage:  $1,260.00",
        "  days counted: 30",
        "  first entry:  2026-01-20 09:00 UTC",
        "  average:      $1,260.00 ÷ 30 days = $42.00 a day",
        "  recommended:  $42.00 × 1 day = $42.00",
        "  balance:      $8,740.00, about 208 days at that rate",
    ]


def test_as_json_the_recommendation_carries_exact_amounts_and_every_figure(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    busy(engine, clock)

    data = as_json(recommend("acme", "--json"))

    assert (data["account"], data["paying_account"], data["subaccount"]) == ("acme", "acme", False)
    assert (data["recommend_days"], data["min_history_days"]) == ("1", "3")
    [usd] = data["currencies"]
    assert usd == {
        "currency": "USD",
        "status": "ok",
        "reason": None,
        "recommended": "42.00",
        "recommended_minor": 4_200,
        "window_days": 30,
        "window_start": "2026-01-30T09:00:00+00:00",
        "window_end": "2026-03-01T09:00:00+00:00",
        "usage_total": "1260.00",
        "usage_total_minor": 126_000,
        "days_counted": "30.00",
        "first_at": "2026-01-20T09:00:00+00:00",
        "adu": "42.00",
        "adu_minor": 4_200,
        "balance": "8740.00",
        "balance_minor": 874_000,
        "runway_days": "208.0",
    }


def test_the_recommendation_is_the_configured_number_of_days_of_usage(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    busy(engine, clock)

    out = ok(recommend("acme", usage__recommend_days="2.5"))

    assert "USD: recommended alert at $105.00\n" in out
    assert "  recommended:  $42.00 × 2.5 days = $105.00\n" in out


def test_three_days_of_history_are_enough_and_only_those_days_count(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    account(engine, "fresh", name="Fresh Ltd")
    post(engine, "fresh", "USD", 10_000, clock() - 3 * DAY)
    post(engine, "fresh", "USD", -6_000, clock() - DAY)

    out = ok(recommend("fresh"))

    assert "USD: recommended alert at $20.00\n" in out
    assert "  days counted: 3\n" in out
    assert "  average:      $60.00 ÷ 3 days = $20.00 a day\n" in out


def test_with_less_history_the_recommendation_says_how_much_there_is_and_how_much_is_needed(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    account(engine, "fresh", name="Fresh Ltd")
    post(engine, "fresh", "USD", 10_000, clock() - timedelta(days=2, hours=12))
    post(engine, "fresh", "USD", -6_000, clock() - DAY)

    out = ok(recommend("fresh"))
    data = as_json(recommend("fresh", "--json"))

    assert "USD: no recommendation: not enough history: 2.5 days since the first entry; 3 needed\n" in out
    assert "average:" not in out
    [usd] = data["currencies"]
    assert (usd["status"], usd["recommended"], usd["adu"], usd["usage_total"]) == (
        "short-history",
        None,
        None,
        "60.00",
    )
    assert usd["reason"] == "not enough history: 2.5 days since the first entry; 3 needed"


def test_an_account_without_usage_gets_no_recommendation_and_is_told_why(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    account(engine, "idle", name="Idle Ltd")
    post(engine, "idle", "USD", 50_000, clock() - 40 * DAY)
    post(engine, "idle", "USD", -1_000, clock() - 31 * DAY)  # before the window

    out = ok(recommend("idle"))
    [usd] = as_json(recommend("idle", "--json"))["currencies"]

    assert "USD: no recommendation: no usage in the last 30 days\n" in out
    assert "  total usage:  $0.00\n" in out
    assert (usd["status"], usd["reason"], usd["recommended"]) == (
        "no-usage",
        "no usage in the last 30 days",
        None,
    )


def test_a_subaccount_is_shown_its_main_accounts_recommendation_with_every_subaccounts_usage(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    busy(engine, clock)
    account(engine, "acme-eu", name="Acme Europe", parent_id="acme")
    post(engine, "acme-eu", "USD", -30_000, clock() - 2 * DAY)  # $300.00 more: $52.00 a day

    out = ok(recommend("acme-eu"))
    data = as_json(recommend("acme-eu", "--json"))

    assert out.startswith(
        "acme-eu (Acme Europe) is a subaccount: it draws on acme's balance, so this is acme's "
        "recommendation (the usage of acme and its subaccounts together).\n\n"
        "acme (Acme Ltd): recommended alert thresholds"
    )
    assert "USD: recommended alert at $52.00\n" in out
    assert (data["account"], data["paying_account"], data["subaccount"]) == ("acme-eu", "acme", True)
    assert data["currencies"][0]["usage_total"] == "1560.00"


def test_each_currency_of_the_balance_is_recommended_in_the_accounts_locale(
    engine: Engine, recommend: Recommend, clock: Clock
) -> None:
    busy(engine, clock, locale="en_IN")
    post(engine, "acme", "INR", 10_000_000, clock() - 40 * DAY)
    post(engine, "acme", "INR", -3_000_000, clock() - 10 * DAY)

    out = ok(recommend("acme"))

    assert out.index("\nINR: ") < out.index("\nUSD: ")
    assert "INR: recommended alert at ₹1,000.00\n" in out  # ₹30,000.00 over 30 days
    assert "  balance:      ₹70,000.00, about 70 days at that rate\n" in out
    assert "  total usage:  ₹30,000.00\n" in out
    assert "  balance:      $8,740.00" in out


def test_an_account_without_a_balance_has_nothing_to_recommend(engine: Engine, recommend: Recommend) -> None:
    account(engine, "new", name="New Ltd")

    assert "new has no balance yet: nothing to recommend.\n" in ok(recommend("new"))


def test_an_unknown_account_is_an_error(recommend: Recommend) -> None:
    result = recommend("nobody")

    assert (result.code, result.out) == (1, "")
    assert result.err == "balancewatch recommend: no account 'nobody'\n"
