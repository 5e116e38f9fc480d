"""Reading the rules directory: every problem in every file, with file:line and field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from balancewatch.config.channels import reference
from balancewatch.core import yamlfile
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.rules.compiled import CompiledRule, CompileError, compile_rule
from balancewatch.rules.crosscheck import Parsed, duplicates, inhibitions, inhibitors_first
from balancewatch.rules.files import RuleFile
from balancewatch.rules.models import AlertRule
from balancewatch.rules.reports import CompiledReport, ReportRule, compile_report
from balancewatch.rules.validation import short, validation_problems

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SourceFile:
    """One file's path and contents, read once so hashing and parsing agree."""

    path: Path
    text: str


def rule_files(directory: Path) -> list[Path]:
    """The rule files in ``directory``, sorted; hidden entries (``..data``) are skipped.

    Symlinks are followed, so a Kubernetes ConfigMap mount reads as plain files.
    """
    if not directory.is_dir():
        raise ProblemsError([Problem(str(directory), 0, "", "rules directory not found")])
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ProblemsError(
            [Problem(str(directory), 0, "", f"cannot read the rules directory: {reason}")]
        ) from None
    return sorted(
        p for p in entries if p.suffix in RULE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def read_files(paths: Iterable[Path]) -> list[SourceFile]:
    """Every file of ``paths`` as UTF-8 text; a file removed meanwhile is skipped.

    Raises ProblemsError naming every file that cannot be read or is not UTF-8
    (with the line and column of the first byte that is not).
    """
    out, problems = [], []
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # removed between listing and reading: it is simply gone
        except OSError as exc:
            problems.append(Problem(str(path), 0, "", f"cannot read: {(exc.strerror or str(exc)).lower()}"))
            continue
        try:
            out.append(SourceFile(path, data.decode("utf-8")))
        except UnicodeDecodeError as exc:
            problems.append(_not_utf8(path, data, exc))
    if problems:
        raise ProblemsError(problems)
    return out


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> Problem:
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
    return Problem(
        str(path),
        line,
        "",
        f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column} is not valid UTF-8 text; "
        "save the file as UTF-8",
    )


def digest(files: Sequence[SourceFile], salt: str = "") -> str:
    """A hash of names and contents: equal digests mean an identical set."""
    h = hashlib.sha256(salt.encode())
    for f in files:
        h.update(f.path.name.encode() + b"\0" + f.text.encode() + b"\0")
    return h.hexdigest()


def parse_rules(files: Sequence[SourceFile]) -> list[CompiledRule]:
    """Validate and compile every rule in ``files``.

    Raises ProblemsError with every problem in every file, including ids
    defined twice (naming both places).
    """
    rules, problems = check_rules(files)
    if problems:
        raise ProblemsError(problems)
    return rules


def check_rules(files: Sequence[SourceFile]) -> tuple[list[CompiledRule], list[Problem]]:
    """The rules that compiled and every problem found, so later checks can still look at
    the good rules (their templates, say) while the bad ones are reported."""
    rules, _reports, problems = check_files(files)
    return rules, problems


def check_files(
    files: Sequence[SourceFile],
) -> tuple[list[CompiledRule], list[CompiledReport], list[Problem]]:
    """The alert rules and reports that compiled, and every problem found in ``files``."""
    problems: list[Problem] = []
    parsed: list[Parsed] = []
    reports: list[Parsed] = []
    for f in files:
        good, good_reports, bad = _parse_cached(str(f.path), f.text)
        parsed.extend(good)
        reports.extend(good_reports)
        problems.extend(bad)
    problems.extend(duplicates(parsed))
    problems.extend(duplicates(reports, "report"))
    problems.extend(inhibitions(parsed))
    return inhibitors_first([p.rule for p in parsed]), [p.rule for p in reports], problems


@lru_cache(maxsize=4096)
def _parse_cached(path: str, text: str) -> tuple[tuple[Parsed, ...], tuple[Parsed, ...], tuple[Problem, ...]]:
    # Parsing depends on nothing but the name and the text, and a reload usually
    # changes one file of many: the others are not parsed again.
    good, reports, bad = _parse_file(SourceFile(Path(path), text))
    return tuple(good), tuple(reports), tuple(bad)


