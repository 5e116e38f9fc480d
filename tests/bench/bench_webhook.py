"""Webhook delivery benchmark: balancewatch's webhook lane against a bare HTTP client posting the same events.

Not a test: it prints deliveries per second both ways, their ratio and the target (balancewatch at
least 60 % of the bare client), MEETS or MISSES, and exits 0. The figures and the command are
recorded in docs/performance.md.

    python tests/bench/bench_webhook.py                                  # 5,000 events, both backends
    python tests/bench/bench_webhook.py --backend sqlite --count 20000 --profile

The endpoint is ``tests/webhook_receiver.py`` on loopback, one for the whole run, with the channel's
secret: it verifies every signature (Standard Webhooks) and answers 200 at once. Both sides post to
it from this process, one request after the other.

Setup (not measured): N accounts whose USD balance ($90) sits below the $100 step of a rule with
``notify: channel:platform`` (a webhook channel); one evaluation through the real pipeline
(``Pipeline.evaluate``) decides N alerts and writes N webhook rows, as ``fan_out`` writes them.

Measured, alternating which goes first, in ``--rounds`` rounds (medians reported):

- (a) the floor: a bare ``httpx.Client``, made before the clock starts, POSTing the N rows' bodies
  over one reused connection, sequentially, with the header set balancewatch sends (content-type,
  user-agent, accept-encoding, webhook-id, webhook-timestamp and a webhook-signature computed per
  request with ``standardwebhooks``); each answer's status is checked;
- (b) balancewatch: the N rows put back as decided (pending, due, no attempt; not measured, and on
  PostgreSQL followed by ``VACUUM ANALYZE outbox``), then ``Pipeline.deliver(now, clock,
  lane="platform")`` with the default batch size until a call claims nothing: per batch a claim
  and an HTTP client (one connection), per row a signed POST and its outcome committed together
  with the lease of the row to send next.

Besides the rates, each side's CPU time in this thread per delivery (``time.thread_time``: the
receiver's threads and the database server are not in it; waiting for a busy CPU does not count).
Each side is checked every round: N requests at the receiver, N distinct webhook-ids, every
signature verified; on balancewatch's side every row ``sent``. Both sides run once untimed on the
first 100 rows first. PostgreSQL is a new schema in ``--pg-url`` (as the other benchmarks do),
dropped afterwards. ``--profile`` runs one more balancewatch round under cProfile and prints where
its time went.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select, text, update
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the tests package lives at the repository's top
    sys.path.insert(0, str(ROOT))

from balancewatch import __version__  # noqa: E402
from balancewatch.config import load_settings  # noqa: E402
from balancewatch.core import shipped  # noqa: E402
from balancewatch.runtime.loadset import load_set  # noqa: E402
from balancewatch.runtime.pipeline import Pipeline, build_pipeline, utc_clock  # noqa: E402
from balancewatch.store import ledger  # noqa: E402
from balancewatch.store.accounts import add_account  # noqa: E402
from balancewatch.store.db import make_engine  # noqa: E402
from balancewatch.store.tables import OUTBOX_TABLE  # noqa: E402
from tests.bench import common  # noqa: E402
from tests.webhook_receiver import WebhookReceiver  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CHANNEL = "platform"
TARGET = 0.60  # balancewatch's deliveries per second, at least this share of the bare client's
WARM = 100  # rows each side sends once, untimed, before the rounds
RULES = """\
alerts:
  - id: bench
    accounts: {currency: USD}
    below: [100]
    notify: channel:platform
