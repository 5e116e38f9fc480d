"""Usage refreshed from new entries: an hour of new usage against a full refresh, same run.

Not a test: it prints seconds, says MEETS or MISSES against the target (a
refresh after an hour of new usage under ``TARGET_S``) and exits 0. The figures
and the command are recorded in docs/performance.md.

    python tests/bench/bench_usage_delta.py --accounts 100000
    python tests/bench/bench_usage_delta.py --backend postgres --accounts 100000 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test

Data: ``bench_usage``'s ledger (same accounts, rates and mix, seeded), over
``--days`` of history (default 40: the 30-day window is full and entries leave
it as it moves; the cost of a refresh from changes does not depend on older
history). Then, in a child process:

1. a full refresh ten minutes after the data ends (``usage_delta.catch_up``: the summary, each
   account's own totals, the mark), timed;
2. ``--repeat`` times: an hour of new usage is written as a billing system
   writes it, not timed: every account that uses the service posts its hourly
   share of debits (about ``accounts * 3.2 / 24`` entries: 12,500 at 100,000
   accounts), 1 % of them back-dated by up to 20 days, and the balance of each
   account that posted is updated at its last debit of the hour; then the
   refresh an hour later, timed;
3. after the last one, the summary is compared with a full refresh at the same
   moment (run in a transaction rolled back): every row must be equal.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

try:
    from tests.bench import bench_usage, common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import bench_usage  # type: ignore[no-redef]
    import common  # type: ignore[no-redef]

TARGET_S = 1.0  # an hour of new usage at 100,000 accounts: "well under a second"
HOUR = timedelta(hours=1)
BACKDATED_SHARE = 0.01


@dataclass
class Results:
    backend: str
    accounts: int
    repeat: int
    entries: int = 0
    full_s: float = 0.0
    delta_s: list[float] = field(default_factory=list)
    new_entries: list[int] = field(default_factory=list)
    read_entries: list[int] = field(default_factory=list)
    rows_written: list[int] = field(default_factory=list)
    summary_rows: int = 0
    equal: bool = False
    differing: int = 0


def hour_of_usage(conn: Any, rng: random.Random, start: datetime, users: Sequence[tuple[str, float]]) -> int:
    """Write an hour of usage after ``start`` for ``users`` (account, debits an hour); the
    balances of those who posted move. Returns the entries written."""
    from sqlalchemy import bindparam, insert, update

    from balancewatch.store.tables import BALANCE_TABLE, LEDGER_TABLE

    rows = []
    for account, per_hour in users:
        count = int(per_hour) + (rng.random() < per_hour % 1)
        for _ in range(count):
            at = start + HOUR * rng.random()
            if rng.random() < BACKDATED_SHARE:
                at -= timedelta(days=20) * rng.random()
            rows.append(
                {
                    "account_id": account,
                    "currency": "USD",
                    "amount": -rng.randint(1, 5000),
                    "kind": "usage",
                    "service": "sms",
                    "occurred_at": at,
                }
            )
    for i in range(0, len(rows), 5000):
        conn.execute(insert(LEDGER_TABLE), rows[i : i + 5000])
    # Each balance moves when its account's last debit of the hour is posted.
    moved: dict[str, datetime] = {}
    for row in rows:
        moved[row["account_id"]] = max(moved.get(row["account_id"], start), row["occurred_at"])
    conn.execute(
        update(BALANCE_TABLE)
        .where(BALANCE_TABLE.c.account_id == bindparam("account"), BALANCE_TABLE.c.currency == "USD")
        .values(updated_at=bindparam("at")),
        [{"account": account, "at": at} for account, at in sorted(moved.items())],
    )
    return len(rows)


def run_child(params: dict[str, Any]) -> Results:
    from sqlalchemy import select, text

    from balancewatch.evaluate import usage, usage_delta
    from balancewatch.store.db import make_engine
    from balancewatch.store.tables import USAGE_SUMMARY_TABLE

    res = Results(params["backend"], params["accounts"], params["repeat"])
    engine = make_engine(params["url"])
    windows, minimum, full_every = {bench_usage.WINDOW_DAYS}, bench_usage.MIN_HISTORY, timedelta(days=1)
    rng = random.Random(params["seed"])
    users = [(account, per_day / 24) for account, per_day in params["users"]]

    def catch_up(now: datetime) -> usage_delta.CaughtUp:
        return usage_delta.catch_up(engine, now, windows, minimum, full_every)

    # Ten minutes on: the generated balances' last change (at T0) is behind the refreshes.
    now = bench_usage.T0 + timedelta(minutes=10)
    res.full_s, _ = common.timed(lambda: catch_up(now))
    for _ in range(params["repeat"]):
        with engine.begin() as conn:
            res.new_entries.append(hour_of_usage(conn, rng, now, users))
        now += HOUR
        elapsed, caught_up = common.timed(lambda: catch_up(now))  # noqa: B023
        assert not caught_up.full
        res.delta_s.append(elapsed)
        res.read_entries.append(caught_up.entries)
        res.rows_written.append(caught_up.rows)

    def rows(conn: Any) -> dict[tuple[str, str, int], tuple[Any, ...]]:
        found = conn.execute(select(USAGE_SUMMARY_TABLE)).all()
        return {
            (r.account_id, r.currency, r.window_days): (r.usage_total, r.first_at, r.adu, r.status)
            for r in found
        }

    with engine.connect() as conn:
        kept = rows(conn)
    with engine.connect() as conn:
        transaction = conn.begin()
        usage.refresh(conn, now, windows, minimum)
        full = rows(conn)
        transaction.rollback()
    with engine.connect() as conn:
        res.entries = conn.execute(text("SELECT COUNT(*) FROM ledger_entry")).scalar_one()
    res.summary_rows = len(full)
    res.equal = kept == full
    res.differing = len(set(kept.items()) ^ set(full.items()))
    engine.dispose()
    return res


def report(res: Results, command: str, generation_s: float) -> str:
    delta = common.med(res.delta_s)
    return "\n".join(
        [
            f"balancewatch incremental usage benchmark: {res.backend}, {res.accounts:,} accounts, "
            f"{res.entries:,} ledger entries at the end, medians of {res.repeat}",
            f"command: {command}",
            f"generation (not measured): {generation_s:.1f} s",
            "",
            f"{'':44} {'seconds':>9} {'target':>9}  result",
            f"{'full refresh (the whole window)':44} {res.full_s:>8.3f}s",
            f"{'refresh after an hour of new usage':44} {delta:>8.3f}s {f'< {TARGET_S:g}s':>9}  "
            f"{common.verdict(delta < TARGET_S)}",
            f"{'    against the full refresh':44} {delta / res.full_s:>8.1%}",
            "",
            f"each hour: {common.med([float(n) for n in res.new_entries]):,.0f} new entries "
            f"({BACKDATED_SHARE:.0%} back-dated), {common.med([float(n) for n in res.read_entries]):,.0f} "
            f"entries read, {common.med([float(n) for n in res.rows_written]):,.0f} summary rows rewritten; "
            f"every refresh: {', '.join(f'{s:.3f}s' for s in res.delta_s)}",
            f"the summary after the last refresh equals a full refresh: "
            f"{'yes' if res.equal else 'NO'} ({res.summary_rows:,} rows, {res.differing} differing)",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.bench_parser(__doc__, accounts=100_000)
    p.add_argument("--days", type=int, default=40, help="days of ledger history (default 40)")
    common.add_database_options(p)
    common.add_output_options(p, seed=20261207)
    args = p.parse_args(argv)
    if args.accounts < 50 or args.repeat < 1 or args.days < 31:
        p.error("--accounts must be at least 50, --repeat at least 1 and --days at least 31")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return common.child_main(args.child, run_child)

    bench_usage.HISTORY_DAYS = args.days
    with common.bench_database(args, "bw-bench-usage-delta-") as db:
        started = time.perf_counter()
        db.upgrade()
        rng = random.Random(args.seed)
        accounts = bench_usage.profiles(args.accounts, rng)
        if db.backend == "postgres":
            bench_usage.generate_postgres(db.libpq_url, accounts, rng)
        else:
            bench_usage.generate_sqlite(db.sqlite_path, accounts, rng)
        end = args.days * 86_400
        users = [(p.account, p.per_day) for p in accounts if p.stop >= end]
        generation_s = time.perf_counter() - started
        params = {
            "backend": args.backend,
            "accounts": args.accounts,
            "repeat": args.repeat,
            "url": db.url,
            "seed": args.seed,
            "users": users,
        }
        res = Results(**common.run_in_child(__file__, db.work, params))
        common.publish(report(res, common.command_line(__file__, argv), generation_s), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
