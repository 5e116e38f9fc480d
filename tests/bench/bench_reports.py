"""Report benchmark: a monthly usage report for every account, against the grouped query alone.

Not a test: it prints seconds, the ratio, emails per second against the target
(at least 600 a second, end to end, on one instance: MEETS or MISSES), each
instance's share and the peak memory, and exits 0. The figures and the command
are recorded in docs/performance.md.

    python tests/bench/bench_reports.py --accounts 100000
    python tests/bench/bench_reports.py --backend postgres --accounts 100000 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test
    python tests/bench/bench_reports.py --accounts 100000 --instances 2

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

1. the daemon: ``--instances`` daemon instances (default 1), each a process of
   its own with its own worker name and ``--processes`` worker processes
   (default: the daemon's, one per core), started together; each runs
   ``runner.run_due`` at 2026-11-01 13:05 UTC, when the 08:00 send time has
   passed in all four zones (``reports.misfire_grace`` 24h; a run at 00:00
   started the schedule): every account claimed, built in batches of
   ``reports.batch_size`` with grouped SQL, rendered (subject, text, HTML,
   CSV) and written to the outbox with its claim. Timed from the word go to
   the last instance done (worker processes start inside that time). Split
   into claiming, building (contents), rendering and writing, seconds summed
   over the processes (``ReportStats.seconds``);
2. the floor: the grouped query alone, ``SELECT account_id, currency, kind,
   service, SUM(amount), SUM(quantity), COUNT(*) FROM ledger_entry WHERE
   occurred_at >= :start AND occurred_at < :end GROUP BY account_id,
   currency, kind, service`` over the month (widest zone), executed and fully
   fetched through the same engine, warmed once, median of ``--repeat``;
3. report emails written per second, over the total time, against the target;
4. what was written: each instance's share of the final claims, report emails
   beyond one per account (sent twice) and accounts without a final claim
   (missed); the target is met only with none of either and none failed;
5. peak resident set size (``VmHWM``) of an instance and of its largest worker:
   bounded by the batch, not N.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

try:
    from tests.bench import common, reports_data, reports_instances
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import common  # type: ignore[no-redef]
    import reports_data  # type: ignore[no-redef]
    import reports_instances  # type: ignore[no-redef]

from balancewatch.core.procinfo import default_processes

REPORT_ID = "monthly-usage"
RULES = f"""\
reports:
  - id: {REPORT_ID}
    description: "Your usage last month"
    schedule: monthly on 1 at 08:00
    contents: usage
    attach_csv: true
