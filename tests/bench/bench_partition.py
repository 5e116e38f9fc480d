"""Monthly partitioning of the ledger: the same ``ledger_entry`` plain and partitioned, same run.

Not a test: it prints seconds and the cost per row read or written on each
table, so that the figures can be scaled to a larger ledger, and exits 0. The
figures feed the capacity model of docs/performance.md.

    python tests/bench/bench_partition.py                      # 20,000 accounts, 95 days
    python tests/bench/bench_partition.py --accounts 50000 --days 95 \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test

PostgreSQL only: a new schema at ``--pg-url``, dropped afterwards (unless
``--keep``). In it, the daemon's tables (``db upgrade``), then the ledger twice:

- ``ledger_entry`` as balancewatch creates it: primary key ``id``, indexes
  ``ix_ledger_account_time (account_id, currency, occurred_at)`` and
  ``ix_ledger_occurred_at (occurred_at)``, unique ``(account_id, reference)``;
- ``ledger_entry_monthly``, partitioned by month on ``occurred_at``
  (``PARTITION BY RANGE``, one partition per calendar month, UTC), the same
  indexes created on the parent. PostgreSQL makes every unique constraint of a
  partitioned table include the partition key: the primary key is
  ``(id, occurred_at)`` and the reference is unique per ``(account_id,
  reference, occurred_at)``, so the same reference at two times is no longer
  refused (the script asks for ``UNIQUE (account_id, reference)`` and prints
  PostgreSQL's refusal).

Data: ``bench_usage``'s ledger (seeded; its accounts, rates and mix: about 3.1
entries per account per day), over ``--days`` ending 2026-11-27 00:00 UTC,
written with ``COPY`` (the same ids) into both tables without their secondary
indexes, which are built afterwards, then ``VACUUM ANALYZE``. None of that is
measured.

Measured on both tables, alternating which goes first, medians of
``--repeat`` (every statement in its own transaction, results fetched in full
through psycopg, nothing cached by the script):

(a) the full usage refresh's grouped scan of the 30-day window (the query
    ``usage_delta.usage_by_account`` builds), per usage entry in the window;
(b) an hour of entries leaving the window, by ``occurred_at`` range (what the
    hourly refresh reads with ``ix_ledger_occurred_at``), per entry read; and
    (b2) the entries written in the last hour, by ``id > :mark`` (what it reads
    first: on the partitioned table a probe of every partition's primary key);
(c) first-entry seeks, ``min(occurred_at)`` per account and currency up to
    now, for ``--seeks`` accounts in one statement (a correlated subquery, as
    ``usage.with_firsts`` asks it): per seek; on the partitioned table one
    probe per partition;
(d) a month's report query, October 2026 grouped by account, currency, kind
    and service, per entry of the month;
(e) writing: ``COPY`` of one day's entries (a new day each repeat), and 1,000
    single-row ``INSERT`` statements, in one transaction and with a commit
    each, per row;
(f) retention, once (it cannot be repeated): the oldest month removed from the
    plain table by ``DELETE … WHERE occurred_at < :cut`` and then ``VACUUM``,
    from the partitioned one by ``DETACH PARTITION`` and ``DROP TABLE``:
    seconds, and ``pg_total_relation_size`` before and after;
(g) sizes (after loading, before (e)): table and each index, in all and per row.

Every figure is for a ledger that fits in this machine's memory (the OS
cache); a ledger a thousand times larger does not, and reads from disk cost
more per row. Scaling them linearly is an assumption; docs/performance.md says
where it holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

try:
    from tests.bench import bench_usage, common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import bench_usage  # type: ignore[no-redef,import-not-found]
    import common  # type: ignore[no-redef,import-not-found]

PLAIN = "ledger_entry"
MONTHLY = "ledger_entry_monthly"
TABLES = (PLAIN, MONTHLY)
T0 = bench_usage.T0  # "now": where the generated ledger ends
WINDOW = timedelta(days=bench_usage.WINDOW_DAYS)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
INSERTS = 1_000  # single-row INSERTs per repeat
COLUMNS = "account_id, currency, amount, kind, service, quantity, occurred_at, reference"

# The plain table's secondary indexes and unique constraint, as balancewatch creates them; dropped
# before loading and built again afterwards from these definitions, read from the catalog.
SECONDARY = ("ix_ledger_account_time", "ix_ledger_occurred_at", "uq_ledger_reference")

WINDOW_SCAN = (
    "SELECT account_id, currency, SUM(-amount) AS used, COUNT(*) AS entries FROM {t}"
    " WHERE kind = 'usage' AND occurred_at >= %(start)s AND occurred_at <= %(now)s"
    " GROUP BY account_id, currency"
)
LEAVING = (
    "SELECT id, account_id, currency, kind, amount, occurred_at FROM {t}"
    " WHERE id <= %(mark)s AND kind = 'usage' AND occurred_at >= %(start)s AND occurred_at < %(end)s"
)
NEW_BY_ID = "SELECT id, account_id, currency, kind, amount, occurred_at FROM {t} WHERE id > %(mark)s"
FIRST_SEEKS = (
    "SELECT p.account_id, (SELECT min(l.occurred_at) FROM {t} l WHERE l.account_id = p.account_id"
    " AND l.currency = p.currency AND l.occurred_at <= %(now)s) AS first_at"
    " FROM unnest(%(accounts)s::text[], %(currencies)s::text[]) AS p(account_id, currency)"
)
MONTH_REPORT = (
    "SELECT account_id, currency, kind, service, SUM(amount) AS amount, SUM(quantity) AS quantity,"
    " COUNT(*) AS entries FROM {t} WHERE occurred_at >= %(start)s AND occurred_at < %(end)s"
    " GROUP BY account_id, currency, kind, service"
)
INSERT_ONE = f"INSERT INTO {{t}} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"

# (key, label, unit) of the timed figures, in the order of the table.
MEASURES = (
    ("window_scan", "(a) full refresh: grouped scan of the 30-day window", "window usage entry"),
    ("leaving_hour", "(b) an hour leaving the window, by occurred_at", "entry read"),
    ("new_by_id", "(b2) an hour of new entries, by id > mark", "entry read"),
    ("first_seeks", "(c) first-entry seeks, one statement", "seek"),
    ("month_report", "(d) a month's report query (October)", "entry of the month"),
    ("copy_day", "(e) COPY of one day's entries", "row written"),
    ("insert_tx", "(e) 1,000 single-row INSERTs, one transaction", "row written"),
    ("insert_commit", "(e) 1,000 single-row INSERTs, a commit each", "row written"),
)

# --------------------------------------------------------------------------- figures


@dataclass
class Measure:
    """One timed figure on both tables: seconds per repeat, the units each covered."""

    units: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows the statement returned, by table
    seconds: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TABLES})
    plan: dict[str, str] = field(default_factory=dict)  # the scans of its plan, by table


@dataclass
class Results:
    accounts: int
    days: int
    repeat: int
    seeks: int
    server: str = ""
    entries: int = 0
    window_entries: int = 0
    month_entries: int = 0
    partitions: list[str] = field(default_factory=list)
    unique_refused: str = ""  # PostgreSQL's answer to UNIQUE (account_id, reference) on the partitioned table
    settings: dict[str, str] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    loadavg: dict[str, list[float]] = field(default_factory=dict)
    measures: dict[str, Measure] = field(default_factory=dict)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> relation -> bytes
    retention: dict[str, Any] = field(default_factory=dict)


Cursor = psycopg.Cursor[Any]

# --------------------------------------------------------------------------- data


def scalar(cur: Cursor, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
    """The first column of the statement's first row."""
    row = cur.execute(sql, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row: {sql}")
    return row[0]


def copy_line(row: bench_usage.Row, entry_id: int | None) -> str:
    """One line of COPY's text format: the id first when given, then ``COLUMNS``."""
    account, currency, amount, kind, service, quantity, at, reference = row
    fields = [
        account,
        currency,
        str(amount),
        kind,
        service or "\\N",
        "\\N" if quantity is None else str(quantity),
        at + "+00",
        reference or "\\N",
    ]
    if entry_id is not None:
        fields.insert(0, str(entry_id))
    return "\t".join(fields) + "\n"


def shifted(row: bench_usage.Row, by: timedelta, tag: str) -> bench_usage.Row:
    """``row`` moved ``by`` later, its reference (if any) made new with ``tag``."""
    at = (datetime.fromisoformat(row[6]) + by).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (*row[:6], at, None if row[7] is None else f"{row[7]}/{tag}")


def months(first: datetime, last: datetime) -> list[tuple[str, datetime, datetime]]:
    """(name, start, end) of each calendar month (UTC) from ``first``'s to ``last``'s."""
    out = []
    start = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while start <= last:
        end = (start + timedelta(days=32)).replace(day=1)
        out.append((f"{MONTHLY}_{start:%Y_%m}", start, end))
        start = end
    return out


def create_monthly(cur: Cursor, parts: Sequence[tuple[str, datetime, datetime]]) -> str:
    """The partitioned copy of ``ledger_entry`` with its partitions, no secondary index yet; its ids
    from the plain table's sequence.

    Returns PostgreSQL's answer to ``UNIQUE (account_id, reference)`` on it (a refusal)."""
    sequence = scalar(cur, f"SELECT pg_get_serial_sequence('{PLAIN}', 'id')")
    cur.execute(
        f"CREATE TABLE {MONTHLY} ("
        f" id bigint NOT NULL DEFAULT nextval('{sequence}'),"
        " account_id varchar(64) NOT NULL REFERENCES account (id),"
        " currency varchar(3) NOT NULL, amount bigint NOT NULL, kind varchar(16) NOT NULL,"
        " service varchar(32), quantity bigint, occurred_at timestamptz NOT NULL,"
        " reference varchar(128), balance_after bigint,"
        f" CONSTRAINT pk_{MONTHLY} PRIMARY KEY (id, occurred_at)"
        ") PARTITION BY RANGE (occurred_at)"
    )
    for name, start, end in parts:
        bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"  # DDL takes no parameters
        cur.execute(f"CREATE TABLE {name} PARTITION OF {MONTHLY} FOR VALUES {bounds}")
    refused = ""
    try:
        with cur.connection.transaction():
            cur.execute(f"ALTER TABLE {MONTHLY} ADD CONSTRAINT uq_try UNIQUE (account_id, reference)")
    except psycopg.Error as exc:  # PostgreSQL's refusal is the figure
        refused = str(exc).splitlines()[0]
    return refused


def load(
    cur: Cursor, accounts: Sequence[bench_usage.Profile], rng: random.Random
) -> tuple[int, list[bench_usage.Row]]:
    """The accounts, then the ledger into both tables with the same ids, a day per COPY each.

    Returns the entries written and the last day's rows."""
    with cur.copy(
        "COPY account (id, name, owner_email, billing, labels, parent_id, enabled, created_at) FROM STDIN"
    ) as copy:
        for p in accounts:
            name, email = f"Customer {p.account}", f"owner-{p.account}@example.com"
            copy.write_row((p.account, name, email, "prepaid", "{}", p.parent, True, T0 - 400 * DAY))
    total, last_day = 0, list[bench_usage.Row]()
    for rows in bench_usage.ledger_days(accounts, rng):
        data = "".join(copy_line(row, total + i + 1) for i, row in enumerate(rows)).encode()
        for table in TABLES:
            with cur.copy(f"COPY {table} (id, {COLUMNS}) FROM STDIN") as copy:
                copy.write(data)
        total += len(rows)
        last_day = rows
    cur.execute(f"SELECT setval(pg_get_serial_sequence('{PLAIN}', 'id'), %s)", (total,))
    return total, last_day


def secondary_definitions(cur: Cursor) -> list[tuple[str, str]]:
    """(name, the statement that creates it) of the plain table's secondary indexes and constraint."""
    cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'u'",
        (PLAIN,),
    )
    out = [(name, f"ALTER TABLE {PLAIN} ADD CONSTRAINT {name} {definition}") for name, definition in cur]
    cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
        (PLAIN,),
    )
    out += [(name, definition) for name, definition in cur if name.startswith("ix_")]
    found = {name for name, _ in out}
    if found != set(SECONDARY):
        raise RuntimeError(f"ledger_entry's indexes are not what this benchmark expects: {sorted(found)}")
    return out


