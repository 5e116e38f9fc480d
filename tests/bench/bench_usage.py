"""Average daily usage benchmark: the daemon's full refresh against one hand-written GROUP BY.

Not a test: it prints seconds, the ratio and the target, says MEETS or MISSES,
and exits 0. The figures and the command are recorded in docs/performance.md.

    python tests/bench/bench_usage.py --accounts 100000
    python tests/bench/bench_usage.py --backend postgres --accounts 100000 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test

Data (seeded, reproducible). N accounts, prepaid and enabled, and 90 days of
ledger before "now", written in time order as a billing system writes it:

    2 %   subaccounts of a random main account: their own usage, no top-ups
    3 %   young main accounts: their first entry 0.5 .. 25 days ago (under the
          3-day minimum, some of them: short history)
    2 %   main accounts that stopped using the service 35 .. 80 days ago
    rest  main accounts with 90 days of history

Every account that uses the service posts 2 .. 4 usage debits a day (the rate
drawn per account, each debit at a random second of the day, 1 .. 1,000 USD a
day, log-uniform per account); 3 % of main accounts also use EUR, one or two
debits a day. Every main account is topped up weekly (its first entry is a
top-up); about 3 % of accounts get a refund and 2 % an adjustment. So about
3.2 entries per account per day: some 29 million entries at 100,000 accounts,
one third of them in the 30-day window. Generation (SQLite: ``executemany`` in
large batches; PostgreSQL: ``COPY``, then ``VACUUM ANALYZE``) is not measured.
SQLite gets no ``ANALYZE``: the daemon does not run one.

Measured in a child process, so that generating the data does not count
toward its peak RSS, each side warmed once, medians of ``--repeat``:

1. the daemon's full refresh: ``usage_delta.catch_up`` made to read the
   whole window, as the daemon does once a day (``usage.full_refresh``) and at
   start: one grouped scan of the window by account, each account's totals
   written to ``usage_member``, every summary row computed from them (the
   first entries by index seeks) and written, the mark, one transaction.
   Each repeat moves ``now`` an hour on, so every row is rewritten. (The
   hourly refresh reads only new entries: ``bench_usage_delta.py``);
2. the floor: ``SELECT account_id, currency, SUM(amount) FROM ledger_entry
   WHERE kind = 'usage' AND occurred_at >= :start GROUP BY account_id,
   currency`` over the same window, executed and fully fetched from Python
   through the same engine;
3. the refresh's grouped scan alone (executed and fetched, nothing written),
   so that what writing costs is visible;
4. the child's peak resident set size (``VmHWM``).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    from tests.bench import common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import common  # type: ignore[no-redef]

TARGET = 1.5  # refresh / floor

T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # "now" when the data was generated
HISTORY_DAYS = 90
WINDOW_DAYS = 30
DAY = timedelta(days=1)
MIN_HISTORY = timedelta(days=3)  # the configured default

SUB_SHARE, YOUNG_SHARE, STOPPED_SHARE, EUR_SHARE = 0.02, 0.03, 0.02, 0.03
REFUND_SHARE, ADJUSTMENT_SHARE = 0.03, 0.02
PER_DAY = (2, 4)  # usage debits a day, drawn per account
DAILY_CENTS = (100, 100_000)  # usage a day, log-uniform per account
SERVICES = ("sms", "voice", "data")

FLOOR = (
    "SELECT account_id, currency, SUM(amount) FROM ledger_entry"
    " WHERE kind = 'usage' AND occurred_at >= :start GROUP BY account_id, currency"
)

# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Profile:
    """How one account uses the service: in seconds since the start of the history."""

    account: str
    parent: str | None
    start: int  # its first entry
    stop: int  # no usage from here on
    per_day: int
    daily: int  # cents a day
    eur_per_day: int  # 0: USD only
    refund_at: int | None
    adjustment_at: int | None


def profiles(n: int, rng: random.Random) -> list[Profile]:
    """The accounts, as described in the module's docstring."""
    span = HISTORY_DAYS * 86_400
    out: list[Profile] = []
    mains: list[str] = []
    for i in range(n):
        aid = common.account_id(i)
        sub = bool(mains) and rng.random() < SUB_SHARE
        u = rng.random()
        start, stop = 0, span
        if not sub and u < YOUNG_SHARE:
            start = span - int(rng.uniform(0.5, 25) * 86_400)
        elif not sub and u < YOUNG_SHARE + STOPPED_SHARE:
            stop = span - int(rng.uniform(35, 80) * 86_400)
        elif sub:
            start = rng.randrange(0, span // 2)
        out.append(
            Profile(
                account=aid,
                parent=rng.choice(mains) if sub else None,
                start=start,
                stop=stop,
                per_day=rng.randint(*PER_DAY),
                daily=int(math.exp(rng.uniform(math.log(DAILY_CENTS[0]), math.log(DAILY_CENTS[1])))),
                eur_per_day=rng.randint(1, 2) if not sub and rng.random() < EUR_SHARE else 0,
                refund_at=rng.randrange(start, span) if rng.random() < REFUND_SHARE else None,
                adjustment_at=rng.randrange(start, span) if rng.random() < ADJUSTMENT_SHARE else None,
            )
        )
        if not sub:
            mains.append(aid)
    return out


# One ledger row: (account_id, currency, amount, kind, service, quantity, occurred_at, reference)
Row = tuple[str, str, int, str, str | None, int | None, str, str | None]


def ledger_days(accounts: Sequence[Profile], rng: random.Random) -> Iterator[list[Row]]:
    """The ledger, one day at a time, each day's entries in time order."""
    base = T0 - timedelta(days=HISTORY_DAYS)
    day_text = [(base + timedelta(days=d)).strftime("%Y-%m-%d") for d in range(HISTORY_DAYS)]

    def at(second: int) -> str:
        d, s = divmod(second, 86_400)
        return f"{day_text[d]} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.000000"

    topups: dict[str, int] = {}
    for d in range(HISTORY_DAYS):
        lo, hi = d * 86_400, (d + 1) * 86_400
        day: list[tuple[int, Row]] = []
        for p in accounts:
            if p.start >= hi:
                continue
            first = max(lo, p.start)
            if p.parent is None and (p.start >= lo or (d - p.start // 86_400) % 7 == 0) and first < p.stop:
                # Weekly top-ups: a week of usage, rounded to the dollar; the first entry of a main account.
                n = topups[p.account] = topups.get(p.account, 0) + 1
                amount = max(100, p.daily * 7 // 100 * 100)
                day.append((first, (p.account, "USD", amount, "top-up", None, None, at(first), f"top-{n}")))
            if first < p.stop:
                spent = max(1, p.daily // p.per_day)
                for _ in range(p.per_day):
                    t = rng.randrange(first, hi)
                    if t < p.stop:
                        amount = -max(1, int(spent * rng.uniform(0.5, 1.5)))
                        service = SERVICES[t % 3]
                        row = (p.account, "USD", amount, "usage", service, -amount, at(t), None)
                        day.append((t, row))
                for _ in range(p.eur_per_day):
                    t = rng.randrange(first, hi)
                    if t < p.stop:
                        amount = -max(1, int(spent * rng.uniform(0.2, 0.6)))
                        day.append((t, (p.account, "EUR", amount, "usage", "sms", -amount, at(t), None)))
            for when, kind, sign in ((p.refund_at, "refund", 1), (p.adjustment_at, "adjustment", -1)):
                if when is not None and lo <= when < hi:
                    row = (p.account, "USD", sign * max(1, p.daily // 3), kind, None, None, at(when), None)
                    day.append((when, row))
        day.sort(key=lambda e: e[0])
        yield [row for _, row in day]


# Each paying account's balance is its ledger's sum, as the billing system keeps it.
BALANCES = (
    "INSERT INTO balance (account_id, currency, amount, updated_at)"
    " SELECT COALESCE(a.parent_id, a.id), l.currency, SUM(l.amount), :now"
    " FROM ledger_entry l JOIN account a ON a.id = l.account_id"
    " GROUP BY COALESCE(a.parent_id, a.id), l.currency"
)


def generate_sqlite(path: Path, accounts: Sequence[Profile], rng: random.Random) -> int:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-4194304")  # 4 GB: the indexes stay in memory while they grow
    created = (T0 - timedelta(days=400)).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO account (id, name, owner_email, billing, timezone, locale, labels, parent_id,"
        " enabled, created_at) VALUES (?, ?, ?, 'prepaid', NULL, NULL, '{}', ?, 1, ?)",
        (
            (p.account, f"Customer {p.account}", f"owner-{p.account}@example.com", p.parent, created)
            for p in accounts
        ),
    )
    total = 0
    insert = (
        "INSERT INTO ledger_entry (account_id, currency, amount, kind, service, quantity, occurred_at,"
        " reference) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for rows in ledger_days(accounts, rng):
        conn.executemany(insert, rows)
        total += len(rows)
    conn.execute(BALANCES, {"now": T0.strftime("%Y-%m-%d %H:%M:%S.%f")})
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return total


def generate_postgres(url: str, accounts: Sequence[Profile], rng: random.Random) -> int:
    import psycopg

    total = 0
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY account (id, name, owner_email, billing, labels, parent_id, enabled, created_at)"
                " FROM STDIN"
            ) as copy:
                for p in accounts:
                    name, email = f"Customer {p.account}", f"owner-{p.account}@example.com"
                    copy.write_row((p.account, name, email, "prepaid", "{}", p.parent, True, T0 - 400 * DAY))
            with cur.copy(
                "COPY ledger_entry (account_id, currency, amount, kind, service, quantity, occurred_at,"
                " reference) FROM STDIN"
            ) as copy:
                for rows in ledger_days(accounts, rng):
                    for row in rows:
                        copy.write_row((*row[:6], row[6] + "+00", row[7]))
                    total += len(rows)
            cur.execute(BALANCES.replace(":now", "%(now)s"), {"now": T0})
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE balance")
        conn.execute("VACUUM ANALYZE account")
        conn.execute("VACUUM ANALYZE ledger_entry")
    return total


# --------------------------------------------------------------------------- the measured process


@dataclass
class Results:
    backend: str
    accounts: int
    repeat: int
    subaccounts: int = 0
    entries: int = 0
    entries_in_window: int = 0
    refresh_s: list[float] = field(default_factory=list)
    refresh_rows: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    query_s: list[float] = field(default_factory=list)
    query_rows: int = 0
    floor_s: list[float] = field(default_factory=list)
    floor_rows: int = 0
    first_refresh_s: float = 0.0
    rss_setup_mb: float = 0.0
    rss_peak_mb: float = 0.0


def run_child(params: dict[str, Any]) -> Results:
    """The daemon's side and the floor, in this process."""
    from sqlalchemy import bindparam, func, select, text

    from balancewatch.evaluate import usage_delta
    from balancewatch.store.db import make_engine
    from balancewatch.store.tables import UsageSummary, UTCDateTime

    res = Results(params["backend"], params["accounts"], params["repeat"])
    engine = make_engine(params["url"])
    floor = text(FLOOR).bindparams(bindparam("start", type_=UTCDateTime()))
    summary = UsageSummary.__table__  # type: ignore[attr-defined]

    def fetch_floor(now: datetime) -> int:
        with engine.connect().execution_options(readonly=True) as conn:
            return len(conn.execute(floor, {"start": now - WINDOW_DAYS * DAY}).all())

    def fetch_query(now: datetime) -> int:
        with engine.connect().execution_options(readonly=True) as conn:
            return len(conn.execute(usage_delta.usage_by_account(now, WINDOW_DAYS)).all())

    def refresh(now: datetime) -> int:
        # full_every 0: the daemon's full refresh every time, as it runs once a day
        caught_up = usage_delta.catch_up(engine, now, {WINDOW_DAYS}, MIN_HISTORY, timedelta(0))
        return caught_up.rows

    with engine.connect():  # the pool's first connection opens outside the timings
        pass
    res.rss_setup_mb = common.proc_status_kb("VmRSS") / 1024

    # The first refresh writes every row (later ones rewrite them); reported, not a target.
    res.first_refresh_s, _ = common.timed(lambda: refresh(T0))
    fetch_floor(T0)
    fetch_query(T0)
    for k in range(params["repeat"]):
        now = T0 + (k + 1) * timedelta(hours=1)
        dt, res.floor_rows = common.timed(lambda: fetch_floor(now))  # noqa: B023
        res.floor_s.append(dt)
        dt, res.query_rows = common.timed(lambda: fetch_query(now))  # noqa: B023
        res.query_s.append(dt)
        dt, res.refresh_rows = common.timed(lambda: refresh(now))  # noqa: B023
        res.refresh_s.append(dt)
    res.rss_peak_mb = common.proc_status_kb("VmHWM") / 1024

    c = summary.c
    with engine.connect() as conn:
        res.statuses = dict(
            conn.execute(select(c.status, func.count()).group_by(c.status).order_by(c.status)).all()
        )
        res.entries = conn.execute(text("SELECT COUNT(*) FROM ledger_entry")).scalar_one()
        start = {"start": T0 - WINDOW_DAYS * DAY}
        res.entries_in_window = conn.execute(
            text("SELECT COUNT(*) FROM ledger_entry WHERE occurred_at >= :start").bindparams(
                bindparam("start", type_=UTCDateTime())
            ),
            start,
        ).scalar_one()
        res.subaccounts = conn.execute(
            text("SELECT COUNT(*) FROM account WHERE parent_id IS NOT NULL")
        ).scalar_one()
    engine.dispose()
    return res


# --------------------------------------------------------------------------- report


def report(res: Results, command: str, generation_s: float) -> str:
    """The table: seconds, the ratio against the floor, the target, MEETS or MISSES."""
    refresh, query, floor = common.med(res.refresh_s), common.med(res.query_s), common.med(res.floor_s)
    ratio = refresh / floor
    statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(res.statuses.items()))
    head = f"{'':34} {'daemon':>9} {'floor':>9} {'ratio':>7} {'target':>9}  result"
    return "\n".join(
        [
            f"balancewatch usage benchmark: {res.backend}, {res.accounts:,} accounts "
            f"({res.subaccounts:,} subaccounts), {res.entries:,} ledger entries over {HISTORY_DAYS} days "
            f"({res.entries_in_window:,} in the {WINDOW_DAYS}-day window), medians of {res.repeat}",
            f"command: {command}",
            f"generation (not measured): {generation_s:.1f} s",
            f"first refresh (writes every row; not a target): {res.first_refresh_s:.3f} s",
            "",
            head,
            f"{'(a) full refresh, 30-day window':34} {refresh:>8.3f}s {floor:>8.3f}s {ratio:>6.2f}x "
            f"{f'<= {TARGET:g}x':>9}  {common.verdict(ratio <= TARGET)}",
            f"{'    its grouped scan alone':34} {query:>8.3f}s {'':>9} {query / floor:>6.2f}x",
            f"{'    writing (the rest)':34} {refresh - query:>8.3f}s",
            f"{'(b) peak RSS of the daemon':34} {res.rss_peak_mb:>7.0f}MB  (no target)",
            "",
            f"(a) refresh wrote {res.refresh_rows:,} summary rows ({statuses}); its scan returned "
            f"{res.query_rows:,} rows; the floor {res.floor_rows:,}",
            f"(b) RSS after setup {res.rss_setup_mb:.0f} MB",
            "",
            f"floor: {FLOOR}",
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.bench_parser(__doc__, accounts=100_000)
    common.add_database_options(p)
    common.add_output_options(p, seed=20261127)
    args = p.parse_args(argv)
    if args.accounts < 50 or args.repeat < 1:
        p.error("--accounts must be at least 50 and --repeat at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return common.child_main(args.child, run_child)

    with common.bench_database(args, "bw-bench-usage-") as db:
        t = time.perf_counter()
        db.upgrade()
        rng = random.Random(args.seed)
        accounts = profiles(args.accounts, rng)
        if db.backend == "postgres":
            generate_postgres(db.libpq_url, accounts, rng)
        else:
            generate_sqlite(db.sqlite_path, accounts, rng)
        del accounts
        generation_s = time.perf_counter() - t

        params = {"backend": args.backend, "accounts": args.accounts, "repeat": args.repeat, "url": db.url}
        res = Results(**common.run_in_child(__file__, db.work, params))
        common.publish(report(res, common.command_line(__file__, argv), generation_s), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
