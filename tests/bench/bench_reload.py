"""Reload benchmark: from a file write to the new set live, through the real watcher.

Not a test: it prints the latency figures and the target, says MEETS or
MISSES, and exits 0.

    python tests/bench/bench_reload.py                    # 200 rule files, 50 edits
    python tests/bench/bench_reload.py --files 200 --edits 50 --debounce 300ms

Setup: ``--files`` rule files (one rule each, a USD ladder) and a copy of the
shipped templates in a temporary directory, loaded once; a ``Reloader`` with
the given debounce (default: the config default, 300ms) watches both
directories with watchdog (inotify on Linux); its backstop is out of the way.

Each edit rewrites one rule file in place (a different file each time, its
description changed), as an editor or ``cp`` does. The latency of an edit is
from just before the write to the moment the new set is swapped in (the swap
callback). After each swap the benchmark waits until the reloader is idle, so
edits never merge. The work between the quiet period and the swap is a
fingerprint of every file, then a full ``load_set`` (parse, validate,
cross-check, compile templates, test-render).

Figures: p50 and p99 (nearest rank; with 50 edits p99 is the slowest edit)
against the target p99 <= debounce + 250 ms.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from balancewatch.core import shipped
from balancewatch.core.durations import parse_duration
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.reload import Reloader

try:
    from tests.bench import common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import common  # type: ignore[no-redef]

MARGIN = 0.250  # seconds allowed on top of the debounce
TIMEOUT = 30.0  # per edit; reached only when something is broken


RULE = """\
alerts:
  - id: rule-{n:04d}
    description: "rule {n}, edit {edit}"
    accounts: {{billing: prepaid, currency: USD}}
    below: [250, 100, 10]
    rearm: 10%
    notify: [owner]
    template: low-balance
"""


@dataclass(frozen=True)
class Figures:
    files: int
    edits: int
    debounce_s: float
    target_s: float
    p50_s: float
    p99_s: float
    min_s: float
    max_s: float
    load_s: float  # one load_set of the whole set, outside the watcher, for scale
    meets: bool


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def run(files: int, edits: int, debounce: float, work: Path) -> Figures:
    rules_dir, templates_dir = work / "rules", work / "templates"
    rules_dir.mkdir(parents=True)
    shutil.copytree(shipped.templates_dir(), templates_dir)
    for n in range(files):
        (rules_dir / f"rule-{n:04d}.yaml").write_text(RULE.format(n=n, edit=0))
    started = time.perf_counter()
    live = load_set(rules_dir, templates_dir)
    load_s = time.perf_counter() - started

    swapped = threading.Event()
    swapped_at: list[float] = []

    def swap(new: LiveSet) -> None:
        swapped_at.append(time.perf_counter())
        swapped.set()

    reloader = Reloader(rules_dir, templates_dir, live, swap, debounce=debounce, backstop=3600.0)
    reloader.start()
    latencies: list[float] = []
    try:
        for edit in range(1, edits + 1):
            n = (edit * 7) % files  # spread over the files
            swapped.clear()
            before = time.perf_counter()
            (rules_dir / f"rule-{n:04d}.yaml").write_text(RULE.format(n=n, edit=edit))
            if not swapped.wait(TIMEOUT):
                raise SystemExit(f"edit {edit}: no reload within {TIMEOUT}s ({reloader.status})")
            latencies.append(swapped_at[-1] - before)
            deadline = time.monotonic() + TIMEOUT
            while not reloader.idle():  # the next edit must not merge with this one
                if time.monotonic() > deadline:
                    raise SystemExit(f"edit {edit}: the reloader did not go idle")
                time.sleep(0.01)
    finally:
        reloader.stop()
    if reloader.status.reloads != edits:
        raise SystemExit(f"{reloader.status.reloads} reloads for {edits} edits")
    target = debounce + MARGIN
    p99 = percentile(latencies, 99)
    return Figures(
        files=files,
        edits=edits,
        debounce_s=debounce,
        target_s=target,
        p50_s=statistics.median(latencies),
        p99_s=p99,
        min_s=min(latencies),
        max_s=max(latencies),
        load_s=load_s,
        meets=p99 <= target,
    )


def report(f: Figures, command: str) -> str:
    ms = 1000
    return "\n".join(
        [
            f"reload latency, file write -> new set live: {f.files} rule files, {f.edits} edits in place",
            f"  debounce {f.debounce_s * ms:.0f} ms; one load_set of the whole set {f.load_s * ms:.0f} ms",
            f"  p50 {f.p50_s * ms:.0f} ms, p99 {f.p99_s * ms:.0f} ms "
            f"(min {f.min_s * ms:.0f} ms, max {f.max_s * ms:.0f} ms)",
            f"p99 <= debounce + {MARGIN * ms:.0f} ms = {f.target_s * ms:.0f} ms: {common.verdict(f.meets)}",
            f"command: {command}",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=200, help="rule files (default: %(default)s)")
    parser.add_argument("--edits", type=int, default=50, help="edits timed (default: %(default)s)")
    parser.add_argument("--debounce", default="300ms", help="quiet period (default: %(default)s)")
    parser.add_argument("--dir", type=Path, help="work here instead of a temporary directory (kept)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    debounce = parse_duration(args.debounce).total_seconds()
    with common.work_dir(args.dir, "bw-bench-reload-", tmp=None) as work:  # a given --dir is kept
        figures = run(args.files, args.edits, debounce, work)
    common.publish(report(figures, common.command_line(__file__, argv)), figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