def build_monthly_indexes(cur: Cursor) -> None:
    """The plain table's secondary indexes on the partitioned parent (so on every partition); the
    reference unique with the partition key, as PostgreSQL requires."""
    cur.execute(f"CREATE INDEX ix_monthly_account_time ON {MONTHLY} (account_id, currency, occurred_at)")
    cur.execute(f"CREATE INDEX ix_monthly_occurred_at ON {MONTHLY} (occurred_at)")
    cur.execute(
        f"ALTER TABLE {MONTHLY} ADD CONSTRAINT uq_monthly_reference"
        " UNIQUE (account_id, reference, occurred_at)"
    )


# --------------------------------------------------------------------------- measuring


def relation_bytes(cur: Cursor, relation: str, total: bool = False) -> int:
    """``pg_relation_size`` (or ``pg_total_relation_size``) of a table or index, summed over its
    partitions when it is partitioned."""
    size = "pg_total_relation_size" if total else "pg_relation_size"
    if scalar(cur, "SELECT relkind FROM pg_class WHERE oid = %s::regclass", (relation,)) not in ("p", "I"):
        return int(scalar(cur, f"SELECT {size}(%s::regclass)", (relation,)))
    sql = f"SELECT COALESCE(SUM({size}(relid)), 0) FROM pg_partition_tree(%s::regclass) WHERE isleaf"
    return int(scalar(cur, sql, (relation,)))


