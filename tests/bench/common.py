"""What the benchmark scripts in this directory share: options, the work directory and database, the
child process, timing and memory figures, and the report's small helpers.

A benchmark with a database runs like this::

    args = parse_args(argv)
    if args.child is not None:  # the measured process
        return common.child_main(args.child, run_child)
    with common.bench_database(args, "bw-bench-") as db:
        t = time.perf_counter()
        db.upgrade()
        ...  # generate the data into db.url (SQLite: db.sqlite_path)
        generation_s = time.perf_counter() - t
        res = Results(**common.run_in_child(__file__, db.work, params))
        common.publish(report(res, common.command_line(__file__, argv), generation_s), res, args.json)

The scripts are run as files (``python tests/bench/bench_usage.py``, where this module is ``common``) and
imported by the smoke tests (where it is ``tests.bench.common``); they import it either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from balancewatch.config import Settings

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DB_FILES = ("balancewatch.db", "balancewatch.db-wal", "balancewatch.db-shm")
PARAMS = "params.json"  # what the parent hands the child, in the work directory
RESULTS = "results.json"  # what the child hands back, in the work directory


# --------------------------------------------------------------------------- data


def account_id(i: int) -> str:
    """The id of the ``i``-th generated account: ``acct-0000042``."""
    return f"acct-{i:07d}"


def sqlite_time(t: datetime) -> str:
    """How SQLAlchemy stores an aware UTC datetime in SQLite (naive, microseconds always)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# --------------------------------------------------------------------------- measuring


def proc_status_kb(name: str) -> int:
    """This process's ``name`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in kB; 0 where absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0 and later); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Call ``fn``; return the seconds it took (``perf_counter``) and what it returned."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


class Stopwatch:
    """Accumulates the time spent in the functions it wraps, in ``seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any], consume: bool = False) -> Callable[..., Any]:
        """``fn``, timed into this stopwatch; with ``consume``, its result (an iterable) is drained
        into a list inside the timing, so a generator's work counts too."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
                return list(out) if consume else out
            finally:
                self.seconds += time.perf_counter() - t

        return timed

    def take(self) -> float:
        """The seconds accumulated since the last ``take``, and start again from zero."""
        out, self.seconds = self.seconds, 0.0
        return out


# --------------------------------------------------------------------------- report


def med(xs: Sequence[float]) -> float:
    """The median of ``xs``; NaN when there are none."""
    return statistics.median(xs) if xs else float("nan")


def verdict(ok: bool) -> str:
    """MEETS or MISSES."""
    return "MEETS" if ok else "MISSES"


def command_line(script: str | Path, argv: Sequence[str] | None) -> str:
    """The command as the report shows it: ``python tests/bench/<script's file name>`` and the
    arguments (``argv``, or this process's own when None)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([f"python tests/bench/{Path(script).name}", *args])


def publish(text: str, figures: Any, json_path: Path | None) -> None:
    """Print the report ``text``; write ``figures`` (a dataclass) to ``json_path`` too, when given."""
    print(text, flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(figures), indent=2))


# --------------------------------------------------------------------------- options


def bench_parser(doc: str | None, *, accounts: int) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--accounts`` (default ``accounts``).

    Add the script's own data options next, then ``add_database_options`` and ``add_output_options``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    p.add_argument(
        "--accounts", type=int, default=accounts, help=f"accounts to generate (default {accounts:,})"
    )
    return p


def add_database_options(
    p: argparse.ArgumentParser, repeat_help: str = "timed runs per figure; medians are reported"
) -> None:
    """``--backend``, ``--pg-url`` (default: $BALANCEWATCH_TEST_PG, else ``DEFAULT_PG_URL``), ``--dir``
    and ``--repeat`` (default 5), in that order: what ``bench_database`` reads, and how often to time."""
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--pg-url", default=os.environ.get("BALANCEWATCH_TEST_PG", DEFAULT_PG_URL))
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new one in /tmp)")
    p.add_argument("--repeat", type=int, default=5, help=repeat_help)


def add_output_options(p: argparse.ArgumentParser, *, seed: int) -> None:
    """``--seed`` (default ``seed``), ``--json``, ``--keep`` and the hidden ``--child`` (the parameters
    file ``run_in_child`` hands the child), in that order."""
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--keep", action="store_true", help="keep the database (SQLite file or schema)")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)


# --------------------------------------------------------------------------- work directory and database


@contextmanager
def work_dir(
    given: Path | None,
    prefix: str,
    *,
    keep: bool = False,
    leftovers: Sequence[str] = (),
    tmp: str | None = "/tmp",
) -> Iterator[Path]:
    """Yield ``given`` (created if missing), or a new directory named ``prefix…`` in ``tmp`` (None:
    tempfile's default).

    On leaving, unless ``keep``: a new directory is removed with everything in it; of a given one only
    the files named in ``leftovers`` are removed. With ``keep`` nothing is removed and
    ``kept <directory>`` is printed."""
    own = given is None
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp)) if given is None else given
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if own and not keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not keep:
            for name in leftovers:
                (work / name).unlink(missing_ok=True)
        else:
            print(f"kept {work}")


