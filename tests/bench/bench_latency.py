"""Alert latency: from a balance's COMMIT to the SMTP server accepting the alert email.

Not a test: it prints each mode's p50, p99 and slowest latency and the push targets' verdicts (p99
<= 1 s, p50 <= 250 ms); it exits 0. docs/performance.md ("Alert latency") has the figures.

    python tests/bench/bench_latency.py                     # every mode, 1,000 changes over 20 s
    python tests/bench/bench_latency.py --count 20 --span 2 --modes b,c --backends sqlite   # CI's size

A driver here sets balances from $300 to $90, each account's in a transaction of its own, evenly
over ``--span`` seconds, taking ``time.time()`` right after each COMMIT returns; the SMTP server
(aiosmtpd on loopback, in this process) takes it when it accepts a message's DATA. Modes: ``a``
balancewatch polling every 30 s (``database.listen: off``), ``b`` every second (both on each of
``--backends``); ``c`` push on PostgreSQL (the trigger ``balancewatch db upgrade`` installs);
``d-default``, ``d-tight``: Prometheus scraping an exporter here and Alertmanager emailing, their
default intervals or 1 s ones. The changes start once all is steady (the daemon's first poll ended
and, pushing, it listens; Prometheus scraped once).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text, update
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the tests package lives at the repository's top
    sys.path.insert(0, str(ROOT))

from balancewatch.core import shipped  # noqa: E402
from balancewatch.store import ledger  # noqa: E402
from balancewatch.store.accounts import add_account  # noqa: E402
from balancewatch.store.db import make_engine  # noqa: E402
from balancewatch.store.tables import BALANCE_TABLE  # noqa: E402
from tests.bench import common  # noqa: E402
from tests.smtpserver import Received, SmtpServer, free_port  # noqa: E402

MODES = ("a", "b", "c", "d-default", "d-tight")
TITLES = {
    "a": "(a) balancewatch, polling every 30 s",
    "b": "(b) balancewatch, polling every 1 s",
    "c": "(c) balancewatch, push (trigger)",
    "d-default": "(d) Prometheus + Alertmanager, defaults",
    "d-tight": "(d) Prometheus + Alertmanager, tight",
}
POLL = {"a": 30.0, "b": 1.0, "c": 30.0}  # balancewatch's poll interval per mode
STACK = {"d-default": (60.0, 30.0), "d-tight": (1.0, 0.0)}  # scrape = evaluation interval, group_wait
HIGH, LOW = 300_00, 90_00  # cents: above and below the $100 step
PUSH_P99, PUSH_P50 = 1.0, 0.25  # seconds: the push targets
START_LIMIT = 60.0  # seconds for a process to be ready
SLACK = 60.0  # seconds beyond a mode's slowest path before a missing email counts as lost
ACCOUNT = re.compile(r"acct-\d{7}")
RULES = """\
alerts:
  - {id: latency, accounts: {billing: prepaid}, below: {USD: [100]}, notify: [owner], template: low-balance}
