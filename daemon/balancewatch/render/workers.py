"""Queued messages rendered in worker processes, while the render stage's own process takes the
next batch and writes the last: a large backlog (a first sweep, a rule that makes thousands of
balances fire at once) renders on every core.

Rendering (Jinja, CSS inlining) holds the interpreter lock, so threads would not help. A worker
is spawned (``core/workerpool.py``), compiles its own
copy of the stage's templates (the same files, the same budget) and only renders: it reads no
database and writes nothing. What it renders goes back to the stage's process, which writes it
under the lease it took, as without workers. A worker that dies takes nothing with it: its rows
are rendered in the stage's process, and so is everything after it in that pass.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from balancewatch.core.limits import RenderBudget
from balancewatch.core.workerpool import spawned_pool
from balancewatch.outbox import Queued, Written
from balancewatch.render.packed import CHAT, PackError, unpack
from balancewatch.render.templates import RenderError, TemplateSet


@dataclass(frozen=True, slots=True)
class Failed:
    """A row a worker could not render: the one-line problem, and whether its context could not
    be read at all (``unreadable``: parked at once) rather than rendered (tried again later)."""

    id: int
    problem: str
    unreadable: bool


Outcome = Written | Failed


@dataclass(frozen=True)
class _Setup:
    """What a worker starts from: picklable, no compiled code."""

    files: dict[str, str]
    directory: Path
    budget: RenderBudget


_WORKER: dict[str, TemplateSet] = {}  # in a worker process: its templates


def _start(setup: _Setup) -> None:
    _WORKER["templates"] = TemplateSet(setup.files, setup.directory, setup.budget)


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


def render_all(templates: TemplateSet, rows: list[Queued]) -> list[Outcome]:
    """Each of ``rows`` rendered with ``templates``, or why not: in a worker, or in the stage's
    own process when it renders without workers."""
    out: list[Outcome] = []
    for row in rows:
        try:
            out.append(render_row(templates, row))
        except PackError as exc:
            out.append(Failed(row.id, str(exc), unreadable=True))
        except RenderError as exc:
            out.append(Failed(row.id, str(exc.problem), unreadable=False))
    return out


def _render_in_worker(rows: list[Queued]) -> list[Outcome]:
    return render_all(_WORKER["templates"], rows)


class RenderWorkers:
    """A pool of ``processes`` worker processes for one pass of the render stage, started when
    first used; ``close`` ends it. ``broken`` once a worker died: the rest of the pass renders
    in the stage's process."""

    def __init__(self, templates: TemplateSet, processes: int) -> None:
        self.templates, self.processes = templates, processes
        self._setup = _Setup(dict(templates.files), templates.directory, templates.budget)
        self._pool: ProcessPoolExecutor | None = None
        self.broken = False

    def submit(self, rows: list[Queued]) -> list[tuple[list[Queued], Future[list[Outcome]]]]:
        """``rows`` in one part per worker, each with its future outcomes."""
        if self._pool is None:
            self._pool = spawned_pool(self.processes, _start, self._setup)
        size = -(-len(rows) // self.processes)
        parts = []
        for part in (rows[i : i + size] for i in range(0, len(rows), size)):
            try:
                future = self._pool.submit(_render_in_worker, part)
            except BrokenProcessPool as exc:  # settled like a part whose worker died
                future = Future()
                future.set_exception(exc)
            parts.append((part, future))
        return parts

    def collect(self, parts: list[tuple[list[Queued], Future[list[Outcome]]]]) -> list[Outcome]:
        """The outcomes of ``parts``; a part whose worker died is rendered here."""
        out: list[Outcome] = []
        for rows, future in parts:
            try:
                out.extend(future.result())
            except BrokenProcessPool:
                self.broken = True
                out.extend(render_all(self.templates, rows))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