def sizes(cur: Cursor) -> dict[str, dict[str, int]]:
    """Per table: the heap, each index (summed over partitions), and the total with TOAST."""
    out: dict[str, dict[str, int]] = {}
    for table in TABLES:
        cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s::regclass ORDER BY c.relname",
            (table,),
        )
        indexes = [r[0] for r in cur.fetchall()]
        out[table] = {"table": relation_bytes(cur, table)}
        for index in indexes:
            out[table][index] = relation_bytes(cur, index)
        out[table]["total"] = relation_bytes(cur, table, total=True)
    return out


def plan_scans(cur: Cursor, sql: str, params: dict[str, Any]) -> str:
    """The scans of the statement's plan (EXPLAIN, not run): node type and how many relations."""
    raw = scalar(cur, "EXPLAIN (FORMAT JSON) " + sql, params)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    kinds: Counter[str] = Counter()
    relations: set[str] = set()
    workers = []

    def walk(node: dict[str, Any]) -> None:
        if "Workers Planned" in node:
            workers.append(node["Workers Planned"])
        if "Relation Name" in node:
            kinds[node["Node Type"]] += 1
            relations.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    scans = ", ".join(f"{k}{f' x{n}' if n > 1 else ''}" for k, n in sorted(kinds.items()))
    parallel = f", {max(workers)} workers planned" if workers else ""
    return f"{scans} ({len(relations)} relation{'s' if len(relations) != 1 else ''}{parallel})"


