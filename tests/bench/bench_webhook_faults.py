"""Fault drill with a webhook channel: real daemons killed with SIGKILL while they email the owner and
POST each alert to a webhook receiver.

Not a test: it prints, per backend, what arrived on each channel (lost, decided twice, duplicated),
whether every webhook signature verified and every duplicate was the same event, how long after a
kill delivery was taken up again, against the goal; it says MEETS or MISSES and exits 0.

    python tests/bench/bench_webhook_faults.py                    # 1,000 alerts, 20 kills, both backends
    python tests/bench/bench_webhook_faults.py --alerts 20 --kills 2 --backends sqlite   # what CI runs

The drill is ``bench_faults.py``'s kill -9 storm, with the rule notifying ``[owner,
channel:platform]``: every alert is one email (to the owner, at the loopback SMTP server, which
takes ``--smtp-delay`` per message) and one webhook event (POSTed, signed, to
``tests/webhook_receiver.py`` on loopback, which verifies each signature and holds each answer
``--hook-delay``), each delivered by its own lane of the daemon. The balances of ``--alerts``
accounts fall below the step in ``--kills`` waves; 0.3-1.0 s after each wave the daemon is killed
with SIGKILL and started again at once. Then every email and every event must arrive. On SQLite and
on a private PostgreSQL cluster the script starts and stops itself.

Counted: on the email side as the storm counts (emails received, distinct owners, duplicates); on
the webhook side the requests, the distinct ``webhook-id`` values (each alert's event id, so
distinct ids == alerts when none is lost), duplicates (requests beyond the distinct ids), whether
every request's signature verified, and whether every duplicate carried the same id and the same
body as the first delivery of its event. A request a kill cut short (its body shorter than its
Content-Length: the daemon died while writing it) was never delivered, since no endpoint can read
it; such requests are counted apart and left out of the rest.

Goal: 0 lost and 0 decided twice on either channel; at most one duplicate per kill by email
(the message in flight) and at most ``DEDUPLICATED_EVERY`` per kill on the webhook (its outcomes
are written in groups of that many: receivers deduplicate on the id); every signature verified,
every duplicate identical, no
traceback, and delivery taken up again within one poll plus ``GRACE`` seconds of the restart:
every row the killed daemon held is sent by then.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the tests package lives at the repository's top
    sys.path.insert(0, str(ROOT))

from balancewatch.deliver.registry import DEDUPLICATED_EVERY  # noqa: E402
from balancewatch.outbox import event_id  # noqa: E402
from tests.bench import common  # noqa: E402
from tests.bench.bench_faults import (  # noqa: E402
    GRACE,
    OUTBOX,
    POLL,
    Fleet,
    add_accounts,
    arrived,
    database,
    instance_of,
    kill,
    lower,
    smtp_server,
    stranded,
    until_sent,
    wait_for,
)
from tests.pgcluster import PgCluster  # noqa: E402
from tests.smtpserver import SmtpServer  # noqa: E402
from tests.webhook_receiver import Received, Reply, WebhookReceiver  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CHANNEL = "platform"
RULES = """\
alerts:
  - id: drill
    accounts: {currency: USD}
    below: [100]
    template: low-balance
    notify: [owner, channel:platform]
"""


@dataclass
class Side:
    """What one channel delivered."""

    decided: int = 0  # outbox rows
    decided_twice: int = 0  # accounts with more than one row on this channel
    received: int = 0  # emails accepted / requests answered
    distinct: int = 0  # distinct owners (email) or webhook-ids (webhook)
    duplicated: int = 0  # received - distinct
    lost: int = 0  # alerts - distinct (webhook: of the ids the outbox rows carry)


@dataclass
class Figures:
    backend: str
    alerts: int
    kills: int
    email: Side = field(default_factory=Side)
    webhook: Side = field(default_factory=Side)
    broken: int = 0  # webhook requests cut short by a kill (body shorter than its Content-Length)
    unverified: int = 0  # webhook requests whose signature did not verify
    unknown_ids: int = 0  # webhook-ids no outbox row carries
    mismatched: int = 0  # duplicates whose body differs from the first delivery of their id
    takeover_s: float = float("nan")  # the slowest: a restart until every row the killed one held is sent
    seconds_to_all: float = float("nan")  # the last kill until every email and event arrived
    tracebacks: int = 0

    @property
    def meets(self) -> bool:
        """The goal of the module's docstring."""
        sides = (self.email, self.webhook)
        return (
            all(s.lost == 0 and s.decided_twice == 0 for s in sides)
            and self.email.duplicated <= self.kills
            and self.webhook.duplicated <= self.kills * DEDUPLICATED_EVERY
            and self.unverified == self.unknown_ids == self.mismatched == self.tracebacks == 0
            and self.takeover_s <= POLL + GRACE
        )