"""
START_AT = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # the first run: the schedule starts here
RUN_AT = datetime(2026, 11, 1, 13, 5, tzinfo=UTC)  # 08:00 has passed in every zone (New York: 13:00 UTC)
# The month in the widest zone: Kolkata's starts first (UTC+05:30), New York's ends last (UTC-05:00).
FLOOR_START, FLOOR_END = datetime(2026, 9, 30, 18, 30, tzinfo=UTC), datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
TARGET_PER_S = 600  # report emails written a second, end to end, by one instance
FLOOR = (
    "SELECT account_id, currency, kind, service, SUM(amount), SUM(quantity), COUNT(*) FROM ledger_entry"
    " WHERE occurred_at >= :start AND occurred_at < :end GROUP BY account_id, currency, kind, service"
)


# --------------------------------------------------------------------------- the daemon's processes


@dataclass
class Results:
    backend: str
    accounts: int
    per_day: int
    repeat: int
    batch_size: int
    instances: int
    processes: int
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
    emails_per_s: float = 0.0
    meets: bool = False
    shares: dict[str, float] = field(default_factory=dict)  # worker -> its part of the final claims
    per_instance: list[dict[str, Any]] = field(default_factory=list)
    emails: int = 0
    twice: int = 0  # emails beyond one per account
    missed: int = 0  # accounts without a final claim
    floor_s: list[float] = field(default_factory=list)
    floor_cpu_s: list[float] = field(default_factory=list)
    floor_rows: int = 0
    rss_setup_mb: float = 0.0
    rss_peak_mb: float = 0.0
    worker_rss_peak_mb: float = 0.0
    outbox_bytes: int = 0


def run_child(params: dict[str, Any]) -> Results:
    """The floor in this process, then every report of the month by the instances, each a process."""
    from sqlalchemy import bindparam, func, select, text

    from balancewatch.reports import runner
    from balancewatch.runtime.loadset import load_set
    from balancewatch.store.db import make_engine
    from balancewatch.store.tables import Outbox, UTCDateTime

    fixed = ("backend", "accounts", "per_day", "repeat", "batch_size", "instances", "processes")
    res = Results(*(params[k] for k in fixed))
    res.ledger_rows = params["ledger_rows"]
    settings = reports_instances.settings_of(params)
    live = load_set(settings.rules_dir, settings.templates_dir)
    engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
    floor = text(FLOOR).bindparams(
        bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    )

    def fetch_floor() -> int:
        with engine.connect().execution_options(readonly=True) as conn:
            return len(conn.execute(floor, {"start": FLOOR_START, "end": FLOOR_END}).all())

    runner.run_due(engine, live, settings, START_AT, "bench", processes=0)  # starts the schedule
    fetch_floor()  # warm
    for _ in range(params["repeat"]):
        t, cpu = time.perf_counter(), time.process_time()
        res.floor_rows = fetch_floor()
        res.floor_s.append(time.perf_counter() - t)
        res.floor_cpu_s.append(time.process_time() - cpu)

    run = {**params, "run_at": RUN_AT.isoformat(), "report_id": REPORT_ID}
    res.total_s, found = reports_instances.run_instances(run, params["instances"])
    tally(res, found, reports_instances.written(engine, REPORT_ID))
    o = Outbox.__table__.c  # type: ignore[attr-defined]
    with engine.connect() as conn:
        size = func.length(o.text) + func.coalesce(func.length(o.html), 0)
        res.outbox_bytes = int(conn.execute(select(func.coalesce(func.sum(size), 0))).scalar_one())
    engine.dispose()
    return res


def tally(res: Results, found: list[reports_instances.Instance], wrote: reports_instances.Written) -> None:
    """The instances' figures summed, and what they wrote checked: once per account, none missed."""
    for one in found:
        res.sent, res.skipped, res.failed = (
            res.sent + one.sent,
            res.skipped + one.skipped,
            res.failed + one.failed,
        )
        res.zones = max(res.zones, one.zones)
        res.cpu_s += one.cpu_s
        res.claim_s += one.seconds.get("claim", 0.0)
        res.build_s += one.seconds.get("build", 0.0)
        res.render_s += one.seconds.get("render", 0.0)
        res.record_s += one.seconds.get("record", 0.0)
        res.rss_setup_mb = max(res.rss_setup_mb, one.rss_setup_mb)
        res.rss_peak_mb = max(res.rss_peak_mb, one.rss_peak_mb)
        res.worker_rss_peak_mb = max(res.worker_rss_peak_mb, one.worker_rss_peak_mb)
        res.per_instance.append(asdict(one))
    final = sum(wrote.claims.values())
    res.shares = {w: n / final for w, n in sorted(wrote.claims.items())} if final else {}
    res.emails = wrote.emails
    res.twice = wrote.emails - wrote.accounts_emailed
    res.missed = res.accounts - wrote.accounts_final
    res.emails_per_s = res.sent / res.total_s if res.total_s else 0.0
    res.meets = res.emails_per_s >= TARGET_PER_S and res.twice == 0 and res.missed == 0 and res.failed == 0


# --------------------------------------------------------------------------- report


