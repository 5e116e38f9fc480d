"""Report benchmark: a monthly usage report for every account, against the grouped query alone.

Not a test: it prints seconds, the ratio, emails per second and the peak
memory, and exits 0. The figures and the command are recorded in
docs/performance.md.

    python tests/bench/bench_reports.py --accounts 100000
    python tests/bench/bench_reports.py --backend postgres --accounts 100000 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test

Data (seeded, reproducible). N prepaid, enabled accounts in four timezones
(UTC 40 %, Europe/Berlin 30 %, America/New_York 20 %, Asia/Kolkata 10 %),
one USD balance each, and the ledger of October 2026: every account posts
``--per-day`` usage debits a day (default 2; sms or voice, at a random second,
0.01 .. 20 USD each) and one top-up on the 1st; 2 % of the accounts post
nothing (their report is skipped as empty). So about ``N * (31 * per-day + 1)``
entries: 6.3 million at 100,000 accounts. Generation (SQLite ``executemany``,
PostgreSQL ``COPY`` then ``VACUUM ANALYZE``) is not measured; SQLite gets no
``ANALYZE`` (the daemon runs none).

The report, with the shipped templates::

    reports:
      - id: monthly-usage
        schedule: monthly on 1 at 08:00
        contents: usage
        attach_csv: true

Measured in a child process (so generating the data does not count toward
its peak RSS):

1. the daemon: ``runner.run_due`` at 2026-11-01 13:05 UTC, when the 08:00
   send time has passed in all four zones (``reports.misfire_grace`` 24h; a run
   at 00:00 started the schedule): every account claimed, built in batches of
   ``reports.batch_size`` with grouped SQL, rendered (subject, text, HTML,
   CSV) and written to the outbox with its claim. Split into claiming,
   building (contents), rendering and writing;
2. the floor: the grouped query alone, ``SELECT account_id, currency, kind,
   service, SUM(amount), SUM(quantity), COUNT(*) FROM ledger_entry WHERE
   occurred_at >= :start AND occurred_at < :end GROUP BY account_id,
   currency, kind, service`` over the month (widest zone), executed and fully
   fetched through the same engine, warmed once, median of ``--repeat``;
3. emails rendered per second: over the daemon's total time, and over the
   rendering alone;
4. the child's peak resident set size (``VmHWM``): bounded by the batch, not N.
"""

from __future__ import annotations

import argparse
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

REPORT_ID = "monthly-usage"
RULES = f"""\
reports:
  - id: {REPORT_ID}
    description: "Your usage last month"
    schedule: monthly on 1 at 08:00
    contents: usage
    attach_csv: true
"""
ZONES = (("UTC", 0.40), ("Europe/Berlin", 0.30), ("America/New_York", 0.20), ("Asia/Kolkata", 0.10))
IDLE_SHARE = 0.02
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 31
START_AT = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # the first run: the schedule starts here
RUN_AT = datetime(2026, 11, 1, 13, 5, tzinfo=UTC)  # 08:00 has passed in every zone (New York: 13:00 UTC)
# The month in the widest zone: Kolkata's starts first (UTC+05:30), New York's ends last (UTC-05:00).
FLOOR_START, FLOOR_END = datetime(2026, 9, 30, 18, 30, tzinfo=UTC), datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
FLOOR = (
    "SELECT account_id, currency, kind, service, SUM(amount), SUM(quantity), COUNT(*) FROM ledger_entry"
    " WHERE occurred_at >= :start AND occurred_at < :end GROUP BY account_id, currency, kind, service"
)


# --------------------------------------------------------------------------- data


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


# --------------------------------------------------------------------------- the daemon's process


