"""``balancewatch test``: run rule unit tests. Exit 0 all passed, 1 a failure or a problem, 2 bad usage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from balancewatch.cli.common import Ctx, report_problems
from balancewatch.core.problems import ProblemsError
from balancewatch.tools.ruletest import report
from balancewatch.tools.ruletest.load import find_test_files
from balancewatch.tools.ruletest.runner import run_all

DESCRIPTION = """\
Run rule unit tests: accounts with opening balances, a timeline of ledger
entries, and the notifications each step must decide. Every test runs the
real evaluator and the real templates against a fresh temporary SQLite
database on a simulated clock; nothing is sent and the configured database
is not touched.

A test file (*.test.yaml):

  rule_files: [../low-balance.yaml]      # relative to this file; default: every rule file in rules_dir
  start: 2026-03-01T09:00:00Z
  tests:
    - name: a jump over two steps sends one email, for the lowest
      accounts:
        - {id: acme, name: Acme Ltd, email: owner@acme.example, balances: {USD: 300}}
      timeline:
        - at: 1m                          # offset from start, or an ISO time
          post: {account: acme, amount: -210}
          expect:                         # [] = no notification; left out = not checked
            - {rule: default-ladder, account: acme, step: 100, subject_contains: "below $100.00"}

Failures show expected against decided notifications with file and line.
Exit status: 0 every test passed, 1 a test failed or a file has problems
(listed as path:line: field: message), 2 a path that does not exist or
holds no *.test.yaml. The format is described in docs/rule-tests.md.
"""


def register(commands: Any) -> None:
    """Add the ``test`` command to the parser."""
    test = commands.add_parser(
        "test",
        help="run rule unit tests (*.test.yaml) against a temporary database",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="test files, or directories searched (with subdirectories) for *.test.yaml",
    )
    test.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list every test, and what each step decided (handy while writing a test)",
    )
    test.add_argument("--run", metavar="TEXT", help="run only the tests whose name contains TEXT")
    test.set_defaults(handler=cmd_test)


def cmd_test(ctx: Ctx) -> int:
    files, missing = find_test_files(ctx.args.paths)
    if missing:
        for message in missing:
            ctx.warn(f"balancewatch test: {message}")
        return 2
    try:
        settings = ctx.settings
    except ProblemsError as exc:
        return report_problems(ctx, exc, "config")
    run = run_all(files, settings, ctx.args.run)
    for problem in run.problems:
        ctx.warn(str(problem))
    for result in run.cases:
        if not result.ok:
            ctx.say("\n".join(report.failure(result)))
        elif ctx.args.verbose:
            ctx.say("\n".join(report.passed(result, steps=True)))
    if ctx.args.run and not run.cases and not run.broken:
        ctx.warn(f"balancewatch test: no test name contains {ctx.args.run!r}")
        return 1
    ctx.say(report.summary(run))
    return 0 if run.ok else 1
