"""SMTP delivery benchmark: balancewatch's email lane against a bare ``smtplib`` loop sending the same
messages over one reused connection.

Not a test: it prints emails delivered per second both ways, their ratio and the target (balancewatch
at least 60 % of the bare loop), MEETS or MISSES, and exits 0. The figures and the command are
recorded in docs/performance.md.

    python tests/bench/bench_smtp.py                                  # 5,000 emails, both backends
    python tests/bench/bench_smtp.py --backend sqlite --count 5000 --profile

The server is ``tests/smtpserver.py`` (aiosmtpd) on loopback, one for the whole run; it records every
message it accepts. By default it runs in a child process, as a mail server on the same machine
runs beside the daemon; ``--server thread`` runs it on a thread of this process instead, as the
tests do (it then shares the interpreter's lock with both sides, so every bit of Python either
side runs holds the server up too). Both sides send to it from this process, one message after
the other.

Setup (not measured): N accounts whose USD balance ($90) sits below the $100 step of a rule with
``notify: [owner]``; one evaluation through the real pipeline (``Pipeline.evaluate``) decides N
alerts and writes N email rows, rendered by the shipped templates (text and HTML). The daemon then
delivers them once, untimed: the messages the server took (envelope sender, recipient, bytes) are
what the floor sends.

Measured, alternating which goes first, in ``--repeat`` rounds (medians reported):

- (a) the floor: one ``smtplib.SMTP``, connected (EHLO) before the clock starts, ``sendmail``-ing
  the N messages as bytes, with the same envelope, one after the other; QUIT after the clock stops;
- (b) balancewatch: the N rows put back as decided (pending, due, no attempt; not measured, and on
  PostgreSQL followed by ``VACUUM ANALYZE outbox``), then ``Pipeline.deliver(now, clock,
  lane="email")`` with the default batch size until a call claims nothing: per batch a claim and
  an SMTP session; per row its message built from the stored text and HTML, a copy per recipient
  (To naming only them), sent, and its outcome committed before the server can accept the next.

Besides the rates, each side's CPU time in this process per email (``time.process_time``: the
courier's thread and its outcome writer; the server when it runs on a thread; not the database
server). Each round checks both sides at the server: N messages, each (recipient, Message-ID) of
the set once, with To naming the recipient alone; on balancewatch's side every row ``sent``.
PostgreSQL is a new schema in ``--pg-url``, dropped afterwards. ``--profile`` runs one more
balancewatch round under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pickle
import pstats
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select, text, update
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the tests package lives at the repository's top
    sys.path.insert(0, str(ROOT))

from balancewatch.config import load_settings  # noqa: E402
from balancewatch.core import shipped  # noqa: E402
from balancewatch.runtime.loadset import load_set  # noqa: E402
from balancewatch.runtime.pipeline import Pipeline, build_pipeline, utc_clock  # noqa: E402
from balancewatch.store import ledger  # noqa: E402
from balancewatch.store.accounts import add_account  # noqa: E402
from balancewatch.store.db import make_engine  # noqa: E402
from balancewatch.store.tables import OUTBOX_TABLE  # noqa: E402
from tests.bench import common  # noqa: E402
from tests.smtpserver import Received, SmtpServer  # noqa: E402

LANE = "email"
TARGET = 0.60  # balancewatch's emails per second, at least this share of the bare loop's
RULES = """\
alerts:
  - id: bench
    accounts: {currency: USD}
    below: [100]
    notify: [owner]