"""


@dataclass
class Figures:
    """One mode on one backend: how many alerts arrived, and how fast."""

    mode: str
    backend: str
    count: int
    arrived: int = 0  # accounts whose email arrived
    duplicates: int = 0  # emails beyond an account's first
    p50_s: float = math.nan
    p99_s: float = math.nan
    max_s: float = math.nan
    tracebacks: int = 0  # in the daemon's log
    latencies: list[float] = field(default_factory=list)  # seconds, in the order of the changes


@dataclass
class Report:
    """The whole run, as ``--json`` writes it."""

    command: str
    count: int
    span_s: float
    versions: list[str]  # prometheus's and alertmanager's --version, first lines
    runs: list[Figures]


def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Look at ``condition`` every 50 ms until it holds; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start(stack: ExitStack, log: Path, command: Sequence[str], ready: str, env: Any = None) -> None:
    """Start ``command`` (output to ``log``; stopped as ``stack`` closes); return once ``ready`` answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(stop, process)
    until(lambda: process.poll() is not None or http_ok(ready), f"{log.stem} to be ready", START_LIMIT)
    if process.poll() is not None:
        raise RuntimeError(f"{log.stem} exited at start:\n{log.read_text(errors='replace')[-4000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still up after 30 s."""
    process.terminate()  # SIGTERM; nothing when it has ended
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def setup(stack: ExitStack, args: argparse.Namespace, backend: str, work: Path) -> tuple[str, SmtpServer]:
    """An empty database (a SQLite file or a schema) and an SMTP server, until ``stack`` closes."""
    own = argparse.Namespace(backend=backend, pg_url=args.pg_url, dir=work, keep=args.keep)
    db = stack.enter_context(common.bench_database(own, "bw-latency-"))
    smtp = SmtpServer()
    smtp.start()
    stack.callback(smtp.stop)
    return db.url, smtp


def seed(url: str, count: int) -> None:
    """``count`` prepaid accounts, each with its own owner address and $300."""
    engine = make_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        for i in range(count):
            account = common.account_id(i)
            add_account(session, account, f"Account {i}", f"{account}@owner.example")
            ledger.set_balance(session, account, "USD", HIGH, now)
        session.commit()
    if engine.dialect.name == "postgresql":  # statistics, as autovacuum gathers them soon after
        with engine.begin() as conn:
            conn.execute(text("ANALYZE " + ", ".join(t.name for t in BALANCE_TABLE.metadata.sorted_tables)))
    engine.dispose()


def drive(url: str, count: int, span: float) -> dict[str, float]:
    """Set account i's balance to $90 at ``i * span / count`` seconds, each in a transaction of its
    own; return each account's commit time (``time.time()`` right after COMMIT returned)."""
    engine, table, committed = make_engine(url, pool_size=1), BALANCE_TABLE, {}
    with engine.connect() as conn:
        begun = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, begun + i * span / count - time.monotonic()))  # the workload's pace
            account = common.account_id(i)
            where = (table.c.account_id == account) & (table.c.currency == "USD")
            conn.execute(update(table).where(where).values(amount=LOW, updated_at=datetime.now(UTC)))
            conn.commit()
            committed[account] = time.time()
    engine.dispose()
    return committed


def account_of(mail: Received) -> str | None:
    """The account an email is about: in its recipient (balancewatch) or its subject (Alertmanager)."""
    found = ACCOUNT.search(" ".join(mail.rcpt_tos)) or ACCOUNT.search(str(mail.message["Subject"] or ""))
    return found.group(0) if found else None


def collect(smtp: SmtpServer, committed: dict[str, float], timeout: float) -> tuple[dict[str, float], int]:
    """Wait (at most ``timeout`` seconds) until every account of ``committed`` has an email; return
    each account's latency (its first email's acceptance minus its commit) and how many others came."""
    latency: dict[str, float] = {}
    seen = extra = 0
    deadline = time.monotonic() + timeout
    with smtp.cond:
        while True:
            for mail in smtp.received[seen:]:
                account = account_of(mail)
                if account in committed and account not in latency:
                    latency[account] = mail.accepted_at - committed[account]
                else:
                    extra += 1
            seen = len(smtp.received)
            left = deadline - time.monotonic()
            if len(latency) == len(committed) or left <= 0:
                return latency, extra
            smtp.cond.wait(left)


def figures(mode: str, backend: str, count: int, latency: dict[str, float], extra: int) -> Figures:
    """The run's figures: the nearest-rank p50 and p99 of the emails that arrived, and the slowest."""
    xs = sorted(latency.values())
    p50, p99, top = (xs[max(0, math.ceil(q * len(xs)) - 1)] if xs else math.nan for q in (0.5, 0.99, 1))
    in_order = [latency[account] for account in sorted(latency)]  # account i changed i-th
    return Figures(mode, backend, count, len(xs), extra, p50, p99, top, latencies=in_order)


