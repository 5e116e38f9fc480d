"""Reading the rules directory: every problem in every file, with file:line and field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from balancewatch import yamlfile
from balancewatch.problems import Problem, ProblemsError, explain
from balancewatch.rules.compiled import CompiledRule, CompileError, compile_rule
from balancewatch.rules.models import AlertRule, RuleFile

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
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in RULE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def read_files(paths: Iterable[Path]) -> list[SourceFile]:
    out = []
    for path in paths:
        try:
            out.append(SourceFile(path, path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue  # removed between listing and reading: it is simply gone
        except (OSError, UnicodeDecodeError) as exc:
            raise ProblemsError([Problem(str(path), 0, "", f"cannot read: {exc}")]) from None
    return out


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
    problems: list[Problem] = []
    parsed: list[_Parsed] = []
    for f in files:
        good, bad = _parse_file(f)
        parsed.extend(good)
        problems.extend(bad)
    problems.extend(_duplicates(parsed))
    return [p.rule for p in parsed], problems


@dataclass(frozen=True)
class _Parsed:
    """A compiled rule and where its id is written, for duplicate reports."""

    rule: CompiledRule
    id_line: int
    id_field: str


def _parse_file(f: SourceFile) -> tuple[list[_Parsed], list[Problem]]:
    """The rules of one file that compiled, and every problem in it."""
    try:
        located = yamlfile.load(f.text, str(f.path))
    except ProblemsError as exc:
        return [], list(exc.problems)
    data = {} if located.data is None else located.data
    if not isinstance(data, dict):
        return [], [Problem(str(f.path), 1, "", "a rule file is a mapping with an 'alerts:' list")]
    problems: list[Problem] = []
    try:
        RuleFile.model_validate({k: [] if k == "alerts" else v for k, v in data.items()})
    except ValidationError as exc:
        problems.extend(validation_problems(exc, located, RuleFile))
    items = data.get("alerts") or []
    if not isinstance(items, list):
        problems.append(Problem(str(f.path), located.line_of(("alerts",)), "alerts", "write a list of rules"))
        items = []
    out = []
    for i, item in enumerate(items):
        # Each rule on its own, so one bad rule does not hide the others' problems.
        try:
            rule = AlertRule.model_validate(item)
            compiled = compile_rule(rule, str(f.path), located.line_of(("alerts", i)))
            at = ("alerts", i, "id")
            out.append(_Parsed(compiled, located.line_of(at), located.field_of(at)))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, located, AlertRule, prefix=("alerts", i)))
        except CompileError as exc:
            for field, message in exc.errors:
                at = ("alerts", i, *field.split("."))
                problems.append(Problem(str(f.path), located.line_of(at), located.field_of(at), message))
    return out, problems


def _duplicates(parsed: Sequence[_Parsed]) -> list[Problem]:
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
                    f"duplicate rule id {p.rule.id!r}: also defined at {first.rule.source}:{first.id_line}; "
                    "ids must be unique across all rule files (alert state is keyed on them)",
                )
            )
    return out


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
    if error["type"] == "extra_forbidden":
        valid = _fields_at(model, error["loc"][:-1])
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {error['loc'][-1]!r}{hint}"
    return explain(error)


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