@dataclass
class Results:
    backend: str
    accounts: int
    per_day: int
    repeat: int
    batch_size: int
    ledger_rows: int = 0
    total_s: float = 0.0
    cpu_s: float = 0.0
    claim_s: float = 0.0
    build_s: float = 0.0
    render_s: float = 0.0
    record_s: float = 0.0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    zones: int = 0
    floor_s: list[float] = field(default_factory=list)
    floor_cpu_s: list[float] = field(default_factory=list)
    floor_rows: int = 0
    rss_setup_mb: float = 0.0
    rss_peak_mb: float = 0.0
    outbox_bytes: int = 0


def run_child(params: dict[str, Any]) -> Results:
    """The daemon side: the floor, then every report of the month, in this process."""
    from sqlalchemy import bindparam, func, select, text

    from balancewatch.reports import runner, sending
    from balancewatch.runtime.loadset import load_set
    from balancewatch.store.db import make_engine
    from balancewatch.store.tables import Outbox, UTCDateTime

    res = Results(
        params["backend"], params["accounts"], params["per_day"], params["repeat"], params["batch_size"]
    )
    res.ledger_rows = params["ledger_rows"]
    settings = common.daemon_settings(
        params,
        {
            "BALANCEWATCH_DELIVERY__FROM": "Reports <reports@platform.example>",
            "BALANCEWATCH_REPORTS__MISFIRE_GRACE": "24h",
            "BALANCEWATCH_REPORTS__BATCH_SIZE": str(params["batch_size"]),
        },
    )
    live = load_set(settings.rules_dir, settings.templates_dir)
    engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
    floor = text(FLOOR).bindparams(
        bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    )

    def fetch_floor() -> int:
        with engine.connect().execution_options(readonly=True) as conn:
            return len(conn.execute(floor, {"start": FLOOR_START, "end": FLOOR_END}).all())

    with engine.connect():  # the pool's first connection opens outside the timings
        pass
    runner.run_due(engine, live, settings, START_AT, "bench")  # starts the schedule; sends nothing
    res.rss_setup_mb = common.proc_status_kb("VmRSS") / 1024

    fetch_floor()  # warm
    for _ in range(params["repeat"]):
        t, cpu = time.perf_counter(), time.process_time()
        res.floor_rows = fetch_floor()
        res.floor_s.append(time.perf_counter() - t)
        res.floor_cpu_s.append(time.process_time() - cpu)

    claiming, building, rendering, recording = (common.Stopwatch() for _ in range(4))
    sending.claims.claim = claiming.wrap(sending.claims.claim)  # type: ignore[method-assign]
    sending.contents.build = building.wrap(sending.contents.build, consume=True)  # type: ignore[method-assign]
    live.templates.render = rendering.wrap(live.templates.render)  # type: ignore[method-assign]
    sending.record = recording.wrap(sending.record)  # type: ignore[method-assign]

    t, cpu = time.perf_counter(), time.process_time()
    stats = runner.run_due(engine, live, settings, RUN_AT, "bench")
    res.total_s, res.cpu_s = time.perf_counter() - t, time.process_time() - cpu
    res.claim_s, res.build_s = claiming.seconds, building.seconds
    res.render_s, res.record_s = rendering.seconds, recording.seconds
    res.sent, res.skipped, res.failed = (
        stats.sent[REPORT_ID],
        stats.skipped[REPORT_ID],
        stats.failed[REPORT_ID],
    )
    res.zones = len(stats.fired)
    res.rss_peak_mb = common.proc_status_kb("VmHWM") / 1024
    o = Outbox.__table__.c  # type: ignore[attr-defined]
    with engine.connect() as conn:
        size = func.length(o.text) + func.coalesce(func.length(o.html), 0)
        res.outbox_bytes = int(conn.execute(select(func.coalesce(func.sum(size), 0))).scalar_one())
    engine.dispose()
    return res


# --------------------------------------------------------------------------- report