def daemon_env(url: str, smtp: SmtpServer, mode: str, work: Path, metrics_port: int) -> dict[str, str]:
    """The daemon's environment: the rule, the SMTP server, a notify channel of the run's own."""
    (work / "rules").mkdir(exist_ok=True)
    (work / "rules" / "latency.yaml").write_text(RULES)
    settings = {**smtp.env(), "state_dir": str(work / "state"), "rules_dir": str(work / "rules"),
        "templates_dir": str(shipped.templates_dir()), "database__url": url,
        "database__listen": "trigger" if mode == "c" else "off",
        "database__notify_channel": f"bw_latency_{uuid.uuid4().hex[:12]}",
        "delivery__from": "Balance alerts <alerts@platform.example>", "reload__watch": "false",
        "metrics__listen": f"127.0.0.1:{metrics_port}", **({"poll_interval": "1s"} if mode == "b" else {}),
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCEWATCH_")}
    return env | {f"BALANCEWATCH_{k.upper()}": v for k, v in settings.items()}


def run_balancewatch(args: argparse.Namespace, mode: str, backend: str, work: Path) -> Figures:
    """One balancewatch mode: ``db upgrade``, the accounts, the daemon, the changes, the emails."""
    with ExitStack() as stack:
        url, smtp = setup(stack, args, backend, work)
        port, python, log = free_port(), sys.executable, work / "daemon.log"
        env = daemon_env(url, smtp, mode, work, port)
        upgrade = [python, "-m", "balancewatch", "db", "upgrade"]
        subprocess.run(upgrade, env=env, cwd=work, check=True, capture_output=True)
        seed(url, args.count)
        with ExitStack() as daemon:
            start(daemon, log, [python, "-m", "balancewatch", "run"], f"http://127.0.0.1:{port}/-/ready", env)
            if mode == "c":
                until(lambda: "listening for balance changes" in log.read_text(), "the listener", START_LIMIT)
            committed = drive(url, args.count, args.span)
            latency, extra = collect(smtp, committed, args.span + 2 * POLL[mode] + SLACK)
    out = figures(mode, backend, args.count, latency, extra)
    out.tracebacks = log.read_text(errors="replace").count("Traceback")
    return out


class Exporter:
    """``balance_minor{account_id,currency}`` read from ``balance`` at each scrape (counted), on loopback."""

    def __init__(self, stack: ExitStack, url: str) -> None:
        self.engine = make_engine(url, pool_size=2)
        self.scrapes = 0
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        server, _thread = start_http_server(0, "127.0.0.1", registry)
        self.port = int(server.server_port)
        for undo in (self.engine.dispose, server.server_close, server.shutdown):
            stack.callback(undo)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One scrape: every balance, read now."""
        gauge = GaugeMetricFamily("balance_minor", "Balance, minor units", labels=["account_id", "currency"])
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT account_id, currency, amount FROM balance")).all()
        for account, currency, amount in rows:
            gauge.add_metric([account, currency], amount)
        self.scrapes += 1
        yield gauge


def stack_configs(work: Path, tight: bool, ports: dict[str, int]) -> tuple[Path, Path]:
    """Prometheus's and Alertmanager's configuration files (JSON, which YAML reads) in ``work``."""
    expr = 'balance_minor{currency="USD"} < 10000'
    rules = {"groups": [{"name": "balance", "rules": [{"alert": "LowBalance", "expr": expr, "for": "0s"}]}]}
    targets = {name: [{"targets": [f"127.0.0.1:{ports[name]}"]}] for name in ("am", "exporter")}
    prometheus: dict[str, Any] = {
        "rule_files": [str(work / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": targets["am"]}]},
        "scrape_configs": [{"job_name": "balance", "static_configs": targets["exporter"]}],
    }
    route: dict[str, Any] = {"receiver": "mail", "group_by": ["account_id"]}
    if tight:
        prometheus["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        route |= {"group_wait": "0s", "group_interval": "1s"}
    email = {"to": "ops@platform.example", "from": "alertmanager@platform.example", "require_tls": False,
             "smarthost": f"127.0.0.1:{ports['smtp']}", "send_resolved": False,
             "headers": {"Subject": "Low balance {{ .GroupLabels.account_id }}"}}  # fmt: skip
    alertmanager = {"route": route, "receivers": [{"name": "mail", "email_configs": [email]}]}
    for name, config in (("rules", rules), ("prometheus", prometheus), ("alertmanager", alertmanager)):
        (work / f"{name}.yml").write_text(json.dumps(config, indent=1))
    return work / "prometheus.yml", work / "alertmanager.yml"


def run_stack(args: argparse.Namespace, mode: str, work: Path) -> Figures:
    """Prometheus + Alertmanager on PostgreSQL: the exporter, both processes, the changes, the emails."""
    interval, group_wait = STACK[mode]
    with ExitStack() as stack:
        url, smtp = setup(stack, args, "postgres", work)
        common.Database("postgres", work, url).upgrade()
        seed(url, args.count)
        exporter = Exporter(stack, url)
        ports = {"am": free_port(), "prometheus": free_port(), "exporter": exporter.port, "smtp": smtp.port}
        prometheus, alertmanager = stack_configs(work, mode == "d-tight", ports)
        am, prom = f"127.0.0.1:{ports['am']}", f"127.0.0.1:{ports['prometheus']}"
        start(stack, work / "alertmanager.log", [
            "prometheus-alertmanager", f"--config.file={alertmanager}", f"--storage.path={work / 'am'}",
            f"--web.listen-address={am}", "--cluster.listen-address=",
        ], f"http://{am}/-/ready")  # fmt: skip
        start(stack, work / "prometheus.log", [
            "prometheus", f"--config.file={prometheus}", f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address={prom}",
        ], f"http://{prom}/-/ready")  # fmt: skip
        until(lambda: exporter.scrapes > 0, "Prometheus to scrape the exporter", interval + START_LIMIT)
        committed = drive(url, args.count, args.span)
        latency, extra = collect(smtp, committed, args.span + 4 * interval + group_wait + SLACK)
    return figures(mode, "postgres", args.count, latency, extra)


def versions() -> list[str]:
    """The first line of ``prometheus --version`` and of ``prometheus-alertmanager --version``."""
    found = [shutil.which(name) for name in ("prometheus", "prometheus-alertmanager")]
    done = [subprocess.run([path, "--version"], capture_output=True, text=True) for path in found if path]
    return [((d.stdout or d.stderr).splitlines() or ["?"])[0].strip() for d in done]


def seconds(x: float) -> str:
    """``x`` seconds as the table shows them: milliseconds below a second."""
    return "-" if math.isnan(x) else f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def table(report: Report) -> str:
    """The report: the command, what was measured, a row per run, the push targets' verdicts."""
    lines = [
        report.command,
        f"alert latency, a balance's COMMIT -> the SMTP server accepting its email: {report.count:,} "
        f"changes over {report.span_s:g} s, each a different account from $300 to $90 (step: $100)",
        "",
        f"{'mode':<42}{'backend':<10}{'p50':>10}{'p99':>10}{'max':>10}  arrived",
    ]
    for f in report.runs:
        arrived = f"{f.arrived}/{f.count}" + (f", {f.duplicates} more" if f.duplicates else "")
        figures = "".join(f"{seconds(x):>10}" for x in (f.p50_s, f.p99_s, f.max_s))
        lines.append(f"{TITLES[f.mode]:<42}{f.backend:<10}{figures}  {arrived}")
    for f in (f for f in report.runs if f.mode == "c"):
        p99, p50 = (
            f.arrived == f.count and x <= target for x, target in ((f.p99_s, PUSH_P99), (f.p50_s, PUSH_P50))
        )
        lines.append(f"push: p99 <= 1 s {common.verdict(p99)}, p50 <= 250 ms {common.verdict(p50)}")
    lines += [f"{TITLES[f.mode]}, {f.backend}: {f.tracebacks} tracebacks in the daemon's log"
              for f in report.runs if f.tracebacks]  # fmt: skip
    if any(f.mode.startswith("d-") for f in report.runs):
        lines.append("; ".join(report.versions))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; ``--modes`` and ``--backends`` as lists."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=1000, help="changes, each a different account (1,000)")
    p.add_argument("--span", type=float, default=20.0, help="seconds the changes are spread over (20)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--backends", default="sqlite,postgres", help="for modes a and b (default both)")
    p.add_argument("--pg-url", default=os.environ.get("BALANCEWATCH_TEST_PG", common.DEFAULT_PG_URL))
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new one in /tmp)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    args = p.parse_args(argv)
    args.modes, args.backends = args.modes.split(","), args.backends.split(",")
    if unknown := set(args.modes) - set(MODES) or set(args.backends) - {"sqlite", "postgres"}:
        p.error(f"unknown mode or backend: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(common.command_line(__file__, argv), args.count, args.span, versions(), [])
    print(report.command, flush=True)
    with common.work_dir(args.dir, "bw-latency-", keep=args.keep) as work:
        for mode in (m for m in MODES if m in args.modes):
            for backend in args.backends if mode in ("a", "b") else ["postgres"]:
                (run := work / f"{mode}-{backend}").mkdir(exist_ok=True)
                one = (
                    run_balancewatch(args, mode, backend, run) if mode in POLL else run_stack(args, mode, run)
                )
                report.runs.append(one)
                print(f"  {mode}, {backend}: p50 {seconds(one.p50_s)}, p99 {seconds(one.p99_s)}", flush=True)
    common.publish(table(report), report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