"""
OUT = OUTBOX_TABLE.c
MESSAGE_ID = re.compile(rb"^Message-ID: *(\S+)", re.MULTILINE | re.IGNORECASE)
TO = re.compile(rb"^To: *(.*)$", re.MULTILINE | re.IGNORECASE)

Mail = tuple[str, tuple[str, ...], bytes]  # envelope sender, recipients, the message's bytes


@dataclass
class Figures:
    backend: str
    count: int
    repeat: int
    batch_size: int
    server: str  # where the SMTP server runs: "process" or "thread"
    decide_s: float = 0.0  # the evaluation that wrote the rows (setup, not a target)
    message_bytes: int = 0  # the mean message as the server took it
    floor_rates: list[float] = field(default_factory=list)  # emails per second, per round
    daemon_rates: list[float] = field(default_factory=list)
    floor_cpu: list[float] = field(default_factory=list)  # this process's CPU ms per email, per round
    daemon_cpu: list[float] = field(default_factory=list)
    floor_rate: float = 0.0  # medians
    daemon_rate: float = 0.0
    ratio: float = 0.0  # daemon_rate / floor_rate
    delivered: bool = True  # every round of both sides: each email arrived once, To its recipient
    # One more balancewatch round, timed by step (ms per email): see ``split``.
    steps: dict[str, float] = field(default_factory=dict)
    profile: str = ""


@dataclass
class Report:
    runs: list[Figures]


# --------------------------------------------------------------------------- setup


def pipeline_for(db: common.Database, smtp: Server, batch_size: int | None = None) -> Pipeline:
    """Settings with SMTP pointed at ``smtp`` and the rules, and the pipeline the daemon would
    build from them."""
    rules = db.work / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "bench.yaml").write_text(RULES)
    config = db.work / "config.yaml"
    config.write_text(
        f"rules_dir: {rules}\nstate_dir: {db.work / 'state'}\n"
        "delivery: {from: alerts@platform.example"
        + (f", batch_size: {batch_size}" if batch_size else "")
        + "}\n"
        f"smtp: {{host: {smtp.host}, port: {smtp.port}, security: none, timeout: 10s}}\n"
    )
    settings = load_settings(config, {"BALANCEWATCH_DATABASE__URL": db.url})
    live = load_set(settings.rules_dir, shipped.templates_dir(), channels=tuple(settings.channels))
    return build_pipeline(make_engine(db.url), settings, live)


def decide(pipeline: Pipeline, count: int) -> float:
    """``count`` accounts at $90, below the rule's step, each with an owner; one evaluation
    decides them all. Returns the seconds the evaluation took."""
    now = datetime.now(UTC)
    with Session(pipeline.engine) as session:
        for i in range(count):
            account = common.account_id(i)
            add_account(session, account, f"Account {i}", f"{account}@owner.example")
            ledger.set_balance(session, account, "USD", 9_000, now)
        session.commit()
    seconds, stats = common.timed(lambda: pipeline.evaluate(datetime.now(UTC)))
    written = sent_or_due(pipeline.engine)[1]
    if written != count:
        raise RuntimeError(f"the evaluation wrote {written} rows, not {count}: {stats}")
    return seconds


def reset(engine: Engine) -> None:
    """Put the email rows back as they were decided: pending, due now, never tried. On PostgreSQL
    the table is vacuumed after, so every round starts alike."""
    values = {
        "status": "pending",
        "attempts": 0,
        "deliveries": {},
        "next_attempt_at": datetime.now(UTC),
        "lease_until": None,
        "claimed_by": None,
        "last_error": None,
        "sent_at": None,
    }
    with engine.begin() as conn:
        conn.execute(update(OUTBOX_TABLE).where(OUT.channel == LANE).values(**values))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE outbox"))


def sent_or_due(engine: Engine) -> tuple[int, int]:
    """(email rows sent, email rows in all)."""
    with engine.connect() as conn:
        sent = select(func.count()).where(OUT.channel == LANE, OUT.status == "sent")
        total = select(func.count()).where(OUT.channel == LANE)
        return int(conn.execute(sent).scalar_one()), int(conn.execute(total).scalar_one())


def take(smtp: Server) -> list[Received]:
    """What the server accepted since the last ``take``, which it then forgets."""
    return smtp.take()


class Server:
    """``tests/smtpserver.py``'s server on loopback: in a child process (``process``: as a mail
    server on the same machine runs, beside the daemon), or on a thread of this process
    (``thread``: as the tests run it; it then shares this interpreter's lock with both sides,
    so every bit of Python either side runs also holds the server up)."""

    def __init__(self, where: str, work: Path) -> None:
        self.where, self.host, self._work = where, "127.0.0.1", work
        self._child: subprocess.Popen[str] | None = None
        self._thread: SmtpServer | None = None
        if where == "thread":
            self._thread = SmtpServer()
            self._thread.start()
            self.port = self._thread.port
            return
        command = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        self._child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._child.stdout is not None
        self.port = int(self._child.stdout.readline().split()[1])  # "ready PORT"

    def take(self) -> list[Received]:
        """What the server accepted since the last ``take``, which it then forgets."""
        if self._thread is not None:
            with self._thread.cond:
                got, self._thread.received = self._thread.received, []
            return got
        assert self._child is not None and self._child.stdin and self._child.stdout
        path = self._work / "received.pickle"
        self._child.stdin.write(f"take {path}\n")
        self._child.stdin.flush()
        self._child.stdout.readline()
        mails = pickle.loads(path.read_bytes())
        path.unlink()
        return [Received(sender, tuple(to), data) for sender, to, data in mails]

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
        if self._child is not None:
            assert self._child.stdin is not None
            self._child.stdin.close()
            self._child.wait(timeout=30)


def serve() -> int:
    """The child of ``Server("process")``: serve on a free port, say ``ready PORT``, and answer
    each ``take PATH`` by writing what was accepted since (pickled) to PATH; end at end of input."""
    server = SmtpServer()
    server.start()
    print(f"ready {server.port}", flush=True)
    for line in sys.stdin:
        with server.cond:
            got, server.received = server.received, []
        Path(line.split(" ", 1)[1].strip()).write_bytes(
            pickle.dumps([(m.mail_from, m.rcpt_tos, m.data) for m in got])
        )
        print("ok", flush=True)
    server.stop()
    return 0


# --------------------------------------------------------------------------- the two sides

MAX_CALLS = 10_000
DAEMON_DEADLINE = 600.0  # seconds for one round, at any --count this benchmark is run with


def floor(smtp: Server, mails: Sequence[Mail]) -> float:
    """``sendmail`` each of ``mails`` over one connection; the seconds it took (connecting and QUIT
    are outside the clock)."""
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10.0) as client:
        client.ehlo()
        start = time.perf_counter()
        for sender, recipients, data in mails:
            refused = client.sendmail(sender, list(recipients), data)
            if refused:
                raise RuntimeError(f"the server refused {refused}")
        return time.perf_counter() - start


def daemon(pipeline: Pipeline) -> float:
    """``Pipeline.deliver`` on the email lane until a call claims nothing; the seconds it took.

    Each call delivers every due row unless a batch fails, and a failed row waits for its retry:
    rows claimed again and again, or a round past DAEMON_DEADLINE, end the run with what the
    last call did rather than leave it looping."""
    start, calls = time.perf_counter(), 0
    while calls < MAX_CALLS and time.perf_counter() - start <= DAEMON_DEADLINE:
        stats, calls = pipeline.deliver(utc_clock(), utc_clock, lane=LANE), calls + 1
        if stats.claimed == 0:
            return time.perf_counter() - start
    raise RuntimeError(
        f"delivery did not end: {calls} calls in {time.perf_counter() - start:.1f} s, the last "
        f"claimed {stats.claimed} rows: {stats}"
    )


def identity(mail: Received) -> tuple[str, str]:
    """(recipient, Message-ID) of ``mail``; raises ValueError unless it went to one recipient
    whose address alone its To header names."""
    (recipient,) = mail.rcpt_tos
    head = mail.data.split(b"\r\n\r\n", 1)[0]
    message_id, to = MESSAGE_ID.search(head), TO.findall(head)
    if message_id is None or [t.strip().decode() for t in to] != [recipient]:
        raise ValueError(f"To {to!r} of a message to {recipient}")
    return recipient, message_id.group(1).decode()


def received_well(got: Sequence[Received], expected: set[tuple[str, str]]) -> bool:
    """Whether ``got`` is each (recipient, Message-ID) of ``expected`` exactly once."""
    try:
        seen = [identity(mail) for mail in got]
    except ValueError:
        return False
    return len(seen) == len(expected) and set(seen) == expected


def one_round(f: Figures, pipeline: Pipeline, smtp: Server, mails: list[Mail], order: int) -> None:
    """Time both sides once, the floor first when ``order`` is even, and check what arrived."""
    expected = {identity(Received(s, r, d)) for s, r, d in mails}
    for side in ("floor", "daemon") if order % 2 == 0 else ("daemon", "floor"):
        if side == "daemon":
            reset(pipeline.engine)
        take(smtp)
        cpu = time.process_time()
        seconds = floor(smtp, mails) if side == "floor" else daemon(pipeline)
        cpu = time.process_time() - cpu
        (f.floor_rates if side == "floor" else f.daemon_rates).append(len(mails) / seconds)
        (f.floor_cpu if side == "floor" else f.daemon_cpu).append(cpu * 1e3 / len(mails))
        f.delivered &= received_well(take(smtp), expected)
        if side == "daemon":
            f.delivered &= sent_or_due(pipeline.engine) == (len(mails), len(mails))


def split(pipeline: Pipeline, smtp: Server) -> dict[str, float]:
    """One more balancewatch round with a stopwatch on each step of the courier; milliseconds per
    email: ``build`` (``Route.attempt`` less the send: the message from the row, each copy),
    ``smtp`` (``SmtpTransport.send``: the copies through smtplib), ``record`` (``Courier._settle``:
    the outcome and the next row's lease, committed), ``batch`` (the rest of
    ``Courier._send_batch``: the session per batch, the loop) and ``claim`` (the rest)."""
    from balancewatch.deliver.registry import Route
    from balancewatch.deliver.smtp import SmtpTransport
    from balancewatch.deliver.worker import Courier

    reset(pipeline.engine)
    hooks = {
        "send": (Courier, "_send_batch"),
        "attempt": (Route, "attempt"),
        "smtp": (SmtpTransport, "send"),
        "record": (Courier, "_settle"),
    }
    watches = {name: common.Stopwatch() for name in hooks}
    originals = {name: getattr(owner, attr) for name, (owner, attr) in hooks.items()}
    try:
        for name, (owner, attr) in hooks.items():
            setattr(owner, attr, watches[name].wrap(originals[name]))
        total = daemon(pipeline)
    finally:
        for name, (owner, attr) in hooks.items():
            setattr(owner, attr, originals[name])
    n = sent_or_due(pipeline.engine)[1]
    take(smtp)
    send, attempt, sending, record = (watches[k].seconds for k in ("send", "attempt", "smtp", "record"))
    seconds = {
        "build": attempt - sending,
        "smtp": sending,
        "record": record,
        "batch": send - attempt - record,
        "claim": total - send,
        "total": total,
    }
    return {k: v * 1e3 / n for k, v in seconds.items()}


def profiled(pipeline: Pipeline, smtp: Server, top: int) -> str:
    """One more balancewatch round under cProfile: the top functions by cumulative and by own time."""
    reset(pipeline.engine)
    profile = cProfile.Profile()
    profile.runcall(daemon, pipeline)
    take(smtp)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def measure(db: common.Database, args: argparse.Namespace) -> Figures:
    """Set up ``db``, deliver once untimed (what the server took is what the floor sends), then
    alternate both sides ``args.repeat`` times; the figures."""
    db.upgrade()
    smtp = Server(args.server, db.work)
    try:
        pipeline = pipeline_for(db, smtp, args.batch_size)
        f = Figures(db.backend, args.count, args.repeat, pipeline.settings.delivery.batch_size, args.server)
        f.decide_s = decide(pipeline, args.count)
        daemon(pipeline)
        mails = [(m.mail_from, m.rcpt_tos, m.data) for m in take(smtp)]
        if sent_or_due(pipeline.engine) != (args.count, args.count) or len(mails) != args.count:
            raise RuntimeError(f"the first delivery sent {len(mails)} emails, not {args.count}")
        f.message_bytes = sum(len(data) for _, _, data in mails) // max(1, len(mails))
        floor(smtp, mails[:100])
        take(smtp)
        for i in range(args.repeat):
            one_round(f, pipeline, smtp, mails, i)
        f.steps = split(pipeline, smtp)
        if args.profile:
            f.profile = profiled(pipeline, smtp, args.profile)
        pipeline.engine.dispose()
    finally:
        smtp.stop()
    f.floor_rate, f.daemon_rate = common.med(f.floor_rates), common.med(f.daemon_rates)
    f.ratio = f.daemon_rate / f.floor_rate if f.floor_rate else float("nan")
    return f


# --------------------------------------------------------------------------- report


def report(f: Figures) -> str:
    """The figures of one backend as the benchmark prints them."""
    rates = ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in zip(f.daemon_rates, f.floor_rates, strict=True))
    lines = [
        f"SMTP delivery ({f.backend}): {f.count:,} emails of {f.message_bytes:,} bytes, batches of "
        f"{f.batch_size}, {f.repeat} alternating rounds, medians; the server in a {f.server}",
        f"  setup (not measured): deciding the {f.count:,} alerts took {f.decide_s:.1f} s",
        "",
        f"  (a) floor: bare smtplib, one connection        {f.floor_rate:9,.0f} emails/s",
        f"  (b) balancewatch: Pipeline.deliver(email)      {f.daemon_rate:9,.0f} emails/s",
        f"  ratio (b)/(a)                                  {f.ratio:9.1%}   target >= {TARGET:.0%}: "
        f"{common.verdict(f.ratio >= TARGET)}",
        f"  per email: balancewatch {1e3 / f.daemon_rate:.2f} ms, floor {1e3 / f.floor_rate:.2f} ms; "
        f"CPU of this process {common.med(f.daemon_cpu):.2f} ms and {common.med(f.floor_cpu):.2f} ms",
        f"  rounds (balancewatch/floor per second): {rates}",
        "  balancewatch per email, by step (one more round): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in f.steps.items()),
        f"  every email arrived once per round, To its recipient alone, every row sent: "
        f"{'yes' if f.delivered else 'NO'}",
    ]
    if f.profile:
        lines += ["", "profile of one more balancewatch round:", f.profile]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options (see the module's docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=5000, help="emails delivered each way (default 5,000)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument(
        "--repeat", "--rounds", type=int, default=3, help="alternating rounds; medians are reported"
    )
    p.add_argument("--pg-url", default=os.environ.get("BALANCEWATCH_TEST_PG", common.DEFAULT_PG_URL))
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new one in /tmp)")
    p.add_argument(
        "--profile", type=int, nargs="?", const=30, default=0, help="profile one more round (top N lines)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the database (SQLite file or schema)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="delivery.batch_size (default: the daemon's default)"
    )
    p.add_argument(
        "--server",
        choices=["process", "thread"],
        default="process",
        help="run the SMTP server in a child process (default) or on a thread of this one",
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure each backend asked for, print its figures; 0."""
    args = parse_args(argv)
    if args.serve:
        return serve()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(common.command_line(__file__, argv), flush=True)
    runs = []
    for backend in backends:
        per = argparse.Namespace(**{**vars(args), "backend": backend})
        with common.bench_database(per, "bw-bench-smtp-") as db:
            runs.append(measure(db, args))
        print(report(runs[-1]), flush=True)
    common.publish("", Report(runs), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