@dataclass
class Report:
    drills: list[Figures]


# --------------------------------------------------------------------------- setting up


def configure(fleet: Fleet, hook: WebhookReceiver) -> None:
    """Point ``fleet``'s daemons at a config naming the webhook channel, and at the drill's rule."""
    (fleet.work / "rules" / "drill.yaml").write_text(RULES)
    config = fleet.work / "config.yaml"
    config.write_text(
        "channels:\n"
        f"  {CHANNEL}: {{type: webhook, url: '{hook.url}/hooks', secret_env: HOOK_SECRET, timeout: 10s}}\n"
    )
    fleet.env.update({"BALANCEWATCH_CONFIG": str(config), "HOOK_SECRET": SECRET})


@contextmanager
def receiver(delay: float) -> Iterator[WebhookReceiver]:
    """The webhook endpoint: verifies every signature, answers 200 after ``delay`` seconds."""
    answer = Reply(200, delay=delay)
    with WebhookReceiver(secret=SECRET, respond=lambda _request: answer) as hook:
        yield hook


# --------------------------------------------------------------------------- counting


def all_arrived(smtp: SmtpServer, hook: WebhookReceiver, alerts: int) -> bool:
    """Whether every owner has an email and every alert's event has reached the receiver."""
    return len(hook.ids) >= alerts and len(arrived(smtp)) >= alerts


def complete(request: Received) -> bool:
    """Whether ``request`` arrived whole: as many body bytes as its Content-Length says."""
    return len(request.body) == int(request.headers.get("content-length") or 0)


def side_from_rows(engine: Engine, channel: str) -> Side:
    """What the outbox decided on ``channel``: its rows, and the accounts with more than one."""
    with engine.connect() as conn:
        query = select(OUTBOX.c.account_id, func.count()).where(OUTBOX.c.channel == channel)
        per_account: Counter[str] = Counter(dict(conn.execute(query.group_by(OUTBOX.c.account_id)).all()))
    side = Side(decided=sum(per_account.values()))
    side.decided_twice = sum(1 for n in per_account.values() if n > 1)
    return side


def tally(f: Figures, engine: Engine, smtp: SmtpServer, hook: WebhookReceiver, logs: str) -> Figures:
    """Fill ``f`` from the outbox, the SMTP server, the receiver and the daemons' logs."""
    f.email = side_from_rows(engine, "email")
    with smtp.cond:
        f.email.received = len(smtp.received)
    f.email.distinct = len(arrived(smtp))
    f.email.duplicated = f.email.received - f.email.distinct
    f.email.lost = f.alerts - f.email.distinct

    f.webhook = side_from_rows(engine, CHANNEL)
    with engine.connect() as conn:
        keys = conn.execute(select(OUTBOX.c.idem_key).where(OUTBOX.c.channel == CHANNEL)).scalars()
        expected = {event_id(key) for key in keys}
    # The daemons have stopped: nothing more arrives. A request whose body a kill cut short was
    # never delivered (an endpoint cannot even read it): counted apart, not as an event.
    requests = [r for r in hook.requests if complete(r)]
    f.broken = len(hook.requests) - len(requests)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for request in requests:
        bodies[request.headers.get("webhook-id", "")].add(request.body)
    f.webhook.received = len(requests)
    f.webhook.distinct = len(bodies)
    f.webhook.duplicated = len(requests) - len(bodies)
    f.webhook.lost = f.alerts - len(expected & set(bodies))
    f.unverified = sum(1 for r in requests if r.verified is not True)
    f.unknown_ids = len(set(bodies) - expected)
    f.mismatched = sum(len(b) - 1 for b in bodies.values())
    f.tracebacks = logs.count("Traceback")
    return f


