"""The shipped Prometheus alerting rules are valid and behave as their unit tests say (promtool).

promtool comes with Prometheus (Debian: the ``prometheus`` package; ``.ci/run`` installs it).
Without it these tests are skipped, except under ``CI=true``, where they fail: CI must prove
the rules, as it proves both database backends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

RULES_DIR = Path(__file__).resolve().parent.parent / "docs" / "prometheus"
RULES = RULES_DIR / "balancewatch.rules.yml"
RULE_TESTS = RULES_DIR / "balancewatch.rules.test.yml"
ALERTS = (
    "BalancewatchDown",
    "BalancewatchDatabaseDown",
    "BalancewatchMailParked",
    "BalancewatchPendingMailOld",
    "BalancewatchPollStalled",
    "BalancewatchReloadFailed",
)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not found (Debian: apt-get install --no-install-recommends prometheus)"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the alerting rules must be tested)")
        pytest.skip(reason)
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *argv], cwd=RULES_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alerting_rules_pass_promtool_check() -> None:
    result = run("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_alerting_rules_pass_their_unit_tests() -> None:
    result = run("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_test_where_it_fires_and_one_where_it_does_not() -> None:
    tests = RULE_TESTS.read_text()
    for alert in ALERTS:
        assert f"alert: {alert}\n" in RULES.read_text()
        cases = tests.split(f"alertname: {alert}\n")[1:]
        outcomes = {case.lstrip().startswith("exp_alerts: []") for case in cases}
        assert outcomes == {True, False}, f"{alert}: needs a firing and a silent case"


def test_a_rule_test_that_expects_the_wrong_thing_fails(tmp_path: Path) -> None:
    # The unit tests can fail: a rule with its threshold moved no longer fires when they expect.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 15 * 60", "> 60 * 60"))
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "BalancewatchPendingMailOld" in result.stdout + result.stderr


@pytest.mark.parametrize(("ci", "verdict"), [("true", "1 failed"), ("", "1 skipped")])
def test_a_missing_promtool_fails_under_ci_and_is_skipped_elsewhere(
    tmp_path: Path, ci: str, verdict: str
) -> None:
    env = {**os.environ, "CI": ci, "PATH": str(tmp_path)}  # nothing to run on this PATH
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:xdist",
        "-p",
        "no:cacheprovider",
        "-q",
        "-o",
        "addopts=",
    ]
    test = f"{Path(__file__).resolve()}::test_the_alerting_rules_pass_promtool_check"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [*command, test], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert verdict in result.stdout, result.stdout + result.stderr
    if ci:
        assert "CI=true: the alerting rules must be tested" in result.stdout
