"""The data of ``bench_reports.py`` (seeded, reproducible): N prepaid accounts in four timezones, one
USD balance each, and the ledger of October 2026, written to SQLite (``executemany``) or PostgreSQL
(``COPY``, then ``VACUUM ANALYZE``). See that script's docstring for the shape.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    from tests.bench import common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import common  # type: ignore[no-redef]

ZONES = (("UTC", 0.40), ("Europe/Berlin", 0.30), ("America/New_York", 0.20), ("Asia/Kolkata", 0.10))
IDLE_SHARE = 0.02
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 31


def zone_of(i: int, rng: random.Random) -> str:
    u, total = rng.random(), 0.0
    for zone, share in ZONES:
        total += share
        if u < total:
            return zone
    return ZONES[-1][0]


@dataclass(frozen=True)
class Plan:
    """Who is in which zone and who posts nothing."""

    zones: list[str]
    idle: set[int]


def plan(n: int, rng: random.Random) -> Plan:
    zones = [zone_of(i, rng) for i in range(n)]
    idle = set(rng.sample(range(n), int(n * IDLE_SHARE)))
    return Plan(zones, idle)


def ledger_rows(n: int, per_day: int, p: Plan, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """(account, amount, kind, service, quantity, occurred_at) in account then time order."""
    for i in range(n):
        if i in p.idle:
            continue
        a = common.account_id(i)
        yield (a, 500_000, "top-up", None, None, MONTH_START + timedelta(seconds=rng.randrange(3600)))
        for day in range(DAYS):
            base = MONTH_START + timedelta(days=day)
            for s in sorted(rng.randrange(86_400) for _ in range(per_day)):
                service = "sms" if rng.random() < 0.8 else "voice"
                quantity = rng.randint(1, 400)
                yield (a, -rng.randint(1, 2_000), "usage", service, quantity, base + timedelta(seconds=s))


def generate_sqlite(path: Path, n: int, per_day: int, p: Plan, rng: random.Random) -> int:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("BEGIN")
    created = common.sqlite_time(MONTH_START - timedelta(days=200))
    conn.executemany(
        "INSERT INTO account (id, name, owner_email, billing, timezone, locale, labels, parent_id,"
        " enabled, created_at) VALUES (?, ?, ?, 'prepaid', ?, NULL, '{}', NULL, 1, ?)",
        (
            (common.account_id(i), f"Customer {i}", f"owner{i}@example.com", p.zones[i], created)
            for i in range(n)
        ),
    )
    conn.executemany(
        "INSERT INTO balance (account_id, currency, amount, updated_at) VALUES (?, 'USD', ?, ?)",
        ((common.account_id(i), rng.randint(1_000, 1_000_000), created) for i in range(n)),
    )
    rows = 0

    def counted() -> Iterator[tuple[Any, ...]]:
        nonlocal rows
        for a, amount, kind, service, quantity, at in ledger_rows(n, per_day, p, rng):
            rows += 1
            yield (a, amount, kind, service, quantity, common.sqlite_time(at))

    conn.executemany(
        "INSERT INTO ledger_entry (account_id, currency, amount, kind, service, quantity, occurred_at)"
        " VALUES (?, 'USD', ?, ?, ?, ?, ?)",
        counted(),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows


def generate_postgres(url: str, n: int, per_day: int, p: Plan, rng: random.Random) -> int:
    import psycopg

    created = MONTH_START - timedelta(days=200)
    rows = 0
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY account (id, name, owner_email, billing, timezone, labels, enabled, created_at)"
                " FROM STDIN"
            ) as copy:
                for i in range(n):
                    copy.write_row(
                        (
                            common.account_id(i),
                            f"Customer {i}",
                            f"owner{i}@example.com",
                            "prepaid",
                            p.zones[i],
                            "{}",
                            True,
                            created,
                        )
                    )
            with cur.copy("COPY balance (account_id, currency, amount, updated_at) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((common.account_id(i), "USD", rng.randint(1_000, 1_000_000), created))
            with cur.copy(
                "COPY ledger_entry (account_id, currency, amount, kind, service, quantity, occurred_at)"
                " FROM STDIN"
            ) as copy:
                for a, amount, kind, service, quantity, at in ledger_rows(n, per_day, p, rng):
                    rows += 1
                    copy.write_row((a, "USD", amount, kind, service, quantity, at))
        conn.commit()
        conn.autocommit = True
        for table in ("account", "balance", "ledger_entry"):
            conn.execute(f"VACUUM ANALYZE {table}")
    return rows
