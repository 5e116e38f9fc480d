"""The demo's simulated customers: about 50 accounts in three markets, their usage hour by
hour and their top-ups, written through the ledger as a billing platform would."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, insert, update
from sqlmodel import Session

from balancewatch.core.money import to_minor
from balancewatch.store import ledger
from balancewatch.store.accounts import add_account
from balancewatch.store.tables import BALANCE_TABLE, LEDGER_TABLE

START = datetime(2026, 2, 24, tzinfo=UTC)

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


def populate(engine: Engine, rng: random.Random) -> list[Simulated]:
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


def simulate_hour(engine: Engine, sims: list[Simulated], rng: random.Random, now: datetime) -> int:
    """Post an hour of usage (and some top-ups), as a billing system writing the ledger would:
    one insert of the entries and one update of the balances they moved, in one transaction."""
    entries: list[dict[str, object]] = []
    moved: dict[str, Simulated] = {}
    for sim in sims:
        payer = _payer(sims, sim)
        if payer.balance <= 0:
            if payer.tops_up and rng.random() < 0.05:
                _post(entries, moved, payer, payer.daily * 10, "top-up", now)
            continue  # prepaid service stops at zero
        used = max(1, int(sim.daily / 24 * rng.uniform(0.2, 1.8)))
        _post(entries, moved, sim, -used, "usage", now, payer)
        if payer.tops_up and payer.balance < payer.daily and rng.random() < 0.04:
            _post(entries, moved, payer, payer.daily * 10, "top-up", now)
    if entries:
        with engine.begin() as conn:
            conn.execute(insert(LEDGER_TABLE), entries)
            conn.execute(
                update(BALANCE_TABLE)
                .where(
                    BALANCE_TABLE.c.account_id == bindparam("payer"),
                    BALANCE_TABLE.c.currency == bindparam("cur"),
                )
                .values(amount=bindparam("amount"), updated_at=now),
                [{"payer": p.account_id, "cur": p.currency, "amount": p.balance} for p in moved.values()],
            )
    return len(entries)


def _payer(sims: list[Simulated], sim: Simulated) -> Simulated:
    if "-team" not in sim.account_id:
        return sim
    parent_id = sim.account_id.split("-team")[0]
    return next(s for s in sims if s.account_id == parent_id)


def _post(
    entries: list[dict[str, object]],
    moved: dict[str, Simulated],
    sim: Simulated,
    amount: int,
    kind: str,
    now: datetime,
    payer: Simulated | None = None,
) -> None:
    """Add one entry of ``sim``'s to ``entries``, moving its payer's balance (what ledger.post does)."""
    payer = payer or sim
    ledger.check_entry(amount, kind, sim.currency)
    payer.balance += amount
    moved[payer.account_id] = payer
    usage = kind == "usage"
    entries.append(
        {
            "account_id": sim.account_id,
            "currency": sim.currency,
            "amount": amount,
            "kind": kind,
            "service": "sms" if usage else None,
            "quantity": max(1, -amount // 5) if usage else None,
            "occurred_at": now,
            "reference": None,
            "balance_after": payer.balance,
        }
    )