"""
OUT = OUTBOX_TABLE.c


@dataclass
class Figures:
    backend: str
    count: int
    rounds: int
    batch_size: int
    decide_s: float = 0.0  # the evaluation that wrote the rows (setup, not a target)
    body_bytes: int = 0  # the mean webhook body
    floor_rates: list[float] = field(default_factory=list)  # deliveries per second, per round
    daemon_rates: list[float] = field(default_factory=list)
    floor_cpu: list[float] = field(default_factory=list)  # this thread's CPU ms per delivery, per round
    daemon_cpu: list[float] = field(default_factory=list)
    floor_rate: float = 0.0  # medians
    daemon_rate: float = 0.0
    ratio: float = 0.0  # daemon_rate / floor_rate
    delivered: bool = True  # every round of both sides: N requests, N ids, all verified, all sent
    # One more balancewatch round, timed by step (ms per delivery): see ``split``.
    steps: dict[str, float] = field(default_factory=dict)
    profile: str = ""


@dataclass
class Report:
    runs: list[Figures]


# --------------------------------------------------------------------------- setup


def pipeline_for(db: common.Database, receiver: WebhookReceiver) -> Pipeline:
    """Settings with the ``platform`` webhook channel pointed at ``receiver`` and the rules, and the
    pipeline the daemon would build from them."""
    rules = db.work / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "bench.yaml").write_text(RULES)
    config = db.work / "config.yaml"
    config.write_text(
        f"rules_dir: {rules}\nstate_dir: {db.work / 'state'}\n"
        "delivery: {from: alerts@platform.example}\n"
        "channels:\n"
        f"  {CHANNEL}: {{type: webhook, url: '{receiver.url}/hooks', secret_env: HOOK_SECRET, "
        "timeout: 10s}\n"
    )
    settings = load_settings(config, {"HOOK_SECRET": SECRET, "BALANCEWATCH_DATABASE__URL": db.url})
    live = load_set(settings.rules_dir, shipped.templates_dir(), channels=tuple(settings.channels))
    return build_pipeline(make_engine(db.url), settings, live)


def decide(pipeline: Pipeline, count: int) -> float:
    """``count`` accounts at $90, below the rule's step; one evaluation decides them all. Returns
    the seconds the evaluation took."""
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


def payloads(engine: Engine) -> list[tuple[str, bytes]]:
    """The rows' (webhook-id, body), in id order: what the floor sends."""
    from balancewatch.outbox import event_id

    with engine.connect() as conn:
        rows = conn.execute(select(OUT.idem_key, OUT.text).where(OUT.channel == CHANNEL).order_by(OUT.id))
        return [(event_id(key), body.encode("utf-8")) for key, body in rows]


def reset(engine: Engine, limit: int | None = None) -> None:
    """Put the webhook rows (the first ``limit`` by id, else all) back as they were decided: pending,
    due now, never tried. On PostgreSQL the table is vacuumed after, so every round starts alike."""
    where = OUT.channel == CHANNEL
    if limit is not None:
        first = select(OUT.id).where(where).order_by(OUT.id).limit(limit)
        where = OUT.id.in_(first.scalar_subquery())
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
        conn.execute(update(OUTBOX_TABLE).where(where).values(**values))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE outbox"))


def sent_or_due(engine: Engine) -> tuple[int, int]:
    """(webhook rows sent, webhook rows in all)."""
    with engine.connect() as conn:
        sent = select(func.count()).where(OUT.channel == CHANNEL, OUT.status == "sent")
        total = select(func.count()).where(OUT.channel == CHANNEL)
        return int(conn.execute(sent).scalar_one()), int(conn.execute(total).scalar_one())


# --------------------------------------------------------------------------- the two sides


def floor(url: str, events: Sequence[tuple[str, bytes]]) -> float:
    """POST ``events`` with a bare client over one kept-alive connection; the seconds it took."""
    signer = Webhook(SECRET)
    with httpx.Client(timeout=10.0) as client:
        start = time.perf_counter()
        for webhook_id, body in events:
            stamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": f"balancewatch/{__version__}",
                "accept-encoding": "identity",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": signer.sign(webhook_id, datetime.fromtimestamp(stamp, UTC), body),
            }
            status = client.post(url, content=body, headers=headers).status_code
            if not 200 <= status < 300:
                raise RuntimeError(f"the receiver answered {status}")
        return time.perf_counter() - start


def daemon(pipeline: Pipeline) -> float:
    """``Pipeline.deliver`` on the webhook lane until a call claims nothing; the seconds it took."""
    start = time.perf_counter()
    for _ in range(10_000):  # a bound: each call delivers every due row unless a batch fails
        if pipeline.deliver(utc_clock(), utc_clock, lane=CHANNEL).claimed == 0:
            break
    return time.perf_counter() - start


def received_well(receiver: WebhookReceiver, before: int, count: int) -> bool:
    """Whether the requests since the ``before``-th are ``count``, with ``count`` distinct
    webhook-ids, every signature verified."""
    got = receiver.requests[before:]
    ids = {r.headers.get("webhook-id") for r in got}
    return len(got) == count and len(ids) == count and all(r.verified for r in got)


def one_round(
    f: Figures, pipeline: Pipeline, receiver: WebhookReceiver, events: list[tuple[str, bytes]], order: int
) -> None:
    """Time both sides once, the floor first when ``order`` is even, and check what arrived."""
    url = f"{receiver.url}/hooks"
    for side in ("floor", "daemon") if order % 2 == 0 else ("daemon", "floor"):
        if side == "daemon":
            reset(pipeline.engine)
        before, cpu = len(receiver.requests), time.thread_time()
        seconds = floor(url, events) if side == "floor" else daemon(pipeline)
        cpu = time.thread_time() - cpu
        (f.floor_rates if side == "floor" else f.daemon_rates).append(len(events) / seconds)
        (f.floor_cpu if side == "floor" else f.daemon_cpu).append(cpu * 1e3 / len(events))
        f.delivered &= received_well(receiver, before, len(events))
        if side == "daemon":
            f.delivered &= sent_or_due(pipeline.engine) == (len(events), len(events))


