"""Reading the rules directory: every problem in every file, with file:line and field."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from balancewatch.core import yamlfile
from balancewatch.core.problems import Problem, ProblemsError, explain
from balancewatch.rules.compiled import CompiledRule, CompileError, compile_rule
from balancewatch.rules.files import RuleFile
from balancewatch.rules.models import AlertRule
from balancewatch.rules.reports import CompiledReport, ReportRule, compile_report

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
    parsed: list[_Parsed] = []
    reports: list[_Parsed] = []
    for f in files:
        good, good_reports, bad = _parse_cached(str(f.path), f.text)
        parsed.extend(good)
        reports.extend(good_reports)
        problems.extend(bad)
    problems.extend(_duplicates(parsed))
    problems.extend(_duplicates(reports, "report"))
    problems.extend(_inhibitions(parsed))
    return inhibitors_first([p.rule for p in parsed]), [p.rule for p in reports], problems


@dataclass(frozen=True)
class _Parsed:
    """A compiled rule (or report) and where its id is written, for duplicate reports."""

    rule: Any  # CompiledRule or CompiledReport
    id_line: int
    id_field: str


@lru_cache(maxsize=4096)
def _parse_cached(
    path: str, text: str
) -> tuple[tuple[_Parsed, ...], tuple[_Parsed, ...], tuple[Problem, ...]]:
    # Parsing depends on nothing but the name and the text, and a reload usually
    # changes one file of many: the others are not parsed again.
    good, reports, bad = _parse_file(SourceFile(Path(path), text))
    return tuple(good), tuple(reports), tuple(bad)


def _parse_file(f: SourceFile) -> tuple[list[_Parsed], list[_Parsed], list[Problem]]:
    """The rules and reports of one file that compiled, and every problem in it."""
    try:
        located = yamlfile.load(f.text, str(f.path))
    except ProblemsError as exc:
        return [], [], list(exc.problems)
    data = {} if located.data is None else located.data
    if isinstance(data, list):
        return (
            [],
            [],
            [
                Problem(
                    str(f.path),
                    1,
                    "",
                    "the file is a list, but a rule file is a mapping with an 'alerts:' list: "
                    "add a line 'alerts:' above the rules",
                )
            ],
        )
    if not isinstance(data, dict):
        return (
            [],
            [],
            [
                Problem(
                    str(f.path),
                    1,
                    "",
                    f"{_short(data)} is not a rule file; a rule file is a mapping with an 'alerts:' list",
                )
            ],
        )
    problems: list[Problem] = []
    try:
        RuleFile.model_validate({k: [] if k in ("alerts", "reports") else v for k, v in data.items()})
    except ValidationError as exc:
        problems.extend(validation_problems(exc, located, RuleFile))
    items = data.get("alerts") or []
    if not isinstance(items, list):
        problems.append(
            Problem(
                str(f.path),
                located.line_of(("alerts",)),
                "alerts",
                f"{_short(items)} is not a list of rules; write one entry per rule, each starting "
                "with '- id: ...'",
            )
        )
        items = []
    out = []
    for i, item in enumerate(items):
        # Each rule on its own, so one bad rule does not hide the others' problems.
        if item is None:
            at = ("alerts", i)
            problems.append(
                Problem(
                    str(f.path),
                    located.line_of(at),
                    located.field_of(at),
                    "an empty entry ('-' with nothing after it); write the rule's fields under it "
                    "(id: ..., below: ...) or delete the '-'",
                )
            )
            continue
        try:
            rule = AlertRule.model_validate(item)
            compiled = compile_rule(rule, str(f.path), located.line_of(("alerts", i)))
            at = ("alerts", i, "id")
            out.append(_Parsed(compiled, located.line_of(at), located.field_of(at)))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, located, AlertRule, prefix=("alerts", i)))
        except CompileError as exc:
            for field, message in exc.errors:
                at = ("alerts", i, *_parts(field))
                problems.append(Problem(str(f.path), located.line_of(at), located.field_of(at), message))
    reports, report_problems = _parse_reports(f, located, data.get("reports"))
    return out, reports, problems + report_problems


def _parse_reports(
    f: SourceFile, located: yamlfile.Located, items: Any
) -> tuple[list[_Parsed], list[Problem]]:
    """The reports of one file that validated, and every problem in them."""
    if items is None:
        return [], []
    if not isinstance(items, list):
        message = f"{_short(items)} is not a list of reports; write one entry per report ('- id: ...')"
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
        out.append(_Parsed(compiled, located.line_of(at), located.field_of(at)))
    return out, problems


def _parts(field: str) -> tuple[str | int, ...]:
    """``below.USD[1]`` as the location ``("below", "USD", 1)``."""
    return tuple(int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\[\d+\]|[^.\[\]]+", field))


KEYED = {"rule": "alert state is", "report": "reports sent are"}


def _duplicates(parsed: Sequence[_Parsed], what: str = "rule") -> list[Problem]:
    seen: dict[str, _Parsed] = {}
    out = []
    for p in parsed:
        first = seen.setdefault(p.rule.id, p)
        if first is not p:
            out.append(
                Problem(
                    p.rule.source,
                    p.id_line,
                    p.id_field,
                    f"duplicate {what} id {p.rule.id!r}: "
                    f"also defined at {first.rule.source}:{first.id_line}; "
                    f"ids must be unique across all rule files ({KEYED[what]} keyed on them)",
                )
            )
    return out


def _inhibitions(parsed: Sequence[_Parsed]) -> list[Problem]:
    """Every ``inhibited_by`` names a rule that exists, and no rules silence each other in a loop."""
    known = {p.rule.id for p in parsed}
    out = []
    for p in parsed:
        field = p.id_field.rsplit(".", 1)[0] + ".inhibited_by"
        for other in p.rule.inhibited_by:
            if other not in known:
                hint = difflib.get_close_matches(other, known, n=1)
                out.append(
                    Problem(
                        p.rule.source,
                        p.id_line,
                        field,
                        f"no rule {other!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + "; name the id of a rule in the rules directory",
                    )
                )
    loop = _inhibition_loop([p.rule for p in parsed])
    if loop:
        first = next(p for p in parsed if p.rule.id == loop[0])
        out.append(
            Problem(
                first.rule.source,
                first.id_line,
                first.id_field.rsplit(".", 1)[0] + ".inhibited_by",
                "rules silence each other in a loop (" + " -> ".join([*loop, loop[0]]) + "); break the loop",
            )
        )
    return out


def _inhibition_loop(rules: Sequence[CompiledRule]) -> list[str]:
    """One loop of rules silencing each other, as ids in order, or [] when there is none."""
    edges = {r.id: r.inhibited_by for r in rules}
    done: set[str] = set()

    def walk(path: list[str]) -> list[str]:
        for nxt in edges.get(path[-1], ()):
            if nxt in path:
                return path[path.index(nxt) :]
            if nxt not in done:
                found = walk([*path, nxt])
                if found:
                    return found
        done.add(path[-1])
        return []

    for start in edges:
        found = [] if start in done else walk([start])
        if found:
            return found
    return []


def inhibitors_first(rules: Sequence[CompiledRule]) -> list[CompiledRule]:
    """``rules`` in file order, except that a rule comes after the rules that can silence it,
    so in one cycle an inhibitor has fired before the rules it inhibits are decided."""
    by_id = {r.id: r for r in rules}
    placed: dict[str, CompiledRule] = {}

    def place(rule: CompiledRule, seen: frozenset[str]) -> None:
        if rule.id in placed or rule.id in seen:
            return  # placed already, or a loop (reported by _inhibitions)
        for other in rule.inhibited_by:
            if other in by_id:
                place(by_id[other], seen | {rule.id})
        placed[rule.id] = rule

    for rule in rules:
        place(rule, frozenset())
    placed_ids = set(placed)
    return [*placed.values(), *(r for r in rules if r.id not in placed_ids)]


def validation_problems(
    exc: ValidationError,
    located: yamlfile.Located,
    model: type[BaseModel],
    prefix: tuple[str | int, ...] = (),
) -> list[Problem]:
    """Turn pydantic's errors into problems with line, field and a hint of what is valid.

    ``prefix`` is where in the file the validated value sits.
    """
    out = []
    for error in exc.errors(include_url=False):
        inner, message = _relocate(error, model)
        loc = (*prefix, *inner)
        field = located.field_of(loc)
        out.append(Problem(located.path, located.line_of(loc), field, message))
    return list(dict.fromkeys(out))


_FIELD_FIRST = re.compile(r"^([a-z_]+): (.+)$", re.DOTALL)


def _relocate(error: Any, model: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    """The error's location and message; a model-level message "field: ..." moves to that field."""
    loc, message = tuple(error["loc"]), _message(error, model)
    found = _FIELD_FIRST.match(message) if error["type"] == "value_error" else None
    if found and found.group(1) in _fields_at(model, loc):
        return (*loc, found.group(1)), found.group(2)
    return loc, message


