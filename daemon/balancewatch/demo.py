"""``balancewatch demo``: the real pipeline on a local SQLite file with simulated usage.

About 50 accounts (USD, INR and EUR; prepaid and postpaid; two subaccounts)
use their credit hour by hour over several simulated days; some owners top
up, some let the balance run out. Every simulated hour the same evaluation
and delivery that ``run`` uses looks at the database, on the simulated clock,
with the shipped rules and templates. Mail lands in ``DIR/mail`` as ``.eml``
files, with ``index.html`` listing them.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from balancewatch.config import load_settings
from balancewatch.deliver.mailindex import write_index
from balancewatch.liveset import load_set
from balancewatch.money import to_minor
from balancewatch.service import build_pipeline
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from balancewatch.store.db import make_engine, upgrade
from balancewatch.store.tables import Account

MARKER = ".balancewatch-demo"
START = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = """\
# Written by `balancewatch demo`. Paths are relative to this file.
state_dir: .
files:
  dir: mail
delivery:
  from: "Acme Cloud billing <billing@acme-cloud.example>"
poll_interval: 1h
sweep_interval: 1d
"""

# (currency, locale, timezone, how many, daily usage range in major units)
MARKETS = [
    ("USD", "en_US", "America/New_York", 29, (5, 60)),
    ("INR", "en_IN", "Asia/Kolkata", 10, (400, 4000)),
    ("EUR", "de_DE", "Europe/Berlin", 9, (5, 50)),
]
NAMES = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Cyberdyne",
    "Aperture",
    "Vandelay",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Monarch",
    "Duff",
    "Pied Piper",
    "Dunder",
    "Massive Dynamic",
    "Nakatomi",
    "Zorg",
    "Blue Sun",
    "Weyland",
    "Virtucon",
]


@dataclass
class Simulated:
    account_id: str
    currency: str
    daily: int  # minor units used per day, on average
    tops_up: bool
    balance: int = 0


@dataclass
class Summary:
    directory: Path
    accounts: int
    days: int
    entries: int
    decided: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        per_rule = "\n".join(f"  {rule:<16} {n}" for rule, n in sorted(self.decided.items())) or "  (none)"
        mail = self.directory / "mail"
        return (
            f"balancewatch demo: {self.accounts} accounts, {self.days} simulated days, "
            f"{self.entries} ledger entries, {self.seconds:.1f}s\n"
            f"notifications decided, per rule:\n{per_rule}\n"
            f"emails written: {self.delivered} to {mail}/\n"
            f"open {mail / 'index.html'} to read them; the database is {self.directory / 'balancewatch.db'}\n"
            f"try: balancewatch --config {self.directory / 'config.yaml'} outbox list"
        )


def prepare(directory: Path) -> None:
    """Create ``directory``, or empty it if an earlier demo made it; refuse anything else."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise SystemExit(
                f"{directory} exists and was not made by `balancewatch demo`; choose another --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by balancewatch demo; `balancewatch demo` may delete this folder\n")
    (directory / "config.yaml").write_text(CONFIG)


def run_demo(directory: Path, days: int = 10, seed: int = 7) -> Summary:
    """Build and run the demo in ``directory``; return what happened."""
    started = datetime.now(UTC)
    directory = directory.resolve()
    prepare(directory)
    settings = load_settings(directory / "config.yaml", environ={})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    rng = random.Random(seed)
    sims = _populate(engine, rng)
    pipeline = build_pipeline(engine, settings, load_set(settings.rules_dir, settings.templates_dir))
    summary = Summary(directory, accounts=_count_accounts(engine), days=days, entries=0)
    for hour in range(days * 24 + 1):
        now = START + timedelta(hours=hour)
        if hour:
            summary.entries += _simulate_hour(engine, sims, rng, now)
        summary.decided.update(pipeline.evaluate(now).decided)
        summary.delivered += pipeline.deliver(now).outcomes["sent"]
    write_index(settings.mail_dir)
    summary.seconds = (datetime.now(UTC) - started).total_seconds()
    return summary


def _count_accounts(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(Account)).scalar_one())


def _populate(engine: Engine, rng: random.Random) -> list[Simulated]:
    sims: list[Simulated] = []
    names = iter(NAMES * 3)
    with Session(engine) as session:
        for currency, locale, tz, count, (low, high) in MARKETS:
            for i in range(count):
                name = f"{next(names)} {currency} {i + 1}"
                account_id = f"{currency.lower()}-{i + 1:02d}"
                postpaid = currency == "USD" and i >= count - 3
                add_account(
                    session,
                    account_id,
                    name,
                    f"billing@{account_id}.example",
                    billing="postpaid" if postpaid else "prepaid",
                    timezone=tz,
                    locale=locale,
                    labels={"tier": rng.choice(["free", "pro", "enterprise"])},
                )
                daily = to_minor(rng.randint(low, high), currency)
                sim = Simulated(account_id, currency, daily, tops_up=rng.random() < 0.5)
                sim.balance = int(daily * rng.uniform(1.5, 14))
                sims.append(sim)
        session.flush()
        for n, parent in enumerate(("usd-01", "usd-02"), 1):
            add_account(
                session,
                f"{parent}-team{n}",
                f"Team {n} of {parent}",
                f"team{n}@{parent}.example",
                parent_id=parent,
                timezone="America/New_York",
                locale="en_US",
            )
            sims.append(Simulated(f"{parent}-team{n}", "USD", to_minor(15, "USD"), tops_up=False))
        session.flush()
        for sim in sims:
            if sim.balance:
                ledger.post(
                    session,
                    sim.account_id,
                    sim.currency,
                    sim.balance,
                    "top-up",
                    occurred_at=START,
                    now=START,
                    reference="opening",
                )
        session.commit()
    return sims


def _simulate_hour(engine: Engine, sims: list[Simulated], rng: random.Random, now: datetime) -> int:
    posted = 0
    with Session(engine) as session:
        for sim in sims:
            payer = _payer(sims, sim)
            if payer.balance <= 0:
                if payer.tops_up and rng.random() < 0.05:
                    posted += _post(session, payer, payer.daily * 10, "top-up", now)
                continue  # prepaid service stops at zero
            used = max(1, int(sim.daily / 24 * rng.uniform(0.2, 1.8)))
            posted += _post(session, sim, -used, "usage", now, payer)
            if payer.tops_up and payer.balance < payer.daily and rng.random() < 0.04:
                posted += _post(session, payer, payer.daily * 10, "top-up", now)
        session.commit()
    return posted


def _payer(sims: list[Simulated], sim: Simulated) -> Simulated:
    if "-team" not in sim.account_id:
        return sim
    parent_id = sim.account_id.split("-team")[0]
    return next(s for s in sims if s.account_id == parent_id)


def _post(
    session: Session, sim: Simulated, amount: int, kind: str, now: datetime, payer: Simulated | None = None
) -> int:
    service = "sms" if kind == "usage" else None
    quantity = max(1, -amount // 5) if kind == "usage" else None
    ledger.post(
        session,
        sim.account_id,
        sim.currency,
        amount,
        kind,
        occurred_at=now,
        now=now,
        service=service,
        quantity=quantity,
    )
    (payer or sim).balance += amount
    return 1
