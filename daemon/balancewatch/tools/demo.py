"""``balancewatch demo``: the real pipeline on a local SQLite file with simulated usage.

About 50 accounts (USD, INR and EUR; prepaid and postpaid; two subaccounts)
use their credit hour by hour over several simulated days; some owners top
up, some let the balance run out. Every simulated hour the same evaluation,
scheduled reports and delivery that ``run`` uses look at the database, on the
simulated clock; every report is switched on, the operators' one to
``OPERATORS``. The days run over the 1st of a month and a Monday, so the
monthly and weekly reports go out as well as the daily one. Mail lands in
``DIR/mail`` as ``.eml`` files, with ``index.html`` listing them.

The rules, templates and settings are those ``run`` would use (the config file
and ``BALANCEWATCH_*`` variables; with neither, the shipped rules and templates),
so an edited template shows in the demo's emails. Only what reaches outside
``DIR`` is replaced (``demo_settings``): the database is a fresh SQLite file in
``DIR``, mail is written to files, no top-up hook is called, and the daemon's
real-time pacing gives way to the simulated clock.

The demo runs no top-up step (the shipped rules have no top-up action).
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from balancewatch.config import (
    DatabaseSettings,
    FilesSettings,
    Settings,
    SmtpSettings,
    TopupHookSettings,
    load_settings,
)
from balancewatch.deliver.mailindex import write_index
from balancewatch.rules.reports import CompiledReport
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.service import build_pipeline
from balancewatch.store.db import make_engine, upgrade
from balancewatch.store.tables import Account
from balancewatch.tools.demo_population import START, populate, simulate_hour

MARKER = ".balancewatch-demo"
# Ten days from here hold the 1st of a month and a Monday: the monthly and the weekly reports go out.
OPERATORS = "ops@acme-cloud.example"
# The sender when the configuration sets none (the default's localhost address would look broken).
SENDER = "Acme Cloud billing <billing@acme-cloud.example>"
# The simulated clock: one evaluation per simulated hour, a full sweep once a simulated day.
POLL = timedelta(hours=1)
SWEEP = timedelta(days=1)
# DIR/config.yaml, so that `balancewatch --config DIR/config.yaml outbox list` (and the like) reads
# the demo's database. Values are JSON strings, which YAML reads as they are.
CONFIG = """\
# Written by `balancewatch demo`: its database and mail. Paths are relative to this file.
# The demo ran with the settings of {source}.
state_dir: .
files:
  dir: mail
delivery:
  transport: files
  from: {sender}