def _message(error: Any, model: type[BaseModel]) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        valid = _fields_at(model, error["loc"][:-1])
        close = [_SYNONYMS[name]] if _SYNONYMS.get(name) in valid else []
        close = close or difflib.get_close_matches(name, valid, n=1, cutoff=0.7)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {name!r}{guess}{hint}"
    # explain() shows the input as written; a long one (a deep structure) is cut to a readable length.
    message = explain({**error, "input": _Shown(_short(given))} if len(repr(given)) > 60 else error)
    if kind == "below_shape":
        return f"{_short(given)} is neither a list of amounts nor a mapping; {message}"
    if given is None and message.startswith("None is not "):
        # `key:` with nothing after it: say so rather than show Python's None.
        _, _, hint = message.partition("; ")
        return f"no value; {hint}" if hint else "no value; write one here"
    return message


# Words other tools use for our fields; suggested only where the field is valid.
_SYNONYMS = {
    "threshold": "below",
    "thresholds": "below",
    "steps": "below",
    "recipients": "notify",
    "emails": "notify",
    "email": "notify",
    "to": "notify",
    "reminder": "remind",
    "repeat": "remind",
    "interval": "remind",
    "hysteresis": "rearm",
    "selector": "accounts",
    "match": "accounts",
    "name": "id",
    "rules": "alerts",
    "currencies": "currency",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Shown:
    """Stands in for a value whose repr is too long to print whole."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field is None:
            continue
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
