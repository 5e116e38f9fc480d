"""Bulk writes (``store.bulk.insert_rows``) store every value as a row-by-row insert would.

On PostgreSQL the rows travel as the text of one array literal per column: text with quotes,
backslashes, braces, commas, spaces, the word NULL, empty strings and non-ASCII letters;
times in other zones; NULLs; numbers; and upserts that replace or add.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select

from balancewatch.evaluate.usage_payers import among
from balancewatch.store.bulk import array_literal, insert_rows
from balancewatch.store.db import upgrade
from balancewatch.store.tables import USAGE_MEMBER_TABLE, USAGE_SUMMARY_TABLE
from tests.conftest import postgres_engine

AWKWARD = [
    'quote " inside',
    "back\\slash",
    '\\"both',
    "{braces}",
    "a,b",
    " spaced ",
    "NULL",
    "",
    "Zürich – 東京",
    "ends with \\",
    "tab\tand\nnewline",
]
T = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)


def summary_rows(now: datetime) -> list[dict[str, object]]:
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    return [
        {
            "account_id": account,
            "currency": "USD",
            "window_days": 30,
            "usage_total": 10**12 + n,
            "first_at": None if n % 3 == 0 else (T - timedelta(days=n)).astimezone(zones[n % 3]),
            "days_counted": 0.01 * n,
            "adu": None if n % 2 else n * 7,
            "status": "ok" if n % 2 == 0 else "short-history",
            "computed_at": now,
        }
        for n, account in enumerate(AWKWARD)
    ]


def stored(engine: Engine) -> dict[str, tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(select(USAGE_SUMMARY_TABLE)).all()
    return {r.account_id: (r.usage_total, r.first_at, float(r.days_counted), r.adu, r.status) for r in rows}


def test_awkward_values_are_stored_as_given(engine: Engine) -> None:
    upgrade(engine)
    rows = summary_rows(T)
    with engine.begin() as conn:
        insert_rows(conn, USAGE_SUMMARY_TABLE, rows)
    found = stored(engine)
    assert sorted(found) == sorted(AWKWARD)
    for row in rows:
        first = row["first_at"]
        expected_first = None if first is None else first.astimezone(UTC)  # type: ignore[attr-defined]
        assert found[str(row["account_id"])] == (
            row["usage_total"],
            expected_first,
            pytest.approx(row["days_counted"]),
            row["adu"],
            row["status"],
        )


def test_an_upsert_replaces_and_adds(engine: Engine) -> None:
    upgrade(engine)
    key = ("account_id", "currency", "window_days")
    members = [
        {"account_id": account, "currency": "EUR", "window_days": 7, "used": 100 + n, "entries": 1}
        for n, account in enumerate(AWKWARD)
    ]
    with engine.begin() as conn:
        insert_rows(conn, USAGE_MEMBER_TABLE, members, conflict=key, add=("used", "entries"))
        insert_rows(conn, USAGE_MEMBER_TABLE, members[:4], conflict=key, add=("used", "entries"))
        insert_rows(conn, USAGE_SUMMARY_TABLE, summary_rows(T))
        later = [{**row, "status": "no-usage", "adu": None} for row in summary_rows(T + timedelta(hours=1))]
        insert_rows(
            conn, USAGE_SUMMARY_TABLE, later[:3], conflict=(*key,), update=("status", "adu", "computed_at")
        )
    with engine.connect() as conn:
        used = {r.account_id: (r.used, r.entries) for r in conn.execute(select(USAGE_MEMBER_TABLE))}
    assert used == {
        account: ((100 + n) * (2 if n < 4 else 1), 2 if n < 4 else 1) for n, account in enumerate(AWKWARD)
    }
    statuses = {account: status for account, (*_rest, status) in stored(engine).items()}
    assert [statuses[account] for account in AWKWARD[:4]] == ["no-usage"] * 3 + ["short-history"]


@pytest.mark.parametrize(
    ("values", "literal"),
    [
        ([], "{}"),
        (["a", 'b"c', "d\\e"], '{"a","b\\"c","d\\\\e"}'),
        ([1, -2, 10**15], "{1,-2,1000000000000000}"),
        ([1, None], "{1,NULL}"),
        ([None, "x"], '{NULL,"x"}'),
        ([True, False, None], "{true,false,NULL}"),
        ([Decimal("1.50"), 2.5], "{1.50,2.5}"),
        ([T], "{2026-03-29T01:30:15.123456+00:00}"),
    ],
)
def test_array_literal(values: list[object], literal: str) -> None:
    assert array_literal(values) == literal


@pytest.mark.parametrize("value", [datetime(2026, 1, 1), object(), b"bytes"])
def test_array_literal_refuses_what_it_cannot_write(value: object) -> None:
    with pytest.raises(TypeError, match="cannot be written in bulk"):
        array_literal(["x", value])


@pytest.mark.postgres
def test_an_id_list_reaches_postgresql_as_a_constant() -> None:
    """Bound as text and cast by the server, the array would be parsed again for every row a
    filter tests (a chunk's payers against 100,000 summary rows: seconds). The plan shows the
    array as a constant."""
    for engine in postgres_engine("t_" + uuid.uuid4().hex[:12]):
        upgrade(engine)
        plan = _plan(engine)
    assert '= ANY (\'{a,"b\\"c"}\'::' in plan, plan
    assert "cstring" not in plan, plan


def _plan(engine: Engine) -> str:
    with engine.connect() as conn:
        wanted = among(conn, USAGE_SUMMARY_TABLE.c.account_id, ["a", 'b"c'])
        query = select(USAGE_SUMMARY_TABLE.c.account_id).where(wanted)
        compiled = query.compile(conn)
        explained = conn.exec_driver_sql(f"EXPLAIN {compiled.string}", compiled.params).all()
    return "\n".join(row[0] for row in explained)