# --------------------------------------------------------------------------- the drill


def storm(args: argparse.Namespace, backend: str, work: Path, cluster: Callable[[], PgCluster]) -> Figures:
    """Kill the daemon ``args.kills`` times while it delivers both channels; see the module's docstring."""
    rng = random.Random(args.seed)
    f = Figures(backend, args.alerts, args.kills)
    with (
        database(backend, work, cluster) as engine,
        smtp_server(args) as smtp,
        receiver(args.hook_delay) as hook,
    ):
        add_accounts(engine, args.alerts)
        fleet = Fleet(work, engine.url.render_as_string(hide_password=False), smtp)
        configure(fleet, hook)
        daemon = fleet.start()
        takeovers: list[float] = []
        last_kill = time.monotonic()
        for wave in (list(range(args.alerts))[w :: args.kills] for w in range(args.kills)):
            lower(engine, wave)
            time.sleep(rng.uniform(0.3, 1.0))  # pacing: the kill lands at a random point of the work
            kill(daemon)
            last_kill = time.monotonic()
            held = stranded(engine, instance_of(daemon))
            daemon = fleet.start()
            takeovers.append(until_sent(engine, held, time.monotonic()))
        f.takeover_s = max(takeovers, default=0.0)
        if wait_for(lambda: all_arrived(smtp, hook, args.alerts), f"{args.alerts} emails and events"):
            f.seconds_to_all = time.monotonic() - last_kill
        fleet.stop_all()
        return tally(f, engine, smtp, hook, fleet.logs())


# --------------------------------------------------------------------------- report


def describe(f: Figures) -> str:
    """The figures of one backend as the drill prints them."""

    def line(name: str, s: Side, what: str) -> str:
        return (
            f"  {name}: decided {s.decided:,} (twice: {s.decided_twice}); {what} {s.received:,}, "
            f"distinct {s.distinct:,}, duplicated {s.duplicated}, lost {s.lost}"
        )

    return "\n".join(
        [
            f"webhook storm ({f.backend}): {f.alerts:,} alerts to the owner and channel:{CHANNEL}, "
            f"{f.kills} kills",
            line("email  ", f.email, "received"),
            line("webhook", f.webhook, "requests"),
            f"  webhook: signatures not verified {f.unverified}; duplicates with another id or body "
            f"{f.mismatched}; ids no row carries {f.unknown_ids}; requests cut short by a kill "
            f"(not counted) {f.broken}",
            f"  delivery taken up again {f.takeover_s:.1f} s after a restart (slowest); every email "
            f"and event arrived {f.seconds_to_all:.1f} s after the last kill; tracebacks {f.tracebacks}",
            f"  0 lost, 0 decided twice, duplicated <= {f.kills} by email and <= "
            f"{f.kills * DEDUPLICATED_EVERY} on the webhook ({DEDUPLICATED_EVERY} a kill), every duplicate "
            f"the same event, every signature verified, taken up within {POLL + GRACE:g} s: "
            f"{common.verdict(f.meets)}",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options (see the module's docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--alerts", type=int, default=1000)
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in the storm (default 20)")
    p.add_argument("--smtp-delay", type=float, default=0.005, help="seconds per message at the SMTP server")
    p.add_argument("--hook-delay", type=float, default=0.005, help="seconds the receiver holds each answer")
    p.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new one in /tmp)")
    common.add_output_options(p, seed=8)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the storm on each backend asked for, print its figures; 0."""
    args = parse_args(argv)
    results: list[Figures] = []
    clusters: list[PgCluster] = []

    def cluster() -> PgCluster:
        """The private PostgreSQL cluster, started the first time it is asked for."""
        if not clusters:
            clusters.append(PgCluster())
            clusters[0].start()
        return clusters[0]

    print(common.command_line(__file__, argv), flush=True)
    with common.work_dir(args.dir, "bw-webhook-faults-", keep=args.keep) as work:
        try:
            for backend in args.backends:
                (work / backend).mkdir(exist_ok=True)
                results.append(storm(args, backend, work / backend, cluster))
                print(describe(results[-1]), flush=True)
        finally:
            for c in clusters:
                c.destroy()
    common.publish("", Report(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