def report(res: Results, command: str, generation_s: float) -> str:
    floor, floor_cpu = common.med(res.floor_s), common.med(res.floor_cpu_s)
    # SQLite works in the daemon's processes, so CPU time compares the two sides on a busy machine too;
    # PostgreSQL's work is in the server's processes, so only the elapsed ratio means something there.
    cpu_ratio = f"{res.cpu_s / floor_cpu:>9.1f} x" if res.backend == "sqlite" and floor_cpu else "        -"
    per = max(res.sent, 1)
    workers = f"{res.processes} worker processes each" if res.processes else "no worker processes"
    lines = [
        f"balancewatch report benchmark: {res.backend}, {res.accounts:,} accounts in {res.zones} "
        f"timezones, {res.ledger_rows:,} ledger entries (October 2026), batches of {res.batch_size:,}",
        f"command: {command}",
        f"generation (not measured): {generation_s:.1f} s",
        f"instances: {res.instances} ({workers}) against one database, started at once",
        "",
        f"monthly usage report, every account     {res.total_s:>9.2f} s   "
        f"({res.sent:,} sent, {res.skipped:,} skipped as empty, {res.failed:,} failed)",
        f"floor: the grouped query alone          {floor:>9.3f} s   ({res.floor_rows:,} rows, median of "
        f"{res.repeat})",
        f"ratio, elapsed                          {res.total_s / floor:>9.1f} x",
        f"CPU time, daemon with its workers       {res.cpu_s:>9.2f} s   floor {floor_cpu:.3f} s",
        f"ratio, CPU time                         {cpu_ratio}",
        f"emails per second, overall              {res.emails_per_s:>9.0f}   target >= {TARGET_PER_S}: "
        f"{common.verdict(res.meets)}",
        f"peak RSS of the daemon                  {res.rss_peak_mb:>9.0f} MB  (largest worker "
        f"{res.worker_rss_peak_mb:.0f} MB; after setup {res.rss_setup_mb:.0f} MB)",
        "",
    ]
    for one in res.per_instance:
        share = res.shares.get(one["worker"], 0.0)
        lines.append(
            f"  {one['worker']}: {share:6.1%} of the accounts ({one['sent']:,} sent, {one['skipped']:,} "
            f"skipped) in {one['elapsed_s']:.2f} s"
        )
    lines += [
        f"  every account once: {res.emails:,} report emails, {res.twice:,} sent twice, "
        f"{res.missed:,} accounts missed",
        "",
        f"where the time went (seconds summed over the processes): claiming {res.claim_s:.2f}, building "
        f"(contents) {res.build_s:.2f}, rendering {res.render_s:.2f}, writing outbox and claims "
        f"{res.record_s:.2f}",
        f"per email: {1000 * res.build_s / per:.2f} ms building, {1000 * res.render_s / per:.2f} ms "
        f"rendering, {1000 * res.record_s / per:.2f} ms writing, {1000 * res.cpu_s / per:.2f} ms of CPU in "
        f"all; outbox {res.outbox_bytes / 1e6:.0f} MB of text and HTML parts "
        f"({res.outbox_bytes / per / 1e3:.0f} kB an email)",
        f"floor: {FLOOR}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.bench_parser(__doc__, accounts=100_000)
    p.add_argument("--per-day", type=int, default=2, help="usage debits per account per day (default 2)")
    p.add_argument("--batch-size", type=int, default=1000, help="reports.batch_size (default 1,000)")
    p.add_argument(
        "--instances", type=int, default=1, help="daemon instances running the report at once (default 1)"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes per instance (default: the daemon's, one per core; 0: none)",
    )
    p.add_argument(
        "--parallel-min",
        type=int,
        default=None,
        help="claimed accounts from which a batch goes to the workers (default: the daemon's, 200)",
    )
    common.add_database_options(p, repeat_help="timed runs of the floor; the median is reported")
    common.add_output_options(p, seed=20261101)
    args = p.parse_args(argv)
    if args.accounts < 50 or args.repeat < 1 or args.per_day < 1 or args.instances < 1:
        p.error("--accounts must be at least 50, --repeat, --per-day and --instances at least 1")
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
        who = reports_data.plan(args.accounts, rng)
        if db.backend == "postgres":
            rows = reports_data.generate_postgres(db.libpq_url, args.accounts, args.per_day, who, rng)
        else:
            rows = reports_data.generate_sqlite(db.sqlite_path, args.accounts, args.per_day, who, rng)
        generation_s = time.perf_counter() - t
        params = {
            "backend": args.backend,
            "accounts": args.accounts,
            "per_day": args.per_day,
            "repeat": args.repeat,
            "batch_size": args.batch_size,
            "instances": args.instances,
            "processes": default_processes() if args.processes is None else args.processes,
            "parallel_min": args.parallel_min,
            "ledger_rows": rows,
            **daemon,
        }
        res = Results(**common.run_in_child(__file__, db.work, params))
        common.publish(report(res, common.command_line(__file__, argv), generation_s), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
