"""Fault drill: real daemons, a real SMTP server and real databases, under the faults a deployment meets.

Not a test: it prints, for each drill, how many alerts were lost, decided twice, delivered twice and
delivered at all, and how long after the last fault every alert had arrived, against the goal; it says
MEETS or MISSES and exits 0.

    python tests/bench/bench_faults.py                               # every drill, 1,000 alerts, 20 kills
    python tests/bench/bench_faults.py --drill storm --storm-backends sqlite postgres
    python tests/bench/bench_faults.py --alerts 40 --kills 2 --outage 1   # what CI runs

The drills:

- ``storm``: one daemon (``balancewatch run``, a real process) and ``--alerts`` accounts whose
  balances fall below the rule's step in ``--kills`` waves. After each wave, at a random moment
  0.3–1.0 s later, the daemon is killed with SIGKILL and started again at once. Then every alert
  must arrive. On SQLite and on PostgreSQL.
- ``db-restart``: one daemon on PostgreSQL delivering to a slow server; once a third of the alerts
  have arrived the database is stopped (immediate shutdown, a private cluster) for ``--outage``
  seconds and started again. The daemon's log is read too: warnings about the database, tracebacks.
- ``two-instances``: two daemons on one PostgreSQL decide and deliver the same alerts; once half
  have arrived one of them is killed with SIGKILL; the other finishes.

The SMTP server (aiosmtpd on loopback) takes ``--smtp-delay`` seconds for each message, so messages
are in flight when the faults strike. PostgreSQL is a private cluster this script starts (initdb as
the postgres user), never a shared server. Goal, in every drill: 0 lost, 0 decided twice, a
duplicate only for a message in flight at a fault (at most one per fault), and delivery taken up
again within one poll plus ``GRACE`` seconds of the recovery (not a lease later): after a kill,
every message the killed daemon had claimed is sent once the next instance serves (the restarted
one, or the other instance); after the database restart, mail flows again. The time until every
alert had arrived is printed too; it also counts the backlog, sent at the server's pace.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select, text
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the tests package lives at the repository's top
    sys.path.insert(0, str(ROOT))

from balancewatch.core import shipped  # noqa: E402
from balancewatch.store import ledger  # noqa: E402
from balancewatch.store.accounts import add_account  # noqa: E402
from balancewatch.store.db import make_engine, upgrade  # noqa: E402
from balancewatch.store.tables import Outbox  # noqa: E402
from tests.bench import common  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402
from tests.smtpserver import SmtpServer  # noqa: E402

OUTBOX = Outbox.__table__  # type: ignore[attr-defined]
POLL = 1.0  # seconds: the daemons' poll and delivery intervals in the drills
GRACE = 10.0  # seconds on top of one poll for every alert to arrive after the last fault
WAIT_LIMIT = 180.0  # seconds to wait for the last alert before calling it lost
DRILLS = ("storm", "db-restart", "two-instances")
RULES = """\
alerts:
  - id: drill
    accounts: {currency: USD}
    below: [100]
    template: low-balance