def fetch(cur: Cursor, sql: str, params: dict[str, Any]) -> int:
    """Run ``sql`` and fetch every row; the rows' number."""
    return len(cur.execute(sql, params).fetchall())


def alternate(k: int) -> Sequence[str]:
    """The tables in the order repeat ``k`` runs them: each goes first every other time."""
    return TABLES if k % 2 == 0 else TABLES[::-1]


def measure_reads(cur: Cursor, res: Results, repeat: int, seek_pairs: tuple[list[str], list[str]]) -> None:
    """(a), (b), (b2), (c), (d): warmed once untimed on each table, then ``repeat`` alternating runs."""
    mark_all = int(scalar(cur, f"SELECT max(id) FROM {PLAIN}"))
    per_hour = max(1, res.entries // res.days // 24)
    october = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))

    def reads(k: int) -> dict[str, tuple[str, dict[str, Any]]]:
        now = T0 - k * HOUR  # each repeat an hour apart, as the refresh moves
        leaving = now - WINDOW - HOUR
        return {
            "window_scan": (WINDOW_SCAN, {"start": now - WINDOW, "now": now}),
            "leaving_hour": (LEAVING, {"mark": mark_all, "start": leaving, "end": leaving + HOUR}),
            "new_by_id": (NEW_BY_ID, {"mark": mark_all - per_hour}),
            "first_seeks": (
                FIRST_SEEKS,
                {"now": now, "accounts": seek_pairs[0], "currencies": seek_pairs[1]},
            ),
            "month_report": (MONTH_REPORT, {"start": october[0], "end": october[1]}),
        }

    for key, (sql, params) in reads(0).items():
        m = res.measures[key]
        for table in TABLES:
            m.plan[table] = plan_scans(cur, sql.format(t=table), params)
            m.rows[table] = fetch(cur, sql.format(t=table), params)  # the warm-up
    units = {
        "window_scan": res.window_entries,
        "leaving_hour": res.measures["leaving_hour"].rows[PLAIN],
        "new_by_id": per_hour,
        "first_seeks": len(seek_pairs[0]),
        "month_report": res.month_entries,
    }
    for key, n in units.items():
        res.measures[key].units = n
    for k in range(repeat):
        for key, (sql, params) in reads(k).items():
            for table in alternate(k):
                dt, _ = common.timed(lambda: fetch(cur, sql.format(t=table), params))  # noqa: B023
                res.measures[key].seconds[table].append(dt)