def schema_url(base: str, schema: str) -> str:
    """``base`` with ``schema`` as the connection's search path."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@dataclass(frozen=True)
class Database:
    """An empty database for one run, in ``work``: a SQLite file or a PostgreSQL schema."""

    backend: str  # "sqlite" or "postgres"
    work: Path
    url: str  # SQLAlchemy's, for the daemon

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (SQLite only)."""
        return self.work / DB_FILES[0]

    @property
    def libpq_url(self) -> str:
        """``url`` as psycopg takes it (PostgreSQL only)."""
        return self.url.replace("postgresql+psycopg://", "postgresql://")

    def daemon_params(self, rules_file: str, rules: str) -> dict[str, str]:
        """Write ``rules`` to ``rules/<rules_file>`` in ``work``; return what ``daemon_settings`` reads:
        ``url``, ``state_dir`` and ``rules_dir`` in ``work``, ``templates_dir`` (the shipped templates)."""
        from balancewatch.core import shipped

        rules_dir = self.work / "rules"
        rules_dir.mkdir(exist_ok=True)
        (rules_dir / rules_file).write_text(rules)
        return {
            "url": self.url,
            "state_dir": str(self.work / "state"),
            "rules_dir": str(rules_dir),
            "templates_dir": str(shipped.templates_dir()),
        }

    def upgrade(self) -> None:
        """Create the daemon's tables, as ``balancewatch upgrade`` does."""
        from balancewatch.store.db import make_engine, upgrade

        engine = make_engine(self.url)
        upgrade(engine)
        engine.dispose()


@contextmanager
def bench_database(args: argparse.Namespace, prefix: str) -> Iterator[Database]:
    """The work directory (``args.dir``, else a new ``prefix…`` one in /tmp) and an empty database in
    it: with ``args.backend`` "postgres", a new schema ``bw_bench_…`` at ``args.pg_url``; else the
    SQLite file ``balancewatch.db`` (an old one and its -wal and -shm are deleted first). No tables:
    call ``upgrade``.

    On leaving, unless ``args.keep``: the schema is dropped, then a new directory is removed, or the
    database files and ``params.json`` are removed from a given one. With ``args.keep`` it prints
    ``kept schema <name>`` (PostgreSQL) and ``kept <directory>``."""
    from sqlalchemy import text

    from balancewatch.store.db import make_engine

    leftovers = (*DB_FILES, PARAMS)
    with work_dir(args.dir, prefix, keep=args.keep, leftovers=leftovers) as work:
        if args.backend != "postgres":
            for name in DB_FILES:
                (work / name).unlink(missing_ok=True)
            yield Database(args.backend, work, f"sqlite:///{work / DB_FILES[0]}")
            return
        schema = f"bw_bench_{uuid.uuid4().hex[:10]}"
        admin = make_engine(args.pg_url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield Database(args.backend, work, schema_url(args.pg_url, schema))
        finally:
            if not args.keep:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            else:
                print(f"kept schema {schema}")
            admin.dispose()


# --------------------------------------------------------------------------- the child process


def daemon_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """The daemon's settings, in the child: the directories and database of ``params`` (as
    ``Database.daemon_params`` made them) and the other ``BALANCEWATCH_…`` variables of ``environ``;
    no configuration file, not this process's environment."""
    from balancewatch.config import load_settings

    return load_settings(
        None,
        {
            "BALANCEWATCH_STATE_DIR": params["state_dir"],
            "BALANCEWATCH_RULES_DIR": params["rules_dir"],
            "BALANCEWATCH_TEMPLATES_DIR": params["templates_dir"],
            "BALANCEWATCH_DATABASE__URL": params["url"],
            **environ,
        },
    )


def run_in_child(script: str | Path, work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``script`` in a new interpreter as ``script --child <work>/params.json`` and return what its
    ``child_main`` wrote: the measured process starts without the generated data in its memory.

    ``params`` (JSON-able) are written there with ``results`` (``<work>/results.json``) added. Raises
    ``CalledProcessError`` when the child fails."""
    params_path = work / PARAMS
    results_path = work / RESULTS
    params_path.write_text(json.dumps({**params, "results": str(results_path)}))
    subprocess.run([sys.executable, str(Path(script).resolve()), "--child", str(params_path)], check=True)
    out: dict[str, Any] = json.loads(results_path.read_text())
    return out


def child_main(params_path: Path, body: Callable[[dict[str, Any]], Any]) -> int:
    """The child's side of ``run_in_child``: call ``body`` with the parameters read from ``params_path``
    and write what it returns (a dataclass) to their ``results`` file. Returns 0, the exit status."""
    params = json.loads(params_path.read_text())
    figures = body(params)
    Path(params["results"]).write_text(json.dumps(asdict(figures)))
    return 0
