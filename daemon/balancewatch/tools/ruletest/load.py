"""Reading a test file: every problem at once as ``path:line: field: message``, else a plan to run.

Shapes are checked by the models; here what refers to what is checked:
accounts named by entries and expectations exist, amounts fit their
currency, the timeline moves forward, rule files and templates exist. The
result (``cases``) holds money in integer minor units and times as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from balancewatch.core import yamlfile
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.rules.validation import validation_problems
from balancewatch.tools.ruletest.accounts import check_accounts
from balancewatch.tools.ruletest.cases import Case, TestFile
from balancewatch.tools.ruletest.checking import Collector, Loc
from balancewatch.tools.ruletest.models import CaseSpec, FileSpec
from balancewatch.tools.ruletest.steps import check_step

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
TEST_SUFFIXES = (".test.yaml", ".test.yml")
_GLOB = frozenset("*?[")


def find_test_files(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """The test files named by ``paths``: files as given, directories searched for ``*.test.yaml``.

    Returns the files (sorted per directory, without repeats) and a message for
    each path that does not exist or holds no test file.
    """
    found: dict[Path, None] = {}
    missing: list[str] = []
    for path in paths:
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.name.endswith(TEST_SUFFIXES)
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                missing.append(f"{path}: no *.test.yaml files in this directory")
            found.update(dict.fromkeys(inside))
        else:
            missing.append(f"{path}: no such file or directory")
    return list(found), missing


def load_test_file(path: Path) -> TestFile:
    """Read and check one test file; raises ProblemsError listing every problem in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemsError([Problem(str(path), 0, "", f"cannot read: {exc}")]) from None
    located = yamlfile.load(text, str(path))
    if not isinstance(located.data, dict):
        raise ProblemsError(
            [
                Problem(
                    str(path), 1, "", "a test file is a mapping with a 'tests:' list; see docs/rule-tests.md"
                )
            ]
        )
    return _FileChecker(path, located).run()


class _FileChecker(Collector):
    """Checks one file's top level and its tests' timelines, collecting every problem."""

    def __init__(self, path: Path, located: yamlfile.Located) -> None:
        super().__init__(path, located)
        self.base = path.parent

    def run(self) -> TestFile:
        data = self.located.data
        try:
            top: FileSpec | None = FileSpec.model_validate(data)
        except ValidationError as exc:
            # Reported, and the tests are still checked: every problem in one pass.
            self.problems.extend(validation_problems(exc, self.located, FileSpec))
            top = None
        rule_files = self._rule_files(top.rule_files) if top and top.rule_files is not None else None
        templates = self._templates(top.templates) if top and top.templates is not None else None
        file_start = (top.start if top else None) or DEFAULT_START
        tests = data.get("tests") if isinstance(data.get("tests"), list) else []
        cases: list[Case] = []
        names: dict[str, int] = {}
        for i, item in enumerate(tests):
            try:
                spec = CaseSpec.model_validate(item)
            except ValidationError as exc:
                # Each test on its own, so one bad test does not hide the problems of the others.
                self.problems.extend(validation_problems(exc, self.located, CaseSpec, prefix=("tests", i)))
                continue
            if spec.name in names:
                self.problem(
                    ("tests", i, "name"), f"a test named {spec.name!r} is already on line {names[spec.name]}"
                )
            names.setdefault(spec.name, self.located.line_of(("tests", i, "name")))
            case = self._case(spec, ("tests", i), spec.start or file_start)
            if case is not None:
                cases.append(case)
        if self.problems:
            raise ProblemsError(self.problems)
        return TestFile(self.path, rule_files, templates, tuple(cases))

    def _rule_files(self, entries: list[str]) -> tuple[Path, ...]:
        out: dict[Path, None] = {}
        for i, entry in enumerate(entries):
            target = self.base / entry
            if _GLOB & set(entry):
                matches = sorted(p for p in Path(target.anchor).glob(str(target.relative_to(target.anchor))))
                # A pattern such as *.yaml next to the tests must not pick up the tests themselves.
                files = [p for p in matches if p.is_file() and not p.name.endswith(TEST_SUFFIXES)]
                if not files:
                    self.problem(("rule_files", i), f"{entry!r} matches no file (relative to {self.base})")
                out.update(dict.fromkeys(files))
            elif target.is_file():
                out[target] = None
            else:
                self.problem(("rule_files", i), f"{entry!r}: no such file (relative to {self.base})")
        return tuple(out)

    def _templates(self, entry: str) -> Path:
        target = self.base / entry
        if not target.is_dir():
            self.problem(("templates",), f"{entry!r}: no such directory (relative to {self.base})")
        return target

    def _case(self, spec: CaseSpec, at: Loc, start: datetime) -> Case | None:
        before = len(self.problems)
        accounts = check_accounts(self, spec.accounts, (*at, "accounts"))
        known = {a.spec.id: a for a in accounts}
        steps = []
        previous = start = start.astimezone(UTC)
        for k, step_spec in enumerate(spec.timeline):
            here = (*at, "timeline", k)
            when = (
                start + step_spec.at if isinstance(step_spec.at, timedelta) else step_spec.at.astimezone(UTC)
            )
            if when < previous:
                earlier = "the test's start" if k == 0 else "an earlier step"
                self.problem(
                    (*here, "at"),
                    f"{_iso(when)} is before {earlier} ({_iso(previous)}); the timeline runs forward",
                )
            previous = max(previous, when)
            step = check_step(self, step_spec, here, known, start, when)
            if step is not None:
                steps.append(step)
        if len(self.problems) > before:
            return None
        return Case(spec.name, self.where(at), start, tuple(accounts), tuple(steps))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