def split(pipeline: Pipeline) -> dict[str, float]:
    """One more balancewatch round with a stopwatch on each step of the courier; milliseconds per
    delivery: ``post`` (``Route.attempt``: the envelope, its signature, the POST and reading the
    answer), ``record`` (``Courier._settle``: the outcome and the next row's lease, committed),
    ``batch`` (the rest of ``Courier._send_batch``: the HTTP client and connection per batch, the
    loop) and ``claim`` (the rest: claiming each batch, the last empty claim)."""
    from balancewatch.deliver.registry import Route
    from balancewatch.deliver.worker import Courier

    reset(pipeline.engine)
    hooks = {"send": (Courier, "_send_batch"), "post": (Route, "attempt"), "record": (Courier, "_settle")}
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
    send, post, record = (watches[k].seconds for k in ("send", "post", "record"))
    seconds = {"post": post, "record": record, "batch": send - post - record, "claim": total - send}
    return {k: v * 1e3 / n for k, v in {**seconds, "total": total}.items()}


def profiled(pipeline: Pipeline, top: int) -> str:
    """One more balancewatch round under cProfile: the top functions by cumulative and by own time."""
    reset(pipeline.engine)
    profile = cProfile.Profile()
    profile.runcall(daemon, pipeline)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def measure(db: common.Database, args: argparse.Namespace) -> Figures:
    """Set up ``db``, then alternate both sides ``args.rounds`` times; the figures."""
    db.upgrade()
    with WebhookReceiver(secret=SECRET) as receiver:
        pipeline = pipeline_for(db, receiver)
        f = Figures(db.backend, args.count, args.rounds, pipeline.settings.delivery.batch_size)
        f.decide_s = decide(pipeline, args.count)
        events = payloads(pipeline.engine)
        f.body_bytes = sum(len(body) for _, body in events) // max(1, len(events))
        floor(f"{receiver.url}/hooks", events[:WARM])
        reset(pipeline.engine, WARM)
        daemon(pipeline)
        for i in range(args.rounds):
            one_round(f, pipeline, receiver, events, i)
        f.steps = split(pipeline)
        if args.profile:
            f.profile = profiled(pipeline, args.profile)
        pipeline.engine.dispose()
    f.floor_rate, f.daemon_rate = common.med(f.floor_rates), common.med(f.daemon_rates)
    f.ratio = f.daemon_rate / f.floor_rate if f.floor_rate else float("nan")
    return f


# --------------------------------------------------------------------------- report


def report(f: Figures) -> str:
    """The figures of one backend as the benchmark prints them."""
    rates = ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in zip(f.daemon_rates, f.floor_rates, strict=True))
    lines = [
        f"webhook delivery ({f.backend}): {f.count:,} events of {f.body_bytes:,} bytes, batches of "
        f"{f.batch_size}, {f.rounds} alternating rounds, medians",
        f"  setup (not measured): deciding the {f.count:,} alerts took {f.decide_s:.1f} s",
        "",
        f"  (a) floor: bare httpx.Client, one connection   {f.floor_rate:9,.0f} deliveries/s",
        f"  (b) balancewatch: Pipeline.deliver(lane)        {f.daemon_rate:9,.0f} deliveries/s",
        f"  ratio (b)/(a)                                   {f.ratio:9.1%}   target >= {TARGET:.0%}: "
        f"{common.verdict(f.ratio >= TARGET)}",
        f"  per delivery: balancewatch {1e3 / f.daemon_rate:.2f} ms, floor {1e3 / f.floor_rate:.2f} ms; "
        f"CPU of this thread {common.med(f.daemon_cpu):.2f} ms and {common.med(f.floor_cpu):.2f} ms",
        f"  rounds (balancewatch/floor per second): {rates}",
        "  balancewatch per delivery, by step (one more round): "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in f.steps.items()),
        f"  every event arrived once per round, every signature verified, every row sent: "
        f"{'yes' if f.delivered else 'NO'}",
    ]
    if f.profile:
        lines += ["", "profile of one more balancewatch round:", f.profile]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options (see the module's docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=5000, help="events delivered each way (default 5,000)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    p.add_argument("--pg-url", default=os.environ.get("BALANCEWATCH_TEST_PG", common.DEFAULT_PG_URL))
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new one in /tmp)")
    p.add_argument(
        "--profile", type=int, nargs="?", const=30, default=0, help="profile one more round (top N lines)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the database (SQLite file or schema)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure each backend asked for, print its figures; 0."""
    args = parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(common.command_line(__file__, argv), flush=True)
    runs = []
    for backend in backends:
        per = argparse.Namespace(**{**vars(args), "backend": backend})
        with common.bench_database(per, "bw-bench-webhook-") as db:
            runs.append(measure(db, args))
        print(report(runs[-1]), flush=True)
    common.publish("", Report(runs), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