def _parse_file(f: SourceFile) -> tuple[list[Parsed], list[Parsed], list[Problem]]:
    """The rules and reports of one file that compiled, and every problem in it."""
    try:
        located = yamlfile.load(f.text, str(f.path))
    except ProblemsError as exc:
        return [], [], list(exc.problems)
    data = {} if located.data is None else located.data
    if not isinstance(data, dict):
        return [], [], [_not_a_rule_file(f, data)]
    problems: list[Problem] = []
    try:
        RuleFile.model_validate({k: [] if k in ("alerts", "reports") else v for k, v in data.items()})
    except ValidationError as exc:
        problems.extend(validation_problems(exc, located, RuleFile))
    alerts, alert_problems = _parse_alerts(f, located, data.get("alerts"))
    reports, report_problems = _parse_reports(f, located, data.get("reports"))
    return alerts, reports, problems + alert_problems + report_problems


def _not_a_rule_file(f: SourceFile, data: Any) -> Problem:
    """Why ``data``, which is not a mapping, is not a rule file."""
    if isinstance(data, list):
        message = (
            "the file is a list, but a rule file is a mapping with an 'alerts:' list: "
            "add a line 'alerts:' above the rules"
        )
    else:
        message = f"{short(data)} is not a rule file; a rule file is a mapping with an 'alerts:' list"
    return Problem(str(f.path), 1, "", message)


def _parse_alerts(f: SourceFile, located: yamlfile.Located, items: Any) -> tuple[list[Parsed], list[Problem]]:
    """The alert rules of one file that compiled, and every problem in them.

    Each rule is checked on its own, so one bad rule does not hide the others' problems.
    """
    problems: list[Problem] = []
    if not isinstance(items or [], list):
        problems.append(
            Problem(
                str(f.path),
                located.line_of(("alerts",)),
                "alerts",
                f"{short(items)} is not a list of rules; write one entry per rule, each starting "
                "with '- id: ...'",
            )
        )
        items = []
    out = []
    for i, item in enumerate(items or []):
        if item is None:
            entry = ("alerts", i)
            problems.append(
                Problem(
                    str(f.path),
                    located.line_of(entry),
                    located.field_of(entry),
                    "an empty entry ('-' with nothing after it); write the rule's fields under it "
                    "(id: ..., below: ...) or delete the '-'",
                )
            )
            continue
        try:
            rule = AlertRule.model_validate(item)
            compiled = compile_rule(rule, str(f.path), located.line_of(("alerts", i)))
            compiled = replace(
                compiled, channel_lines=reference_lines(located, ("alerts", i), compiled.channels)
            )
            id_at = ("alerts", i, "id")
            out.append(Parsed(compiled, located.line_of(id_at), located.field_of(id_at)))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, located, AlertRule, prefix=("alerts", i)))
        except CompileError as exc:
            for field, message in exc.errors:
                at = ("alerts", i, *_parts(field))
                problems.append(Problem(str(f.path), located.line_of(at), located.field_of(at), message))
    return out, problems


def _parse_reports(
    f: SourceFile, located: yamlfile.Located, items: Any
) -> tuple[list[Parsed], list[Problem]]:
    """The reports of one file that validated, and every problem in them."""
    if items is None:
        return [], []
    if not isinstance(items, list):
        message = f"{short(items)} is not a list of reports; write one entry per report ('- id: ...')"
        return [], [Problem(str(f.path), located.line_of(("reports",)), "reports", message)]
    out, problems = [], []
    for i, item in enumerate(items):
        try:
            report = ReportRule.model_validate(item)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, located, ReportRule, prefix=("reports", i)))
            continue
        at = ("reports", i, "id")
        compiled = compile_report(report, str(f.path), located.line_of(("reports", i)))
        compiled = replace(
            compiled, channel_lines=reference_lines(located, ("reports", i), compiled.channels)
        )
        out.append(Parsed(compiled, located.line_of(at), located.field_of(at)))
    return out, problems


def reference_lines(located: yamlfile.Located, at: tuple[str, int], names: Sequence[str]) -> tuple[int, ...]:
    """The line naming each channel of ``names`` in the notify of the entry at ``at``."""
    entry = located.data
    for part in at:
        entry = entry[part]
    notify = entry.get("notify") if isinstance(entry, dict) else None
    items = notify if isinstance(notify, list) else [notify]
    lines = []
    for name in names:
        line = located.line_of((*at, "notify"))
        for k, item in enumerate(items):
            words = [w.strip() for w in item.split(",")] if isinstance(item, str) else []
            if any((reference(w) or "").strip() == name for w in words):
                line = located.line_of((*at, "notify", k)) if isinstance(notify, list) else line
                break
        lines.append(line)
    return tuple(lines)


def _parts(field: str) -> tuple[str | int, ...]:
    """``below.USD[1]`` as the location ``("below", "USD", 1)``."""
    return tuple(int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\[\d+\]|[^.\[\]]+", field))