def copy_rows(cur: Cursor, table: str, data: bytes) -> None:
    """``COPY`` ``data`` (text format, ``COLUMNS``) into ``table``: one transaction."""
    with cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as copy:
        copy.write(data)


def insert_rows(cur: Cursor, table: str, rows: Sequence[bench_usage.Row], one_transaction: bool) -> None:
    """A single-row ``INSERT`` per row (prepared by psycopg after the fifth), in one transaction or
    each its own (the connection is in autocommit)."""
    sql = INSERT_ONE.format(t=table)
    if one_transaction:
        with cur.connection.transaction():
            for row in rows:
                cur.execute(sql, row)
    else:
        for row in rows:
            cur.execute(sql, row)


def measure_writes(cur: Cursor, res: Results, repeat: int, day: Sequence[bench_usage.Row]) -> None:
    """(e): per repeat, a new day (T0 + k + 1 days) copied into each table, then 1,000 single-row
    INSERTs in one transaction and 1,000 with a commit each, dated that day; references made new."""
    res.measures["copy_day"].units = len(day)
    res.measures["insert_tx"].units = res.measures["insert_commit"].units = INSERTS
    for k in range(repeat):
        by = (k + 1) * DAY
        data = "".join(copy_line(shifted(row, by, f"c{k}"), None) for row in day).encode()
        in_tx = [shifted(day[i % len(day)], by, f"t{k}.{i}") for i in range(INSERTS)]
        each = [shifted(day[i % len(day)], by, f"s{k}.{i}") for i in range(INSERTS)]
        for table in alternate(k):
            m = res.measures
            m["copy_day"].seconds[table].append(common.timed(lambda: copy_rows(cur, table, data))[0])  # noqa: B023
            dt, _ = common.timed(lambda: insert_rows(cur, table, in_tx, True))  # noqa: B023
            m["insert_tx"].seconds[table].append(dt)
            dt, _ = common.timed(lambda: insert_rows(cur, table, each, False))  # noqa: B023
            m["insert_commit"].seconds[table].append(dt)


def measure_retention(cur: Cursor, res: Results, oldest: str, cut: datetime) -> None:
    """(f), once: the oldest month out of each table; seconds and total sizes before and after."""
    out: dict[str, Any] = {"partition": oldest, "cut": cut.isoformat()}
    out["rows"] = int(scalar(cur, f"SELECT count(*) FROM {PLAIN} WHERE occurred_at < %s", (cut,)))
    out["plain_before"] = relation_bytes(cur, PLAIN, total=True)
    dt, _ = common.timed(lambda: cur.execute(f"DELETE FROM {PLAIN} WHERE occurred_at < %s", (cut,)))
    out["delete_s"] = dt
    out["plain_after_delete"] = relation_bytes(cur, PLAIN, total=True)
    out["vacuum_s"], _ = common.timed(lambda: cur.execute(f"VACUUM {PLAIN}"))
    out["plain_after_vacuum"] = relation_bytes(cur, PLAIN, total=True)
    out["monthly_before"] = relation_bytes(cur, MONTHLY, total=True)
    out["detach_s"], _ = common.timed(lambda: cur.execute(f"ALTER TABLE {MONTHLY} DETACH PARTITION {oldest}"))
    out["drop_s"], _ = common.timed(lambda: cur.execute(f"DROP TABLE {oldest}"))
    out["monthly_after"] = relation_bytes(cur, MONTHLY, total=True)
    res.retention = out


