"""The render stage: messages decided and queued (``queued`` outbox rows) rendered with the live
templates and made ready for delivery.

An alert's decision commits its step states and its outbox rows with each message's template
context (``render/packed.py``), not its rendered text: a chunk of decisions holds its row locks
for deciding alone. This stage then takes the queued rows in batches under a lease
(``outbox.queued``), renders each outside any transaction, and writes the messages back.

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
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from balancewatch import outbox
from balancewatch.config import RetrySettings
from balancewatch.outbox import NotRendered, Queued, Written
from balancewatch.render.packed import CHAT, PackError, unpack
from balancewatch.render.templates import RenderError, TemplateSet
from balancewatch.store import status

log = logging.getLogger(__name__)

BATCH = 200  # rows taken, rendered and written back at a time


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


def render_queued(
    stage: Stage,
    now: datetime,
    *,
    batch: int = BATCH,
    stopping: threading.Event | None = None,
    progressed: Callable[[], None] | None = None,
    stale_after: timedelta | None = None,
) -> StageStats:
    """Render every queued row due at ``now``, batch after batch, until none is left or
    ``stopping`` is set (checked between batches). ``progressed`` is called after each batch.
    Rows held by an instance that stopped or died are taken at once; with ``stale_after``, so
    are those of an instance whose heartbeat is older than that (as delivery takes them)."""
    stats = StageStats()
    while stopping is None or not stopping.is_set():
        with stage.engine.begin() as conn:
            others = outbox.holders(conn, stage.worker)
            dead = status.dead(conn, others, now, stale_after) if others else set()
            rows = outbox.take_queued(conn, stage.worker, now, batch, stage.lease, dead)
        if not rows:
            break
        written: list[Written] = []
        failed: list[NotRendered] = []
        for row in rows:
            _render_row(stage, row, now, written, failed, stats)
        with stage.engine.begin() as conn:
            outbox.write_rendered(conn, stage.worker, now, written)
            outbox.note_not_rendered(conn, stage.worker, failed)
        stats.rendered += len(written)
        if progressed is not None:
            progressed()
        if len(rows) < batch:
            break
    return stats


def _render_row(
    stage: Stage,
    row: Queued,
    now: datetime,
    written: list[Written],
    failed: list[NotRendered],
    stats: StageStats,
) -> None:
    try:
        written.append(render_row(stage.templates, row))
        return
    except PackError as exc:
        problem, retry_at = str(exc), None
    except RenderError as exc:
        problem, retry_at = str(exc.problem), _retry_at(stage.retry, row, now)
    _log_failure(row, problem, retry_at)
    stats.errors.append(problem)
    if retry_at is None:
        stats.parked += 1
        tries = row.attempts + 1
        error = f"not rendered (gave up after {tries} attempt{'' if tries == 1 else 's'}): {problem}"
    else:
        stats.retrying += 1
        error = f"not rendered yet: {problem}"
    failed.append(NotRendered(row.id, error, retry_at))


def render_row(templates: TemplateSet, row: Queued) -> Written:
    """``row``'s message rendered with ``templates``. Raises PackError for a context that cannot
    be read back, RenderError for a template that fails with it."""
    if row.context is None or row.template is None:
        raise PackError("the queued row has no template context")
    context, part = unpack(row.context)
    rendered = templates.render(row.template, context, chat=part == CHAT)
    if part == CHAT:
        return Written(row.id, rendered.subject, rendered.chat or rendered.subject, None)
    return Written(row.id, rendered.subject, rendered.text, rendered.html)


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