"""


@dataclass
class Figures:
    drill: str
    backend: str
    alerts: int
    faults: int
    decided: int = 0  # outbox rows
    decided_twice: int = 0  # accounts with more than one outbox row
    received: int = 0  # emails the server accepted
    distinct: int = 0  # accounts whose email arrived
    duplicated: int = 0  # received - distinct
    lost: int = 0  # alerts - distinct
    seconds_to_all: float = float("nan")  # from the last fault to the last alert arriving
    takeover_s: float = float("nan")  # the slowest recovery: see the module's docstring
    sent_by: dict[str, int] = field(default_factory=dict)  # rows sent, per instance
    database_warnings: int = 0  # log lines saying the database is (still) unreachable or back
    tracebacks: int = 0

    @property
    def meets(self) -> bool:
        return (
            self.lost == 0
            and self.decided_twice == 0
            and self.duplicated <= self.faults
            and self.tracebacks == 0
            and self.takeover_s <= POLL + GRACE
        )


@dataclass
class Report:
    drills: list[Figures]


# --------------------------------------------------------------------------- daemons


class Fleet:
    """``balancewatch run`` processes sharing one environment; logs in ``work``."""

    def __init__(self, work: Path, url: str, smtp: SmtpServer) -> None:
        self.work = work
        rules = work / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "drill.yaml").write_text(RULES)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
        self.env.update(
            {
                f"BALANCEWATCH_{k.upper()}": v
                for k, v in {
                    **smtp.env(),
                    "state_dir": str(work / "state"),
                    "rules_dir": str(rules),
                    "templates_dir": str(shipped.templates_dir()),
                    "database__url": url,
                    "poll_interval": f"{POLL}s",
                    "delivery__interval": f"{POLL}s",
                    "delivery__from": "Balance alerts <alerts@platform.example>",
                    "reload__watch": "false",
                    "smtp__timeout": "10s",
                }.items()
            }
        )
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, instance: str = "") -> subprocess.Popen[bytes]:
        """Start a daemon; return once it serves."""
        log = self.work / f"run{len(self.started)}.log"
        env = {**self.env, **({"BALANCEWATCH_INSTANCE": instance} if instance else {})}
        with log.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "balancewatch", "run"],
                env=env,
                cwd=self.work,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.started.append((process, log))
        wait_for(lambda: "running as" in log.read_text() or process.poll() is not None, "the daemon to serve")
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited at start:\n{log.read_text()}")
        return process

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for _, path in self.started)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_LIMIT) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            print(f"  gave up waiting for {what} after {timeout:g}s", flush=True)
            return False
        time.sleep(0.05)
    return True


# --------------------------------------------------------------------------- data and counting


def account(i: int) -> str:
    return common.account_id(i)


def add_accounts(engine: Engine, count: int) -> None:
    """``count`` accounts holding $200 each, above the rule's $100 step."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        for i in range(count):
            add_account(session, account(i), f"Account {i}", f"{account(i)}@owner.example")
            ledger.set_balance(session, account(i), "USD", 20_000, now)
        session.commit()


def lower(engine: Engine, ids: Sequence[int]) -> None:
    """Let the balances of ``ids`` fall to $90, as a billing system writes them."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        for i in ids:
            ledger.set_balance(session, account(i), "USD", 9_000, now)
        session.commit()


def arrived(smtp: SmtpServer) -> set[str]:
    with smtp.cond:
        return {to.split("@", 1)[0] for mail in smtp.received for to in mail.rcpt_tos}


def tally(figures: Figures, engine: Engine, smtp: SmtpServer, logs: str) -> Figures:
    with engine.connect() as conn:
        per_account = Counter(
            dict(conn.execute(select(OUTBOX.c.account_id, func.count()).group_by(OUTBOX.c.account_id)).all())
        )
        senders = conn.execute(
            select(OUTBOX.c.claimed_by, func.count())
            .where(OUTBOX.c.status == "sent")
            .group_by(OUTBOX.c.claimed_by)
        ).all()
    with smtp.cond:
        received = len(smtp.received)
    distinct = arrived(smtp)
    figures.decided = sum(per_account.values())
    figures.decided_twice = sum(1 for n in per_account.values() if n > 1)
    figures.received = received
    figures.distinct = len(distinct)
    figures.duplicated = received - len(distinct)
    figures.lost = figures.alerts - len(distinct)
    figures.sent_by = {str(name): int(n) for name, n in senders}
    figures.database_warnings = sum(
        1
        for line in logs.splitlines()
        if "database unreachable" in line or "database still unreachable" in line
    )
    figures.tracebacks = logs.count("Traceback")
    return figures


def instance_of(process: subprocess.Popen[bytes]) -> str:
    """The instance name a daemon started without one goes by."""
    return f"{socket.gethostname()}:{process.pid}"


def stranded(engine: Engine, instance: str) -> list[int]:
    """The outbox rows ``instance`` holds claimed (after its death: what it left in flight)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.id).where(OUTBOX.c.status == "sending", OUTBOX.c.claimed_by == instance)
        )
        return list(rows.scalars())


