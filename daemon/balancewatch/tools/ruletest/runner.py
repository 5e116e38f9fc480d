"""Running tests: a fresh SQLite database per test, the real pipeline on a simulated clock.

For each step of a test's timeline the clock moves to the step's time, its
entries are posted through the ledger (and its balances written), then the
daemon's own ``Pipeline.evaluate(now)`` runs, rendering through the real
templates into the outbox. The notifications decided at that step are read
back from the outbox and compared with the step's ``expect``. Nothing is
sent: the pipeline's transport is never called.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy import Engine, select
from sqlmodel import Session

from balancewatch.config import DatabaseSettings, FilesSettings, Settings
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.runtime.service import Pipeline, build_pipeline
from balancewatch.store import ledger
from balancewatch.store.accounts import AccountError, add_account
from balancewatch.store.db import make_engine, upgrade
from balancewatch.store.preferences import PreferenceError, set_preferences
from balancewatch.store.tables import OUTBOX_TABLE
from balancewatch.tools.ruletest.cases import Case, Expectation, Step, TestFile
from balancewatch.tools.ruletest.load import load_test_file
from balancewatch.tools.ruletest.match import Comparison, Notification, compare


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step decided and how it compares; ``errors`` are failures of their own."""

    step: Step
    decided: tuple[Notification, ...]
    comparison: Comparison | None  # None: the step has no expect
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        c = self.comparison
        return not self.errors and (c is None or not (c.missing or c.unexpected))


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One test's steps, up to the first step that could not be carried out."""

    case: Case
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def stopped_early(self) -> bool:
        return len(self.steps) < len(self.case.steps)


@dataclass(frozen=True, slots=True)
class FileResult:
    file: TestFile
    cases: tuple[CaseResult, ...]


@dataclass
class Run:
    """Everything a run produced: results per file and the problems of files that could not run."""

    files: list[FileResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    broken: list[Path] = field(default_factory=list)

    @property
    def cases(self) -> list[CaseResult]:
        return [c for f in self.files for c in f.cases]

    @property
    def ok(self) -> bool:
        return not self.broken and all(c.ok for c in self.cases)


def run_file(test_file: TestFile, settings: Settings, only: str | None = None) -> FileResult:
    """Run the tests of ``test_file`` (those whose name contains ``only``, if given).

    Raises ProblemsError when the rule files or templates under test do not
    load, or an expectation names a rule or template they do not have.
    """
    live = rule_set(test_file, settings)
    _check_names(test_file, live)
    cases = [c for c in test_file.cases if only is None or only.lower() in c.name.lower()]
    return FileResult(test_file, tuple(run_case(c, live, settings) for c in cases))


def rule_set(test_file: TestFile, settings: Settings) -> LiveSet:
    """The rule files and templates under test, loaded and cross-checked as a reload would.

    Raises ProblemsError listing every problem.
    """
    templates_dir = test_file.templates or settings.templates_dir
    return load_set(
        settings.rules_dir,
        templates_dir,
        test_file.rule_files,
        budget=settings.render.budget(),
        channels=tuple(settings.channels),
    )


def _check_names(test_file: TestFile, live: LiveSet) -> None:
    """Raise ProblemsError for expectations naming a rule or template the set under test lacks."""
    problems = [
        problem
        for case in test_file.cases
        for step in case.steps
        for e in step.expect or ()
        for problem in _unknown_names(e, live)
    ]
    if problems:
        raise ProblemsError(problems)


def _unknown_names(e: Expectation, live: LiveSet) -> list[Problem]:
    w, out = e.where, []
    rule_ids = [r.id for r in live.rules]
    if e.spec.rule is not None and e.spec.rule not in rule_ids:
        sources = ", ".join(sorted({Path(r.source).name for r in live.rules})) or "no rule files"
        have = ", ".join(sorted(rule_ids)) or "none"
        message = f"no rule {e.spec.rule!r} in the rules under test ({sources}; rules: {have})"
        out.append(Problem(w.path, w.line, f"{w.field}.rule", message))
    if e.spec.template is not None and e.spec.template not in live.templates.names:
        have = ", ".join(sorted(live.templates.names)) or "none"
        message = f"no template {e.spec.template!r} in {live.templates.directory} (have: {have})"
        out.append(Problem(w.path, w.line, f"{w.field}.template", message))
    return out


def run_case(case: Case, live: LiveSet, settings: Settings) -> CaseResult:
    """Run one test against a fresh temporary SQLite database, removed afterwards."""
    with TemporaryDirectory(prefix="balancewatch-test-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'balancewatch.db'}"
        engine = make_engine(url)
        try:
            upgrade(engine)
            pipeline = build_pipeline(engine, _isolated(settings, Path(tmp), url), live)
            return CaseResult(case, tuple(_steps(case, engine, pipeline, live)))
        finally:
            engine.dispose()


def _isolated(settings: Settings, tmp: Path, url: str) -> Settings:
    """The configured settings, with everything that could touch the outside world moved into ``tmp``.

    Every evaluation is a full sweep over usage figures computed afresh, so what a
    step decides never depends on the poll interval, the overlap or the usage
    refresh interval: only on the rules, the templates and the data.
    """
    delivery = settings.delivery.model_copy(update={"transport": "files"})
    usage = settings.usage.model_copy(update={"refresh": timedelta(0)})
    return settings.model_copy(
        update={
            "state_dir": tmp,
            "database": DatabaseSettings(url=url),
            "files": FilesSettings(dir=tmp / "mail"),
            "delivery": delivery,
            "sweep_interval": timedelta(0),
            "usage": usage,
        }
    )


def _steps(case: Case, engine: Engine, pipeline: Pipeline, live: LiveSet) -> list[StepResult]:
    error = _open_accounts(case, engine)
    if error:
        return [StepResult(case.steps[0], (), None, (error,))]
    results = []
    seen = 0
    for step in case.steps:
        error = _apply(step, engine)
        if error:
            results.append(StepResult(step, (), None, (error,)))
            break  # the data is no longer what the test describes; later steps would mislead
        stats = pipeline.evaluate(step.at)
        seen, decided = _decided_after(engine, seen, live)
        errors = [f"a template failed to render: {e}" for e in stats.render_errors]
        if stats.skipped:
            errors.append(f"{stats.skipped} balances were left undecided (conflicting alert state)")
        comparison = compare(step.expect, decided) if step.expect is not None else None
        results.append(StepResult(step, tuple(decided), comparison, tuple(errors)))
    return results


def _open_accounts(case: Case, engine: Engine) -> str | None:
    with Session(engine) as s:
        try:
            for opening in case.accounts:
                a = opening.spec
                account = add_account(
                    s,
                    a.id,
                    a.name or a.id,
                    a.email,
                    billing=a.billing,
                    timezone=a.timezone,
                    locale=a.locale,
                    labels=a.labels,
                    parent_id=a.parent,
                )
                account.enabled = a.enabled
                s.flush()  # a subaccount listed next finds its main account
            _post_history(s, case)
            for opening in case.accounts:
                for currency, amount in opening.balances:
                    ledger.set_balance(s, opening.spec.id, currency, amount, case.start)
                for currency, change in opening.preferences:
                    set_preferences(s, opening.spec.id, currency, change, case.start)
        except (AccountError, ledger.LedgerError, PreferenceError) as exc:
            return f"accounts: {exc}"
        s.commit()
    return None


def _post_history(s: Session, case: Case) -> None:
    """The ``daily_usage`` of every account, posted through the ledger before the start.

    A paying balance's history opens with a top-up ``usage_days`` days before the
    start (its first entry), then each account uses its amount once a day, the last
    time just before the start: at the start, the average daily usage over a window
    no longer than the history is exactly the daily usage. The opening balances are
    written at the start afterwards, as always.
    """
    opened: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))  # days, total used
    for opening in case.accounts:
        payer = opening.spec.parent or opening.spec.id
        for currency, per_day in opening.daily_usage:
            days, total = opened[(payer, currency)]
            opened[(payer, currency)] = (
                max(days, opening.spec.usage_days),
                total + per_day * opening.spec.usage_days,
            )
    for (payer, currency), (days, total) in opened.items():
        _history_entry(s, payer, currency, total, "top-up", case.start - timedelta(days=days))
    for opening in case.accounts:
        for currency, per_day in opening.daily_usage:
            for day in range(opening.spec.usage_days, 0, -1):
                at = case.start - timedelta(days=day - 1, seconds=1)
                _history_entry(s, opening.spec.id, currency, -per_day, "usage", at)