def run(cur: Cursor, res: Results, args: argparse.Namespace) -> None:
    """Create, load, index and analyse both tables; then every measurement."""
    res.loadavg["start"] = list(os.getloadavg())
    res.server = str(scalar(cur, "SELECT version()")).split(" on ")[0]
    for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit"):
        res.settings[name] = str(scalar(cur, f"SHOW {name}"))
    first = T0 - args.days * DAY
    parts = months(first, T0 + (args.repeat + 2) * DAY)
    res.partitions = [name for name, _, _ in parts]

    t = time.perf_counter()
    definitions = secondary_definitions(cur)
    cur.execute(f"ALTER TABLE {PLAIN} DROP CONSTRAINT uq_ledger_reference")
    cur.execute("DROP INDEX ix_ledger_account_time, ix_ledger_occurred_at")
    res.unique_refused = create_monthly(cur, parts)
    rng = random.Random(args.seed)
    accounts = bench_usage.profiles(args.accounts, rng)
    res.entries, last_day = load(cur, accounts, rng)
    res.load_s["generate_and_copy"] = time.perf_counter() - t

    t = time.perf_counter()
    for _, statement in definitions:
        cur.execute(statement)
    build_monthly_indexes(cur)
    res.load_s["indexes"] = time.perf_counter() - t
    t = time.perf_counter()
    for table in ("account", PLAIN, MONTHLY):
        cur.execute(f"VACUUM ANALYZE {table}")
    res.load_s["vacuum_analyze"] = time.perf_counter() - t

    cur.execute(
        "SELECT count(*) FILTER (WHERE kind = 'usage' AND occurred_at >= %(start)s"
        " AND occurred_at <= %(now)s),"
        " count(*) FILTER (WHERE occurred_at >= %(m0)s AND occurred_at < %(m1)s)"
        f" FROM {PLAIN}",
        {
            "start": T0 - WINDOW,
            "now": T0,
            "m0": datetime(2026, 10, 1, tzinfo=UTC),
            "m1": datetime(2026, 11, 1, tzinfo=UTC),
        },
    )
    counts = cur.fetchone()
    assert counts is not None
    res.window_entries, res.month_entries = int(counts[0]), int(counts[1])
    res.sizes = sizes(cur)

    # (c)'s accounts: a seeded sample of the accounts with USD entries (every account has some).
    chosen = random.Random(args.seed + 1).sample(
        [p.account for p in accounts], min(args.seeks, len(accounts))
    )
    res.seeks = len(chosen)
    for key, _, _ in MEASURES:
        res.measures[key] = Measure()
    measure_reads(cur, res, args.repeat, (chosen, ["USD"] * len(chosen)))
    measure_writes(cur, res, args.repeat, last_day)
    oldest, _, cut = parts[0]
    measure_retention(cur, res, oldest, cut)
    res.loadavg["end"] = list(os.getloadavg())


# --------------------------------------------------------------------------- report


def mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def report(res: Results, command: str) -> str:
    """The tables: seconds and µs per unit on each table, sizes, retention."""
    lines = [
        f"ledger partitioning benchmark: {res.server}, {res.accounts:,} accounts, {res.days} days, "
        f"{res.entries:,} ledger entries ({res.entries / res.accounts / res.days:.2f} per account a day; "
        f"{res.window_entries:,} usage entries in the 30-day window, {res.month_entries:,} in October), "
        f"{len(res.partitions)} monthly partitions ({res.partitions[0][-7:]} .. {res.partitions[-1][-7:]}), "
        f"medians of {res.repeat}",
        f"command: {command}",
        "load average (1, 5, 15 min): start "
        + ", ".join(f"{x:.2f}" for x in res.loadavg["start"])
        + "; end "
        + ", ".join(f"{x:.2f}" for x in res.loadavg["end"]),
        "server settings: " + ", ".join(f"{k} {v}" for k, v in res.settings.items()),
        f"load (not measured): generation and COPY into both {res.load_s['generate_and_copy']:.1f} s, "
        f"indexes {res.load_s['indexes']:.1f} s, VACUUM ANALYZE {res.load_s['vacuum_analyze']:.1f} s",
        f"UNIQUE (account_id, reference) on the partitioned table: {res.unique_refused or 'accepted'}",
        "",
        f"{'':52} {'units':>10} {'plain':>10} {'monthly':>10} {'plain':>9} {'monthly':>9} {'monthly/':>9}",
        f"{'':52} {'':>10} {'s':>10} {'s':>10} {'µs/unit':>9} {'µs/unit':>9} {'plain':>9}",
    ]
    for key, label, _ in MEASURES:
        m = res.measures[key]
        plain, monthly = common.med(m.seconds[PLAIN]), common.med(m.seconds[MONTHLY])
        n = max(1, m.units)
        lines.append(
            f"{label:52} {m.units:>10,} {plain:>10.4f} {monthly:>10.4f} "
            f"{plain / n * 1e6:>9.3f} {monthly / n * 1e6:>9.3f} {monthly / plain:>8.2f}x"
        )
    lines += [
        "",
        "units: " + "; ".join(f"{label.split(' ', 1)[0]} per {unit}" for _, label, unit in MEASURES[:5]),
    ]
    lines.append("(e) per row written")
    lines += ["", "plans (EXPLAIN of the statement as run; scans, relations read):"]
    for key, label, _ in MEASURES[:5]:
        m = res.measures[key]
        rows = ", ".join(f"{t} {m.rows[t]:,}" for t in TABLES)
        lines.append(f"  {label.split(' ', 1)[0]:5} plain:   {m.plan[PLAIN]}")
        lines.append(f"  {'':5} monthly: {m.plan[MONTHLY]}   (rows returned: {rows})")

    head = f"{'':>12} {'bytes/row':>10}"
    lines += [
        "",
        f"(g) sizes after loading ({res.entries:,} rows):",
        f"  {'plain':32} {head}   {'monthly':32} {head}",
    ]
    plain_sizes, monthly_sizes = list(res.sizes[PLAIN].items()), list(res.sizes[MONTHLY].items())
    for (pn, pb), (mn, mb_) in zip(plain_sizes, monthly_sizes, strict=False):
        per_p, per_m = pb / res.entries, mb_ / res.entries
        lines.append(f"  {pn:32} {mb(pb):>12} {per_p:>10.1f}   {mn:32} {mb(mb_):>12} {per_m:>10.1f}")

    r = res.retention
    rows = max(1, r["rows"])
    lines += [
        "",
        f"(f) retention, once: the oldest month ({r['partition'][-7:]}, {r['rows']:,} rows, "
        f"before {r['cut'][:10]})",
        f"  plain:   DELETE {r['delete_s']:.3f} s ({r['delete_s'] / rows * 1e6:.2f} µs/row), "
        f"VACUUM {r['vacuum_s']:.3f} s ({r['vacuum_s'] / rows * 1e6:.2f} µs/row deleted); total size "
        f"{mb(r['plain_before'])} -> {mb(r['plain_after_delete'])} after DELETE -> "
        f"{mb(r['plain_after_vacuum'])} after VACUUM",
        f"  monthly: DETACH PARTITION {r['detach_s']:.3f} s, DROP TABLE {r['drop_s']:.3f} s; total size "
        f"{mb(r['monthly_before'])} -> {mb(r['monthly_after'])}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = common.bench_parser(__doc__, accounts=20_000)
    p.add_argument("--days", type=int, default=95, help="days of ledger history (default 95)")
    p.add_argument(
        "--seeks", type=int, default=10_000, help="accounts for the first-entry seeks (default 10,000)"
    )
    p.add_argument("--pg-url", default=os.environ.get("BALANCEWATCH_TEST_PG", common.DEFAULT_PG_URL))
    p.add_argument("--repeat", type=int, default=5, help="timed runs per figure; medians are reported")
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the schema")
    args = p.parse_args(argv)
    if args.accounts < 50 or args.repeat < 1 or args.seeks < 1 or not 65 <= args.days <= 365:
        p.error("--accounts must be at least 50, --repeat and --seeks at least 1, --days 65 to 365")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench_usage.HISTORY_DAYS = args.days
    database = argparse.Namespace(backend="postgres", pg_url=args.pg_url, dir=None, keep=args.keep)
    res = Results(args.accounts, args.days, args.repeat, args.seeks)
    with common.bench_database(database, "bw-bench-partition-") as db:
        db.upgrade()
        with psycopg.connect(db.libpq_url, autocommit=True) as conn, conn.cursor() as cur:
            run(cur, res, args)
    common.publish(report(res, common.command_line(__file__, argv)), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