def report(res: Results, command: str, generation_s: float) -> str:
    floor, floor_cpu = common.med(res.floor_s), common.med(res.floor_cpu_s)
    # SQLite works in this process, so CPU time compares the two sides on a busy machine too;
    # PostgreSQL's work is in the server's processes, so only the elapsed ratio means something there.
    cpu_ratio = f"{res.cpu_s / floor_cpu:>9.1f} x" if res.backend == "sqlite" and floor_cpu else "        -"
    emails = res.sent
    return "\n".join(
        [
            f"balancewatch report benchmark: {res.backend}, {res.accounts:,} accounts in {res.zones} "
            f"timezones, {res.ledger_rows:,} ledger entries (October 2026), batches of {res.batch_size:,}",
            f"command: {command}",
            f"generation (not measured): {generation_s:.1f} s",
            "",
            f"monthly usage report, every account     {res.total_s:>9.2f} s   "
            f"({emails:,} sent, {res.skipped:,} skipped as empty, {res.failed:,} failed)",
            f"floor: the grouped query alone          {floor:>9.3f} s   ({res.floor_rows:,} rows, median of "
            f"{res.repeat})",
            f"ratio, elapsed                          {res.total_s / floor:>9.1f} x",
            f"CPU time of this process: daemon        {res.cpu_s:>9.2f} s   floor {floor_cpu:.3f} s",
            f"ratio, CPU time                         {cpu_ratio}",
            f"emails per second, overall              {emails / res.total_s:>9.0f}",
            f"emails per second, rendering alone      {emails / res.render_s if res.render_s else 0:>9.0f}",
            f"peak RSS of the daemon                  {res.rss_peak_mb:>9.0f} MB  (after setup "
            f"{res.rss_setup_mb:.0f} MB)",
            "",
            f"where the time went: claiming {res.claim_s:.2f} s, building (contents) {res.build_s:.2f} s, "
            f"rendering {res.render_s:.2f} s, writing outbox and claims {res.record_s:.2f} s, "
            f"other {res.total_s - res.claim_s - res.build_s - res.render_s - res.record_s:.2f} s",
            f"per account: {1000 * res.build_s / max(res.sent + res.skipped, 1):.2f} ms building, "
            f"{1000 * res.render_s / max(res.sent, 1):.2f} ms rendering an email, "
            f"{1000 * res.record_s / max(res.sent + res.skipped, 1):.2f} ms writing it; outbox "
            f"{res.outbox_bytes / 1e6:.0f} MB of text and HTML parts "
            f"({res.outbox_bytes / max(res.sent, 1) / 1e3:.0f} kB an email)",
            f"floor: {FLOOR}",
        ]
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.bench_parser(__doc__, accounts=100_000)
    p.add_argument("--per-day", type=int, default=2, help="usage debits per account per day (default 2)")
    p.add_argument("--batch-size", type=int, default=1000, help="reports.batch_size (default 1,000)")
    common.add_database_options(p, repeat_help="timed runs of the floor; the median is reported")
    common.add_output_options(p, seed=20261101)
    args = p.parse_args(argv)
    if args.accounts < 50 or args.repeat < 1 or args.per_day < 1:
        p.error("--accounts must be at least 50, --repeat and --per-day at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return common.child_main(args.child, run_child)

    with common.bench_database(args, "bw-bench-reports-") as db:
        daemon = db.daemon_params("reports.yaml", RULES)
        t = time.perf_counter()
        db.upgrade()
        rng = random.Random(args.seed)
        who = plan(args.accounts, rng)
        if db.backend == "postgres":
            rows = generate_postgres(db.libpq_url, args.accounts, args.per_day, who, rng)
        else:
            rows = generate_sqlite(db.sqlite_path, args.accounts, args.per_day, who, rng)
        generation_s = time.perf_counter() - t
        params = {
            "backend": args.backend,
            "accounts": args.accounts,
            "per_day": args.per_day,
            "repeat": args.repeat,
            "batch_size": args.batch_size,
            "ledger_rows": rows,
            **daemon,
        }
        res = Results(**common.run_in_child(__file__, db.work, params))
        common.publish(report(res, common.command_line(__file__, argv), generation_s), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
