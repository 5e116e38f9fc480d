"""The render stage: messages decided and queued (``queued`` outbox rows) rendered with the live
templates and made ready for delivery.

An alert's decision commits its step states and its outbox rows with each message's template
context (``render/packed.py``), not its rendered text: a chunk of decisions holds its row locks
for deciding alone. This stage then takes the queued rows in batches under a lease
(``outbox.queued``), renders each outside any transaction, and writes the messages back.

A large backlog (more than ``PARALLEL_AFTER`` full batches) is rendered by worker processes, one
per core (``render/workers.py``), while this process takes the next batch and writes the last.

A row whose render fails (a template error, the render budget) stays queued and is tried again
with delivery's backoff (``delivery.retry``), so a template fixed and reloaded sends it; once
``delivery.retry.give_up_after`` has passed since the decision it is parked with the error, and
``balancewatch outbox retry`` queues it again. A context that cannot be read back (written by
an unknown release, or edited by hand) is parked at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from balancewatch import outbox
from balancewatch.config import RetrySettings
from balancewatch.core.procinfo import default_processes
from balancewatch.outbox import NotRendered, Queued, Written
from balancewatch.render.templates import TemplateSet
from balancewatch.render.workers import Failed, Outcome, RenderWorkers, render_all
from balancewatch.store import status

log = logging.getLogger(__name__)

BATCH = 200  # rows taken, rendered and written back at a time
PARALLEL_AFTER = 3  # full batches in a row from which a pass renders in worker processes


@dataclass
class StageStats:
    """What one pass of the render stage did."""

    rendered: int = 0
    retrying: int = 0  # not rendered; queued again for later
    parked: int = 0  # not rendered, given up on
    errors: list[str] = field(default_factory=list)  # one line per row not rendered


@dataclass(frozen=True)
class Stage:
    """Where and how a pass renders: the database, the live templates, the worker holding the
    lease (the instance's name), the lease and the retry policy (``delivery:``)."""

    engine: Engine
    templates: TemplateSet
    worker: str
    lease: timedelta
    retry: RetrySettings


Handed = list[tuple[list[Queued], Future[list[Outcome]]]]


def render_queued(
    stage: Stage,
    now: datetime,
    *,
    batch: int = BATCH,
    stopping: threading.Event | None = None,
    progressed: Callable[[], None] | None = None,
    stale_after: timedelta | None = None,
    processes: int | None = None,
    templates_changed: bool = False,
) -> StageStats:
    """Render every queued row due at ``now``, batch after batch, until none is left or
    ``stopping`` is set (checked between batches). ``progressed`` is called after each batch.
    Rows held by an instance that stopped or died (judged once, as the pass begins) are taken at
    once; with ``stale_after``, so are those of an instance whose heartbeat is older than that
    (as delivery takes them).
    ``processes``: worker processes for a large backlog (default one per core; 0: none). With
    ``templates_changed`` (a reload, a start), rows waiting to be tried again are tried now."""
    stats = StageStats()
    processes = default_processes() if processes is None else processes
    workers: RenderWorkers | None = None
    handed: tuple[list[Queued], Handed] | None = None  # a batch the workers are rendering
    full = 0
    dead = _begin_pass(stage, now, stale_after, templates_changed)
    try:
        while stopping is None or not stopping.is_set():
            rows = _take(stage, now, batch, dead)
            if rows and workers is None and processes > 0 and full >= PARALLEL_AFTER:
                workers = RenderWorkers(stage.templates, processes)
            if handed is not None and workers is not None:  # written once the next batch is taken
                _write(stage, now, handed[0], workers.collect(handed[1]), stats)
                handed = None
            if not rows:
                break
            if workers is not None and not workers.broken:
                handed = (rows, workers.submit(rows))
            else:
                _write(stage, now, rows, render_all(stage.templates, rows), stats)
            full = full + 1 if len(rows) == batch else 0
            if progressed is not None:
                progressed()
            if len(rows) < batch and handed is None:
                break
        if handed is not None and workers is not None:
            _write(stage, now, handed[0], workers.collect(handed[1]), stats)
    finally:
        if workers is not None:
            workers.close()
    return stats


def _begin_pass(stage: Stage, now: datetime, stale_after: timedelta | None, changed: bool) -> set[str]:
    """Free the rows this instance still holds (a pass cut short by a database failure: one
    evaluation runs at a time), make the rows waiting for a retry due when the templates
    ``changed``, and return the other instances holding queued rows that stopped or died."""
    with stage.engine.begin() as conn:
        outbox.release_queued(conn, stage.worker)
        if changed:
            outbox.due_now(conn, now)
        others = outbox.holders(conn, stage.worker)
        return status.dead(conn, others, now, stale_after) if others else set()


def _take(stage: Stage, now: datetime, batch: int, dead: set[str]) -> list[Queued]:
    with stage.engine.begin() as conn:
        return outbox.take_queued(conn, stage.worker, now, batch, stage.lease, dead)


def _write(
    stage: Stage, now: datetime, rows: list[Queued], outcomes: list[Outcome], stats: StageStats
) -> None:
    """Write what rendering made of ``rows``: the messages, and why the others were not."""
    by_id = {row.id: row for row in rows}
    written = [o for o in outcomes if isinstance(o, Written)]
    failed = [_failure(stage, by_id[o.id], o, now, stats) for o in outcomes if isinstance(o, Failed)]
    with stage.engine.begin() as conn:
        outbox.write_rendered(conn, stage.worker, now, written)
        outbox.note_not_rendered(conn, stage.worker, failed)
    stats.rendered += len(written)


def _failure(stage: Stage, row: Queued, failed: Failed, now: datetime, stats: StageStats) -> NotRendered:
    """What to note of a row not rendered: parked at once when its context is unreadable or its
    give-up window has passed, else tried again with the delivery backoff."""
    problem = failed.problem
    retry_at = None if failed.unreadable else _retry_at(stage.retry, row, now)
    _log_failure(row, problem, retry_at)
    stats.errors.append(problem)
    if retry_at is None:
        stats.parked += 1
        tries = row.attempts + 1
        error = f"not rendered (gave up after {tries} attempt{'' if tries == 1 else 's'}): {problem}"
    else:
        stats.retrying += 1
        error = f"not rendered yet: {problem}"
    return NotRendered(row.id, error, retry_at)


def _retry_at(retry: RetrySettings, row: Queued, now: datetime) -> datetime | None:
    """When to render ``row`` again, or None once its give-up window (from the decision, or from
    ``outbox retry``) is ``give_up_after`` long."""
    if now - outbox.give_up_from(row.created_at, row.deliveries or {}, row.recipients) >= retry.give_up_after:
        return None
    return now + outbox.backoff(row.attempts + 1, retry.initial, retry.max, row.id)


def _log_failure(row: Queued, problem: str, retry_at: datetime | None) -> None:
    then = "parked" if retry_at is None else f"tried again at {retry_at.isoformat(timespec='seconds')}"
    log.error(
        "rule %s, account %s: %s (%s)",
        row.rule_id,
        row.account_id,
        problem,
        then,
        extra={"rule": row.rule_id, "account": row.account_id, "outbox_id": row.id},
    )
