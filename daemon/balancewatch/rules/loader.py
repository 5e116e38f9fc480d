"""Reading the rules directory: every problem in every file, with file:line and field."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from balancewatch import yamlfile
from balancewatch.problems import Problem, ProblemsError
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
    problems: list[Problem] = []
    rules: list[CompiledRule] = []
    for f in files:
        try:
            rules.extend(_parse_file(f))
        except ProblemsError as exc:
            problems.extend(exc.problems)
    problems.extend(_duplicates(rules))
    if problems:
        raise ProblemsError(problems)
    return rules


def _parse_file(f: SourceFile) -> list[CompiledRule]:
    located = yamlfile.load(f.text, str(f.path))
    data = {} if located.data is None else located.data
    if not isinstance(data, dict):
        raise ProblemsError([Problem(str(f.path), 1, "", "a rule file is a mapping with an 'alerts:' list")])
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
            out.append(compile_rule(rule, str(f.path), located.line_of(("alerts", i))))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, located, AlertRule, prefix=("alerts", i)))
        except CompileError as exc:
            at = ("alerts", i, *exc.field.split("."))
            problems.append(Problem(str(f.path), located.line_of(at), located.field_of(at), str(exc)))
    if problems:
        raise ProblemsError(problems)
    return out


def _duplicates(rules: Sequence[CompiledRule]) -> list[Problem]:
    seen: dict[str, CompiledRule] = {}
    out = []
    for rule in rules:
        first = seen.setdefault(rule.id, rule)
        if first is not rule:
            out.append(
                Problem(
                    rule.source,
                    rule.line,
                    "id",
                    f"duplicate rule id {rule.id!r}: also defined at {first.source}:{first.line}; "
                    "ids must be unique across all rule files",
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
        loc = (*prefix, *error["loc"])
        field = located.field_of(loc)
        out.append(Problem(located.path, located.line_of(loc), field, _message(error, model)))
    return list(dict.fromkeys(out))


def _message(error: Any, model: type[BaseModel]) -> str:
    kind, msg = error["type"], str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        valid = _fields_at(model, error["loc"][:-1])
        hint = f"; valid fields here: {', '.join(valid)}" if valid else ""
        return f"unknown field {error['loc'][-1]!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("bool_type", "bool_parsing"):
        return "write true or false"
    return msg


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