def until_sent(engine: Engine, ids: Sequence[int], since: float) -> float:
    """Seconds from ``since`` until the rows ``ids`` are sent (NaN if they never are)."""

    def done() -> bool:
        with engine.connect() as conn:
            query = select(func.count()).where(OUTBOX.c.id.in_(list(ids)), OUTBOX.c.status != "sent")
            return conn.execute(query).scalar_one() == 0

    if not ids:
        return 0.0
    return time.monotonic() - since if wait_for(done, f"rows {list(ids)} to be sent") else float("nan")


def until_all(smtp: SmtpServer, alerts: int, since: float) -> float:
    """Seconds from ``since`` until every alert has arrived (NaN if they never do)."""
    if not wait_for(lambda: len(arrived(smtp)) >= alerts, f"{alerts} alerts"):
        return float("nan")
    return time.monotonic() - since


# --------------------------------------------------------------------------- drills


@contextmanager
def database(backend: str, work: Path, cluster: Callable[[], PgCluster]) -> Iterator[Engine]:
    """An empty, upgraded database: a SQLite file in ``work``, or a new database in the private cluster."""
    if backend == "sqlite":
        url = f"sqlite:///{work / 'balancewatch.db'}"
    else:
        name = f"drill_{work.name.replace('-', '_')}"
        admin = make_engine(cluster().url, pool_size=1)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = cluster().url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def storm(args: argparse.Namespace, backend: str, work: Path, cluster: Callable[[], PgCluster]) -> Figures:
    rng = random.Random(args.seed)
    figures = Figures("storm", backend, args.alerts, args.kills)
    with database(backend, work, cluster) as engine, smtp_server(args) as smtp:
        add_accounts(engine, args.alerts)
        fleet = Fleet(work, engine.url.render_as_string(hide_password=False), smtp)
        daemon = fleet.start()
        waves = [list(range(args.alerts))[w :: args.kills] for w in range(args.kills)]
        takeovers: list[float] = []
        last_fault = time.monotonic()
        for wave in waves:
            lower(engine, wave)
            time.sleep(rng.uniform(0.3, 1.0))  # pacing: the kill lands at a random point of the work
            kill(daemon)
            last_fault = time.monotonic()
            held = stranded(engine, instance_of(daemon))
            daemon = fleet.start()
            takeovers.append(until_sent(engine, held, time.monotonic()))
        figures.takeover_s = max(takeovers)
        figures.seconds_to_all = until_all(smtp, args.alerts, last_fault)
        fleet.stop_all()
        return tally(figures, engine, smtp, fleet.logs())


