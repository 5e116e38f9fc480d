"""The measured side of ``bench_reports.py``: daemon instances, each a process of its own, running the
report job (``reports.runner.run_due``) at once against one database, and what they wrote.

An instance process loads the settings and the live set and opens its engine (not measured), says
it is ready, waits for the word, then runs ``run_due`` with its own worker name; its worker
processes (``reports.parallel``) are its children. The figures it hands back: what it sent, its
seconds per stage (summed over it and its workers), its elapsed and CPU time (its workers' included)
and its peak memory and its largest worker's.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

try:
    from tests.bench import common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import common  # type: ignore[no-redef]

READY_WITHIN = 120.0  # seconds an instance may take to load before the run is called off


@dataclass
class Instance:
    """What one instance did and cost."""

    worker: str
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    zones: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # its own and its worker processes'
    seconds: dict[str, float] = field(default_factory=dict)  # claim, build, render, record
    rss_setup_mb: float = 0.0
    rss_peak_mb: float = 0.0
    worker_rss_peak_mb: float = 0.0


def settings_of(params: dict[str, Any]) -> Any:
    return common.daemon_settings(
        params,
        {
            "BALANCEWATCH_DELIVERY__FROM": "Reports <reports@platform.example>",
            "BALANCEWATCH_REPORTS__MISFIRE_GRACE": "24h",
            "BALANCEWATCH_REPORTS__BATCH_SIZE": str(params["batch_size"]),
        },
    )


def instance_main(params: dict[str, Any], worker: str, ready: Any, go: Any, out: Any) -> None:
    """One instance's process: load, say ``ready``, wait for ``go``, run the report job at the
    run time, put its ``Instance`` figures (as a dict) on ``out``."""
    from balancewatch.reports import parallel, runner
    from balancewatch.runtime.loadset import load_set
    from balancewatch.store.db import make_engine

    if params.get("parallel_min") is not None:
        parallel.PARALLEL_MIN = params["parallel_min"]
    settings = settings_of(params)
    live = load_set(settings.rules_dir, settings.templates_dir)
    engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
    with engine.connect():  # the pool's first connection opens outside the timings
        pass
    res = Instance(worker, rss_setup_mb=common.proc_status_kb("VmRSS") / 1024)
    ready.set()
    go.wait()
    t, cpu = time.perf_counter(), time.process_time()
    stats = runner.run_due(
        engine,
        live,
        settings,
        datetime.fromisoformat(params["run_at"]),
        worker,
        processes=params["processes"],
    )
    res.elapsed_s = time.perf_counter() - t
    children = os.times()  # the workers are done and waited for once run_due returns
    res.cpu_s = time.process_time() - cpu + children.children_user + children.children_system
    report_id = params["report_id"]
    res.sent, res.skipped, res.failed = (
        stats.sent[report_id],
        stats.skipped[report_id],
        stats.failed[report_id],
    )
    res.zones = len(stats.fired)
    res.seconds = dict(stats.seconds)
    res.rss_peak_mb = common.proc_status_kb("VmHWM") / 1024
    res.worker_rss_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    engine.dispose()
    out.put(asdict(res))


def run_instances(params: dict[str, Any], count: int) -> tuple[float, list[Instance]]:
    """Start ``count`` instances, let them run the report job at once; the seconds from the word
    to the last one done, and each one's figures (by worker name)."""
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    started = []
    for i in range(count):
        ready = ctx.Event()
        worker = f"bench-{i + 1}"
        proc = ctx.Process(target=instance_main, args=(params, worker, ready, go, out), name=worker)
        proc.start()
        started.append((proc, ready))
    for proc, ready in started:
        if not ready.wait(READY_WITHIN):
            for p, _ in started:
                p.kill()
            raise RuntimeError(f"{proc.name} did not load within {READY_WITHIN:g} s")
    t = time.perf_counter()
    go.set()
    found = [Instance(**out.get()) for _ in started]
    elapsed = time.perf_counter() - t
    for proc, _ in started:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{proc.name} ended with exit status {proc.exitcode}")
    return elapsed, sorted(found, key=lambda i: i.worker)


@dataclass(frozen=True)
class Written:
    """What the instances wrote: per worker the claims it made final; the report emails, the
    accounts they went to, and the accounts with a final claim."""

    claims: dict[str, int]
    emails: int
    accounts_emailed: int
    accounts_final: int


def written(engine: Any, report_id: str) -> Written:
    """Read the claims and the outbox after a run."""
    from sqlalchemy import func, select

    from balancewatch.store.tables import OUTBOX_TABLE, REPORT_RUN_TABLE

    runs, box = REPORT_RUN_TABLE.c, OUTBOX_TABLE.c
    with engine.connect() as conn:
        by = conn.execute(
            select(runs.claimed_by, func.count())
            .where(runs.report_id == report_id, runs.status.in_(("sent", "skipped", "failed")))
            .group_by(runs.claimed_by)
        ).all()
        final = conn.execute(
            select(func.count(func.distinct(runs.account_id))).where(
                runs.report_id == report_id, runs.status.in_(("sent", "skipped"))
            )
        ).scalar_one()
        emails, accounts = conn.execute(
            select(func.count(), func.count(func.distinct(box.account_id))).where(
                box.kind == "report", box.rule_id == report_id
            )
        ).one()
    return Written({w: int(n) for w, n in by}, int(emails), int(accounts), int(final))
