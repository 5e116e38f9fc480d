"""This instance among the others in ``instance_status``: another live process under its
name, claims an earlier run of it or a dead instance left behind, instances long gone.

Each function takes the engine, the instance's name and ``now``; it raises SQLAlchemyError
when the database fails, unless it says otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from balancewatch import outbox
from balancewatch.core import procinfo
from balancewatch.store import status as instance_status
from balancewatch.store.status import STALE_AFTER

log = logging.getLogger("balancewatch.runtime.service")  # the daemon's lines keep its name


def live_namesake(engine: Engine, worker: str, now: datetime) -> str | None:
    """The process of another live instance that goes by ``worker`` (a copied config with a
    fixed ``instance``), or None: an earlier run of this instance, stopped or dead, or a
    database that does not answer."""
    try:
        with engine.connect() as conn:
            row = instance_status.get(conn, worker)
    except SQLAlchemyError:
        return None
    if row is None or row.stopped_at is not None or not row.process or row.process == procinfo.identity():
        return None
    alive = not procinfo.gone(row.process) and now - row.heartbeat_at < STALE_AFTER
    return str(row.process) if alive else None


def take_back_previous_claims(engine: Engine, worker: str, now: datetime) -> int:
    """Release the outbox rows (being sent, or taken for rendering) and report claims still held
    under ``worker``, which come from an earlier run of it (nothing of this run holds any yet).
    Returns the outbox rows released that were being sent."""
    with engine.begin() as conn:
        taken = outbox.release(conn, worker, attempted=True)
        outbox.release_queued(conn, worker)
        instance_status.expire_report_claims(conn, [worker], now)
    return taken


def settle_name(
    engine: Engine, worker: str, namesake: str | None, now: datetime, failed: Callable[[Exception], None]
) -> None:
    """At start: with no other live process going by ``worker`` (``namesake`` None), take back
    what an earlier run of it held; else log that two instances share the name and leave the
    other's work alone. A database failure goes to ``failed``."""
    if namesake is not None:
        log.error(
            "another instance is running as %s (process %s): give each instance its own `instance` "
            "name; its messages are left to it",
            worker,
            namesake,
        )
        return
    try:
        taken = take_back_previous_claims(engine, worker, now)
    except SQLAlchemyError as exc:
        failed(exc)
        return
    if taken:
        log.warning("%d messages an earlier run of %s was sending are due again", taken, worker)


def end_dead_report_claims(
    engine: Engine, worker: str, now: datetime, stale_after: timedelta | None
) -> tuple[int, set[str]]:
    """End the report claims of instances that stopped or died (heartbeat older than
    ``stale_after``; None: judge none by heartbeat). Returns the claims ended and whose they were."""
    with engine.begin() as conn:
        holders = instance_status.report_claim_holders(conn, worker)
        dead = instance_status.dead(conn, holders, now, stale_after) if holders else set()
        ended = instance_status.expire_report_claims(conn, sorted(dead), now)
    return ended, dead


def prune_gone(engine: Engine, now: datetime) -> list[str]:
    """Forget instances silent for over a week; returns their names."""
    with engine.begin() as conn:
        return instance_status.prune(conn, now)
