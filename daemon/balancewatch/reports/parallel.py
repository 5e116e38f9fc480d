"""A large fire's reports built and rendered in worker processes, while this process claims the
next batch and records the last: every core works on one report run.

Building (grouped SQL, then Python) and rendering (Jinja, CSS inlining) hold the GIL, so threads
would not help; a worker process has its own engine, its own copy of the live set's templates
(compiled from the same files, within the same budget) and the settings. This process keeps
everything that makes a report go out once:

- claims are made and committed here, a batch at a time, before a worker sees the batch;
- a worker only reads (the contents) and renders, and hands back the outcomes and messages;
- the outcomes and outbox rows are written here, in one transaction per batch, only for claims
  still ours (``sending.record``), as without workers.

So a crash anywhere (a worker, or this process between claiming and recording) leaves claims
that are not final: their lease passes, and the next run, here or on another instance, takes
them over and builds them; nothing is written twice (the outbox key and the claim's holder).
At most ``AHEAD`` + 1 batches are claimed and not yet recorded at a time.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from balancewatch.config import Settings
from balancewatch.core.limits import RenderBudget
from balancewatch.core.problems import Problem
from balancewatch.core.workerpool import spawned_pool
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import TemplateSet, TemplateSuspendedError
from balancewatch.reports import compose, sending
from balancewatch.reports.base import AccountInfo, Period
from balancewatch.reports.sending import Maker, ReportStats, SendJob
from balancewatch.rules.reports import CompiledReport

log = logging.getLogger(__name__)

PARALLEL_MIN = 200  # claimed accounts in a batch from which its reports go to the workers
AHEAD = 1  # batches handed to the workers beyond the one being recorded


@dataclass(frozen=True)
class _Setup:
    """What a worker process starts from: picklable, no connection, no compiled code."""

    settings: Settings
    files: dict[str, str]
    directory: Path
    budget: RenderBudget
    rule_ids: tuple[str, ...]


@dataclass(frozen=True)
class Chunk:
    """What a worker made of some accounts of a batch: their reports, or the template's
    refusal (``suspended``: the accounts are to be tried again later), and its seconds."""

    prepared: list[compose.Prepared]
    suspended: Problem | None = None
    seconds: dict[str, float] = field(default_factory=dict)


_WORKER: dict[str, Any] = {}  # in a worker process: its engine, templates and setup


def _start(setup: _Setup) -> None:
    from balancewatch.store.db import make_engine

    _WORKER["setup"] = setup
    _WORKER["templates"] = TemplateSet(setup.files, setup.directory, setup.budget)
    _WORKER["engine"] = make_engine(setup.settings.database_url, pool_size=1)


def _make(report: CompiledReport, period: Period, now: datetime, accounts: list[AccountInfo]) -> Chunk:
    """In a worker: build and render the reports of ``accounts``."""
    setup: _Setup = _WORKER["setup"]
    maker = Maker(_WORKER["engine"], _WORKER["templates"], setup.settings, now, setup.rule_ids)
    seconds: defaultdict[str, float] = defaultdict(float)
    try:
        return Chunk(maker.prepare(report, period, accounts, seconds=seconds), seconds=dict(seconds))
    except TemplateSuspendedError as exc:
        return Chunk([], exc.problem, dict(seconds))


class ReportWorkers:
    """A pool of worker processes for one run, started when first used; ``close`` ends it."""

    def __init__(self, live: LiveSet, settings: Settings, processes: int) -> None:
        templates = live.templates
        self.processes = processes
        self._setup = _Setup(
            settings,
            dict(templates.files),
            templates.directory,
            templates.budget,
            tuple(r.id for r in live.rules),
        )
        self._pool: ProcessPoolExecutor | None = None
        self.broken = False

    def submit(
        self, report: CompiledReport, period: Period, now: datetime, accounts: list[AccountInfo]
    ) -> Future[Chunk]:
        if self._pool is None:
            self._pool = spawned_pool(self.processes, _start, self._setup)
        return self._pool.submit(_make, report, period, now, accounts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@dataclass
class _Pending:
    """A claimed batch handed to the workers: its accounts in chunks, each with its result."""

    chunks: list[tuple[list[AccountInfo], Future[Chunk]]]


def send_batches(
    job: SendJob,
    report: CompiledReport,
    period: Period,
    fire: datetime,
    batches: Iterable[Sequence[AccountInfo]],
    stats: ReportStats,
    workers: ReportWorkers,
) -> None:
    """``sending.send_batch`` for each of ``batches`` (sets ``stats.interrupted`` when a stop is
    requested between two), the large ones built and rendered by ``workers`` while the next is
    claimed. Every batch handed out is recorded (or its claims expired) before this returns,
    whatever happens. Raises TemplateSuspendedError, once every batch handed out is settled,
    when the template was refused."""
    pending: deque[_Pending] = deque()
    suspended: list[Problem] = []
    try:
        for batch in batches:
            if job.stop_requested:
                stats.interrupted = True
                break
            claimed = sending.claim_batch(job, report, period, fire, batch, stats)
            if not claimed:
                continue
            if workers.broken or len(claimed) < PARALLEL_MIN:
                while pending:  # in claim order: a fire's reports are recorded in account order
                    _settle(job, report, period, pending.popleft(), stats, suspended, workers)
                _in_process(job, report, period, claimed, stats, suspended)
            else:
                pending.append(_hand_out(job, report, period, claimed, workers))
                while len(pending) > AHEAD:
                    _settle(job, report, period, pending.popleft(), stats, suspended, workers)
            if suspended:
                break  # the template waits: the rest of the fire is left for the next run
    finally:
        while pending:
            _settle(job, report, period, pending.popleft(), stats, suspended, workers)
    if suspended:
        raise TemplateSuspendedError(suspended[0])


def _hand_out(
    job: SendJob, report: CompiledReport, period: Period, claimed: list[AccountInfo], workers: ReportWorkers
) -> _Pending:
    """``claimed`` in one chunk per worker, in account order."""
    size = -(-len(claimed) // workers.processes)
    chunks = []
    for part in (claimed[i : i + size] for i in range(0, len(claimed), size)):
        try:
            future = workers.submit(report, period, job.now, part)
        except BrokenProcessPool as exc:  # settled like a chunk whose worker died: built here
            future = Future()
            future.set_exception(exc)
        chunks.append((part, future))
    return _Pending(chunks)


def _settle(
    job: SendJob,
    report: CompiledReport,
    period: Period,
    batch: _Pending,
    stats: ReportStats,
    suspended: list[Problem],
    workers: ReportWorkers,
) -> None:
    """Record what the workers made of ``batch``; a chunk whose worker died is built here, and
    so is every batch after it."""
    for accounts, future in batch.chunks:
        try:
            chunk = future.result()
        except BrokenProcessPool:
            if not workers.broken:
                log.warning("report %s: a worker process ended; building in this process", report.id)
            workers.broken = True
            _in_process(job, report, period, accounts, stats, suspended)
            continue
        for stage, spent in chunk.seconds.items():
            stats.seconds[stage] += spent
        if chunk.suspended is not None:
            suspended.append(chunk.suspended)
            sending.expire(job, report, period, [a.id for a in accounts])
            continue
        sending.record(job, report, period, chunk.prepared, stats, None)


def _in_process(
    job: SendJob,
    report: CompiledReport,
    period: Period,
    accounts: list[AccountInfo],
    stats: ReportStats,
    suspended: list[Problem],
) -> None:
    try:
        prepared = sending.build(job, report, period, accounts, seconds=stats.seconds)
    except TemplateSuspendedError as exc:
        suspended.append(exc.problem)
        sending.expire(job, report, period, [a.id for a in accounts])
        return
    sending.record(job, report, period, prepared, stats, None)