def _history_entry(s: Session, account_id: str, currency: str, amount: int, kind: str, at: datetime) -> None:
    ledger.post(s, account_id, currency, amount, kind, occurred_at=at, now=at)


def _apply(step: Step, engine: Engine) -> str | None:
    """Post the step's entries and write its balances in one transaction; an error message or None."""
    with Session(engine) as s:
        for n, e in enumerate(step.posts):
            try:
                ledger.post(
                    s,
                    e.account,
                    e.currency,
                    e.amount,
                    e.kind,
                    occurred_at=step.at,
                    now=step.at,
                    service=e.service,
                    quantity=e.quantity,
                    reference=e.reference,
                )
            except ledger.LedgerError as exc:
                return f"post[{n}]: {exc}"
        for w in step.writes:
            ledger.set_balance(s, w.account, w.currency, w.amount, step.at)
        for n, p in enumerate(step.preferences):
            try:
                set_preferences(s, p.account, p.currency, p.change, step.at)
            except PreferenceError as exc:
                return f"set_preferences[{n}]: {exc}"
        s.commit()
    return None


def _decided_after(engine: Engine, seen: int, live: LiveSet) -> tuple[int, list[Notification]]:
    """Outbox rows with an id above ``seen``: what the last evaluation decided."""
    c = OUTBOX_TABLE.c
    with engine.connect() as conn:
        rows = list(conn.execute(select(OUTBOX_TABLE).where(c.id > seen).order_by(c.id)))
    out = []
    for r in rows:
        rule = live.rule(r.rule_id)
        template = (rule.restored_template if r.kind == "restored" else rule.template) if rule else None
        out.append(
            Notification(
                rule=r.rule_id,
                account=r.account_id,
                currency=r.currency,
                step=r.step,
                kind=r.kind,
                template=template or "",
                recipients=tuple(r.recipients),
                subject=r.subject,
                text=r.text,
                html=r.html,
            )
        )
    return (rows[-1].id if rows else seen), out


def run_all(test_files: Sequence[Path], settings: Settings, only: str | None = None) -> Run:
    """Load and run every file; a file with problems is reported and the others still run."""
    run = Run()
    for path in test_files:
        try:
            run.files.append(run_file(load_test_file(path), settings, only))
        except ProblemsError as exc:
            run.problems.extend(exc.problems)
            run.broken.append(path)
    return run