poll_interval: 1h
sweep_interval: 1d
rules_dir: {rules}
templates_dir: {templates}
"""


@dataclass
class Summary:
    directory: Path
    accounts: int
    days: int
    entries: int
    decided: Counter[str] = field(default_factory=Counter)
    reports: dict[str, int] = field(default_factory=dict)  # sent per report id, the shipped order
    turned_on: list[str] = field(default_factory=list)  # disabled in the rules, enabled for the demo
    delivered: int = 0
    seconds: float = 0.0
    config: Path | None = None  # the config file the settings came from, if any
    rules: str = ""  # the rules directory used, and where it was set (``used_directory``)
    templates: str = ""  # likewise the templates directory

    def text(self) -> str:
        width = max(16, *(len(k) for k in (*self.decided, *self.reports)))
        per_rule = "\n".join(f"  {rule:<{width}} {n}" for rule, n in sorted(self.decided.items()))
        off = "   (disabled in the rules; on for the demo)"
        per_report = "\n".join(
            f"  {report:<{width}} {n}{off if report in self.turned_on else ''}"
            for report, n in self.reports.items()
        )
        mail = self.directory / "mail"
        return (
            f"balancewatch demo: {self.accounts} accounts, {self.days} simulated days "
            f"({START:%Y-%m-%d} to {START + timedelta(days=self.days):%Y-%m-%d}), "
            f"{self.entries} ledger entries, {self.seconds:.1f}s\n"
            f"config: {self.config or 'no config file (default settings)'}\n"
            f"rules: {self.rules}\n"
            f"templates: {self.templates}\n"
            f"database and mail: the demo's own, never the configured ones: "
            f"{self.directory / 'balancewatch.db'} (SQLite), .eml files in {mail}/ (nothing is sent)\n"
            f"notifications decided, per rule:\n{per_rule or '  (none)'}\n"
            f"reports sent, per report (operators' to {OPERATORS}):\n{per_report or '  (none)'}\n"
            f"emails written: {self.delivered} to {mail}/\n"
            f"open {mail / 'index.html'} to read them; the database is {self.directory / 'balancewatch.db'}\n"
            f"try: balancewatch --config {self.directory / 'config.yaml'} outbox list"
        )


def prepare(directory: Path, config: str) -> None:
    """Create ``directory``, or empty it if an earlier demo made it; refuse anything else.

    Writes ``config`` as ``directory/config.yaml``.
    """
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise SystemExit(
                f"{directory} exists and was not made by `balancewatch demo`; choose another --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by balancewatch demo; `balancewatch demo` may delete this folder\n")
    (directory / "config.yaml").write_text(config)


def demo_settings(configured: Settings, directory: Path) -> Settings:
    """``configured`` (as ``run`` would use them) with what reaches outside ``directory`` replaced.

    The database becomes ``directory/balancewatch.db`` (SQLite), mail goes to ``.eml`` files in
    ``directory/mail`` whatever transport and SMTP server are configured, no top-up hook is
    called, and evaluations follow the simulated clock (``POLL``, ``SWEEP``). Everything an email
    is made from stays: rules and templates directories, render budget, locale and timezone
    defaults, delivery sender and reply-to, prices, usage and report settings. ``configured`` is
    not changed.
    """
    delivery = configured.delivery.model_copy(update={"transport": "files"})
    if not configured.is_set(("delivery", "from")):
        delivery = delivery.model_copy(update={"sender": SENDER})
    return configured.model_copy(
        update={
            "state_dir": directory,
            "database": DatabaseSettings(),  # SQLite in state_dir
            "smtp": SmtpSettings(),
            "files": FilesSettings(dir=directory / "mail"),
            "delivery": delivery,
            "topup": configured.topup.model_copy(update={"hook": TopupHookSettings()}),
            "poll_interval": POLL,
            "sweep_interval": SWEEP,
        }
    )


def used_directory(settings: Settings, key: str) -> str:
    """The directory at ``key`` (``rules_dir``, ``templates_dir``) and where it was set:
    ``/etc/bw/templates (config.yaml:4)``, ``... (environment BALANCEWATCH_TEMPLATES_DIR)``,
    or ``... (shipped)`` when nothing set it."""
    path = getattr(settings, key)
    if not settings.is_set((key,)):
        return f"{path} (shipped)"
    where, line = settings.where((key,))
    return f"{path} ({where}:{line})" if line else f"{path} ({where})"


def _refuse_overlap(directory: Path, settings: Settings) -> None:
    """Refuse (SystemExit, one line) a ``directory`` that holds the rules, the templates or the
    config file, or lies within the rules or templates: the demo empties its directory and writes
    files into it."""
    used = {"rules directory": settings.rules_dir, "templates directory": settings.templates_dir}
    # The demo's own config.yaml (which `--config DIR/config.yaml` names) is read before it is rewritten.
    if settings.source is not None and settings.source.resolve() != directory / "config.yaml":
        used["config file"] = settings.source.resolve()
    for what, path in used.items():
        if path.is_relative_to(directory) or (what != "config file" and directory.is_relative_to(path)):
            raise SystemExit(
                f"{directory} and the {what} {path} overlap, and `balancewatch demo` empties "
                "its directory; choose another --dir"
            )


def run_demo(directory: Path, days: int = 10, seed: int = 7, *, settings: Settings | None = None) -> Summary:
    """Build and run the demo in ``directory``; return what happened.

    ``settings`` are those ``run`` would use (None: the defaults, with the shipped rules and
    templates); the demo runs with ``demo_settings`` of them. Raises ProblemsError, listing every
    problem, when the rules or templates do not load: before ``directory`` is touched, so an
    earlier demo stays as it was.
    """
    started = datetime.now(UTC)
    directory = directory.resolve()
    configured = settings if settings is not None else load_settings(environ={}, search=())
    source = configured.source.resolve() if configured.source is not None else None
    settings = demo_settings(configured, directory)
    _refuse_overlap(directory, settings)
    live = load_set(
        settings.rules_dir,
        settings.templates_dir,
        budget=settings.render.budget(),
        channels=tuple(settings.channels),
    )
    prepare(
        directory,
        CONFIG.format(
            source=source or "no config file",
            sender=json.dumps(settings.delivery.sender),
            rules=json.dumps(str(settings.rules_dir)),
            templates=json.dumps(str(settings.templates_dir)),
        ),
    )
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        rng = random.Random(seed)
        sims = populate(engine, rng)
        pipeline = build_pipeline(engine, settings, replace(live, reports=_every_report_on(live.reports)))
        summary = Summary(
            directory,
            accounts=_count_accounts(engine),
            days=days,
            entries=0,
            config=source,
            rules=used_directory(configured, "rules_dir"),
            templates=used_directory(configured, "templates_dir"),
        )
        summary.reports = dict.fromkeys((r.id for r in live.reports), 0)
        summary.turned_on = [r.id for r in live.reports if not r.enabled]
        for hour in range(days * 24 + 1):
            now = START + timedelta(hours=hour)
            if hour:
                summary.entries += simulate_hour(engine, sims, rng, now)
            summary.decided.update(pipeline.evaluate(now).decided)
            for report_id, sent in pipeline.reports(now).sent.items():
                summary.reports[report_id] += sent
            summary.delivered += pipeline.deliver(now).outcomes["sent"]
    finally:
        engine.dispose()  # the file stays for the user; its connections need not
    write_index(settings.mail_dir)
    summary.seconds = (datetime.now(UTC) - started).total_seconds()
    return summary


def _every_report_on(reports: tuple[CompiledReport, ...]) -> tuple[CompiledReport, ...]:
    """The reports, every one enabled; the operators' report goes to the demo's operators."""
    return tuple(
        replace(r, enabled=True, recipients=(OPERATORS,) if r.contents == "low-balance" else r.recipients)
        for r in reports
    )


def _count_accounts(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(Account)).scalar_one())
