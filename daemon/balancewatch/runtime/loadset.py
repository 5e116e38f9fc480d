"""Loading the rule and template set: read, parse, validate, compile, cross-check, test-render.

``load_set`` does every fallible step (read, parse, validate, compile,
cross-check, test-render) before it returns; the result is immutable, so an
evaluation holding one never sees a half-loaded set.

Test renders run within the render budget like every other render, and a
template that overruns it is not rendered again with its other samples, so a
load takes at most about (templates × ``render.timeout``): ``check``, a reload
and start-up always finish.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from balancewatch.alerts.kinds import SAMPLES as ALERT_SAMPLES
from balancewatch.core.limits import DEFAULT_BUDGET, RenderBudget
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.liveset import LiveSet, Sample, SampleMaker
from balancewatch.render.templates import (
    TEMPLATE_NAMES_HINT,
    OverBudgetError,
    RenderError,
    TemplateSet,
    read_template_files,
)
from balancewatch.reports.kinds import SAMPLES as REPORT_SAMPLES
from balancewatch.rules.compiled import CompiledRule
from balancewatch.rules.crosscheck import unknown_channels
from balancewatch.rules.loader import SourceFile, check_files, digest, read_files, rule_files
from balancewatch.rules.reports import CompiledReport
from balancewatch.topup.kinds import SAMPLES as TOPUP_SAMPLES

# Every kind of message a template may be used for, with its sample contexts: each producer
# declares its own (``<producer>/kinds.py``), and a new kind is checked by adding it there.
SAMPLES: Mapping[str, SampleMaker] = {**ALERT_SAMPLES, **REPORT_SAMPLES, **TOPUP_SAMPLES}


def load_set(
    rules_dir: Path,
    templates_dir: Path,
    paths: Sequence[Path] | None = None,
    *,
    budget: RenderBudget = DEFAULT_BUDGET,
    channels: Sequence[str] = (),
) -> LiveSet:
    """Load and cross-check the rule files of ``rules_dir`` (or exactly ``paths``) with the
    templates of ``templates_dir`` and the config's ``channels`` (their names); raises
    ProblemsError listing every problem.

    The set's templates render within ``budget`` (``render:`` in config.yaml), its test
    renders included."""
    problems: list[Problem] = []
    rules: list[CompiledRule] = []
    files = []
    try:
        files = read_files(rule_files(rules_dir) if paths is None else paths)
    except ProblemsError as exc:
        problems.extend(exc.problems)
    # The rules that compiled are cross-checked even when others did not: every problem at once.
    rules, reports, rule_problems = check_files(files)
    problems.extend(rule_problems)
    problems.extend(unknown_channels([*rules, *reports], channels))
    try:
        template_files = read_template_files(templates_dir)
    except ProblemsError as exc:
        raise ProblemsError([*problems, *exc.problems]) from None
    templates = TemplateSet(template_files, templates_dir, budget)
    compile_problems = templates.compile_problems()
    problems.extend(compile_problems)
    problems.extend(_missing_templates(rules, templates))
    problems.extend(_missing_report_templates(reports, templates))
    if not compile_problems:
        problems.extend(sample_render_problems(templates, template_uses(rules, reports)))
    if problems:
        raise ProblemsError(problems)
    return LiveSet(
        rules=tuple(rules),
        templates=templates,
        digest=set_digest(files, template_files),
        rule_sources=tuple(files),
        reports=tuple(reports),
    )


def set_digest(rule_sources: Sequence[SourceFile], template_files: Mapping[str, str]) -> str:
    """A hash of every rule and template file's name and contents."""
    h = hashlib.sha256(digest(rule_sources).encode())
    for name, text in sorted(template_files.items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def fingerprint(rules_dir: Path, templates_dir: Path) -> str:
    """The digest ``load_set`` would give the files on disk now, without parsing them.

    Raises ProblemsError when a directory is missing or a file unreadable.
    """
    return set_digest(read_files(rule_files(rules_dir)), read_template_files(templates_dir))


def template_uses(
    rules: Sequence[CompiledRule], reports: Sequence[CompiledReport] = ()
) -> dict[str, set[str]]:
    """Each template the rules and reports use, and for what (``alert``, ``restored``,
    ``topup-failed``, ``report-<contents>``)."""
    uses: dict[str, set[str]] = {}
    for rule in rules:
        for name, kind in rule.templates().items():
            uses.setdefault(name, set()).add(kind)
    for report in reports:
        uses.setdefault(report.template, set()).add(f"report-{report.contents}")
    return uses


def _missing_report_templates(reports: Sequence[CompiledReport], templates: TemplateSet) -> list[Problem]:
    known = ", ".join(sorted(templates.names)) or "none"
    return [
        Problem(
            r.source,
            r.line,
            "template",
            f"template {r.template!r} not found in {templates.directory} (have: {known}); "
            + TEMPLATE_NAMES_HINT,
        )
        for r in reports
        if r.template not in templates.names
    ]


def _missing_templates(rules: list[CompiledRule], templates: TemplateSet) -> list[Problem]:
    known = ", ".join(sorted(templates.names)) or "none"
    return [
        Problem(
            rule.source,
            rule.line,
            "template" if kind == "alert" else "restored" if kind == "restored" else "topup.template",
            f"template {name!r} not found in {templates.directory} (have: {known}); {TEMPLATE_NAMES_HINT}",
        )
        for rule in rules
        for name, kind in rule.templates().items()
        if name not in templates.names
    ]


def sample_render_problems(templates: TemplateSet, uses: Mapping[str, set[str]]) -> list[Problem]:
    """Render each used template (its chat message too) with every sample context of its uses;
    report what fails.

    A template stopped by the render budget is reported once and not rendered again."""
    out: dict[Problem, None] = {}
    for name in sorted(set(uses) & templates.names):
        for sample in _samples(uses[name]):
            try:
                templates.render(name, sample.context, chat=True)
            except OverBudgetError as exc:
                out[exc.problem] = None
                break  # each further sample could take the whole budget again
            except RenderError as exc:
                out[exc.problem] = None
    return list(out)


def _samples(kinds: set[str]) -> Iterator[Sample]:
    """The samples of every use in ``kinds``, in a stable order."""
    for kind in sorted(kinds):
        yield from SAMPLES[kind]()
