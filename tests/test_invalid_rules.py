"""A corpus of invalid rule and template sets (tests/invalid_rules/), each with what `check` must print.

Every case is run through the command line in-process (``main(argv, environ)``),
a few through a real ``python -m balancewatch`` process, and every case through
``liveset.load_set`` — what the daemon runs at start and on every reload — which
must raise ProblemsError and nothing else: no bad file takes the daemon down.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.core import shipped
from balancewatch.core.problems import ProblemsError
from balancewatch.runtime.loadset import load_set

CORPUS = Path(__file__).resolve().parent / "invalid_rules"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())


def rules_dir(case: Path) -> Path:
    return case / "rules"


def templates_dir(case: Path) -> Path:
    """The case's own templates, or the shipped ones."""
    own = case / "templates"
    return own if own.is_dir() else shipped.templates_dir()


def expected(case: Path) -> list[str]:
    return (case / "expected.txt").read_text(encoding="utf-8").splitlines()


def relative(text: str, case: Path) -> str:
    """``text`` with the case directory's absolute path removed, as ``expected.txt`` writes paths."""
    return text.replace(f"{case.resolve()}{os.sep}", "").replace(f"{case}{os.sep}", "")


def environ(case: Path, state: Path) -> dict[str, str]:
    return {
        "BALANCEWATCH_STATE_DIR": str(state),
        "BALANCEWATCH_LOG__LEVEL": "warning",
        "BALANCEWATCH_RULES_DIR": str(rules_dir(case)),
        "BALANCEWATCH_TEMPLATES_DIR": str(templates_dir(case)),
    }


def test_the_corpus_has_at_least_thirty_cases_each_with_rules_and_expected_output() -> None:
    assert len(CASES) >= 30
    incomplete = [c.name for c in CASES if not (rules_dir(c).is_dir() and (c / "expected.txt").is_file())]
    assert incomplete == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_check_prints_exactly_the_expected_problems_and_exits_1(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check"], environ(case, tmp_path / "state"))
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert relative(err, case).splitlines() == expected(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_loading_the_set_raises_the_same_problems_and_nothing_else(case: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ProblemsError) as caught:
        load_set(rules_dir(case), templates_dir(case))
    assert time.monotonic() - started < 5, "a bad file must be refused quickly"
    assert [relative(str(p), case) for p in caught.value.problems] == expected(case)[:-1]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_problem_names_its_file_and_line(case: Path) -> None:
    *problems, summary = expected(case)
    assert summary == f"check failed: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
    unplaced = [p for p in problems if not re.match(r"^(rules|templates)/[^:]+:[1-9][0-9]*: ", p)]
    assert unplaced == []


@pytest.mark.parametrize(
    "name", ["46-alias-bomb", "45-not-utf-8", "50-template-syntax-error-in-html"], ids=lambda n: n
)
def test_a_real_check_process_exits_1_with_the_expected_problems(name: str, tmp_path: Path) -> None:
    case = CORPUS / name
    env = {**os.environ, **environ(case, tmp_path / "state"), "PYTHONHASHSEED": "random"}
    done = subprocess.run(
        [sys.executable, "-m", "balancewatch", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert relative(done.stderr, case).splitlines() == expected(case)