def db_restart(args: argparse.Namespace, work: Path, cluster: Callable[[], PgCluster]) -> Figures:
    figures = Figures("db-restart", "postgres", args.alerts, 1)
    with database("postgres", work, cluster) as engine, smtp_server(args, delay=args.smtp_delay * 4) as smtp:
        add_accounts(engine, args.alerts)
        fleet = Fleet(work, engine.url.render_as_string(hide_password=False), smtp)
        fleet.start()
        lower(engine, range(args.alerts))
        wait_for(lambda: len(arrived(smtp)) >= args.alerts // 3, "a third of the alerts")
        cluster().stop()
        time.sleep(args.outage)  # the outage itself
        with smtp.cond:
            before = len(smtp.received)
        cluster().start()
        back = time.monotonic()
        if wait_for(lambda: len(smtp.received) > before or len(arrived(smtp)) >= args.alerts, "mail again"):
            figures.takeover_s = time.monotonic() - back
        figures.seconds_to_all = until_all(smtp, args.alerts, back)
        fleet.stop_all()
        return tally(figures, engine, smtp, fleet.logs())


def two_instances(args: argparse.Namespace, work: Path, cluster: Callable[[], PgCluster]) -> Figures:
    figures = Figures("two-instances", "postgres", args.alerts, 1)
    with database("postgres", work, cluster) as engine, smtp_server(args) as smtp:
        add_accounts(engine, args.alerts)
        fleet = Fleet(work, engine.url.render_as_string(hide_password=False), smtp)
        first = fleet.start("drill-a")
        fleet.start("drill-b")
        lower(engine, range(args.alerts))
        wait_for(lambda: len(arrived(smtp)) >= args.alerts // 2, "half the alerts")
        kill(first)
        killed = time.monotonic()
        figures.takeover_s = until_sent(engine, stranded(engine, "drill-a"), killed)
        figures.seconds_to_all = until_all(smtp, args.alerts, killed)
        fleet.stop_all()
        return tally(figures, engine, smtp, fleet.logs())


@contextmanager
def smtp_server(args: argparse.Namespace, delay: float | None = None) -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.delay = args.smtp_delay if delay is None else delay
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- report


def describe(f: Figures) -> str:
    shares = ", ".join(f"{name} {n}" for name, n in sorted(f.sent_by.items()))
    if len(f.sent_by) > 3:
        shares = f"{len(f.sent_by)} daemon processes, {max(f.sent_by.values())} at most by one"
    lines = [
        f"{f.drill} ({f.backend}): {f.alerts:,} alerts, {f.faults} fault{'s' if f.faults != 1 else ''}",
        f"  decided {f.decided:,} (twice: {f.decided_twice}); received {f.received:,}, distinct "
        f"{f.distinct:,}, duplicated {f.duplicated}, lost {f.lost}",
        f"  delivery taken up again {f.takeover_s:.1f} s after recovery (slowest); every alert "
        f"arrived {f.seconds_to_all:.1f} s after the last fault",
        f"  sent by: {shares}",
    ]
    if f.drill == "db-restart":
        lines.append(f"  daemon log: {f.database_warnings} database warnings, {f.tracebacks} tracebacks")
    lines.append(
        f"  0 lost, 0 decided twice, duplicated <= {f.faults}, no traceback, taken up within "
        f"{POLL + GRACE:g} s: {common.verdict(f.meets)}"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--drill", choices=DRILLS, action="append", help="run only this drill (repeatable)")
    p.add_argument("--alerts", type=int, default=1000)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in the storm (default 20)")
    p.add_argument("--outage", type=float, default=5.0, help="seconds the database is down (default 5)")
    p.add_argument("--smtp-delay", type=float, default=0.005, help="seconds per message at the server")
    p.add_argument(
        "--storm-backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new one in /tmp)")
    common.add_output_options(p, seed=8)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    drills = args.drill or list(DRILLS)
    results: list[Figures] = []
    clusters: list[PgCluster] = []

    def cluster() -> PgCluster:
        if not clusters:
            clusters.append(PgCluster())
            clusters[0].start()
        return clusters[0]

    print(common.command_line(__file__, argv), flush=True)
    with common.work_dir(args.dir, "bw-faults-", keep=args.keep) as work:
        try:
            runs: list[tuple[str, Callable[[Path], Figures]]] = []
            if "storm" in drills:
                runs += [
                    (f"storm-{b}", lambda w, b=b: storm(args, b, w, cluster)) for b in args.storm_backends
                ]
            if "db-restart" in drills:
                runs.append(("db-restart", lambda w: db_restart(args, w, cluster)))
            if "two-instances" in drills:
                runs.append(("two-instances", lambda w: two_instances(args, w, cluster)))
            for name, run in runs:
                (work / name).mkdir(exist_ok=True)
                figures = run(work / name)
                results.append(figures)
                print(describe(figures), flush=True)
        finally:
            for c in clusters:
                c.destroy()
    common.publish("", Report(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
