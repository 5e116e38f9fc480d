"""The unit `balancewatch systemd-unit` prints is valid, hardened, and validates before it reloads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from balancewatch.cli.common import CommandError
from balancewatch.cli.main import main
from balancewatch.cli.unit import UnitTemplateError, render_unit
from balancewatch.core import shipped

EXECUTABLE = Path(sys.executable).with_name("balancewatch")  # this environment's console script
MAX_EXPOSURE = 1.2

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def printed_unit() -> str:
    """What the installed command prints."""
    done = subprocess.run(
        [str(EXECUTABLE), "systemd-unit"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


@pytest.fixture(scope="module")
def unit() -> str:
    return printed_unit()


@pytest.fixture
def unit_file(unit: str, tmp_path: Path) -> Path:
    path = tmp_path / "balancewatch.service"
    path.write_text(unit)
    return path


@needs_systemd_analyze
def test_the_printed_unit_passes_systemd_analyze_verify(unit_file: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_systemd_analyze
def test_the_printed_unit_is_rated_at_most_1_2_by_systemd_analyze_security(unit_file: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for balancewatch\.service: (\d+\.\d)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_printed_unit_runs_this_environments_balancewatch(unit: str) -> None:
    assert values(unit, "ExecStart") == [f"{EXECUTABLE} run"]
    assert values(unit, "ExecReload") == [f"{EXECUTABLE} check", "/bin/kill -HUP $MAINPID"]
    assert values(unit, "Environment") == ["BALANCEWATCH_CONFIG=/etc/balancewatch/config.yaml"]
    settings = [line for line in unit.splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "/opt/balancewatch" in line]


def test_every_documentation_entry_of_the_printed_unit_names_a_file_that_exists(unit: str) -> None:
    entries = [uri for line in values(unit, "Documentation") for uri in line.split()]
    assert entries
    for uri in entries:
        parsed = urlparse(uri)
        assert parsed.scheme == "file", uri
        assert Path(unquote(parsed.path)).is_file(), uri


@pytest.mark.parametrize("config_first", [False, True], ids=["command-option", "global-option"])
def test_the_config_path_given_to_the_command_becomes_balancewatch_config(
    config_first: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("poll_interval: 30s\n")
    option = ["--config", str(config)]
    argv = [*option, "systemd-unit"] if config_first else ["systemd-unit", *option]
    assert main(argv, environ={}) == 0
    assert values(capsys.readouterr().out, "Environment") == [f"BALANCEWATCH_CONFIG={config}"]


@needs_systemd_analyze
def test_paths_with_spaces_and_percent_signs_are_quoted_as_systemd_reads_them(tmp_path: Path) -> None:
    bindir = tmp_path / "my env 100%" / "bin"
    bindir.mkdir(parents=True)
    script = bindir / "balancewatch"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    doc = tmp_path / "my env 100%" / "systemd.md"
    doc.write_text("docs\n")
    unit = render_unit(shipped.systemd_unit().read_text(), script, tmp_path / "etc dir" / "config.yaml", doc)
    assert values(unit, "ExecStart") == [f'"{str(script).replace("%", "%%")}" run']
    assert values(unit, "Environment") == [f'"BALANCEWATCH_CONFIG={tmp_path}/etc dir/config.yaml"']
    assert values(unit, "Documentation") == [doc.as_uri().replace("%", "%%")]
    path = tmp_path / "balancewatch.service"
    path.write_text(unit)
    # verify resolves ExecStart= and fails when the unquoted path names no executable file.
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_path_with_a_newline_is_refused_rather_than_written_into_the_unit(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="control character"):
        render_unit(shipped.systemd_unit().read_text(), EXECUTABLE, tmp_path / "a\nb.yaml", None)


def test_a_unit_without_the_lines_the_command_fills_in_is_refused() -> None:
    template = shipped.systemd_unit().read_text().replace("ExecStart=/opt/", "ExecStart=/usr/")
    with pytest.raises(UnitTemplateError, match="ExecStart="):
        render_unit(template, EXECUTABLE, Path("/etc/balancewatch/config.yaml"), None)


def test_without_a_docs_page_on_disk_documentation_is_left_out_not_dangling() -> None:
    unit = render_unit(shipped.systemd_unit().read_text(), EXECUTABLE, Path("/etc/b/config.yaml"), None)
    assert values(unit, "Documentation") == []


def test_reload_runs_check_before_signalling_the_daemon(unit: str) -> None:
    reloads = values(unit, "ExecReload")
    assert reloads[0].endswith("balancewatch check")
    assert reloads[1] == "/bin/kill -HUP $MAINPID"


def test_the_unit_waits_for_readiness_pings_the_watchdog_and_lets_a_batch_finish_on_stop(unit: str) -> None:
    assert values(unit, "Type") == ["notify"]
    assert values(unit, "NotifyAccess") == ["main"]
    assert values(unit, "WatchdogSec") == ["60s"]
    assert values(unit, "KillSignal") == ["SIGTERM"]
    assert values(unit, "StateDirectory") == ["balancewatch"]


def test_a_refusal_is_not_restarted_in_a_loop_but_any_other_failure_is(unit: str) -> None:
    from balancewatch.cli.ops import EX_CONFIG

    assert values(unit, "Restart") == ["on-failure"]
    assert values(unit, "RestartPreventExitStatus") == [str(EX_CONFIG)]


def test_the_unit_lets_the_metrics_port_bind_and_says_how_to_restrict_addresses(unit: str) -> None:
    assert values(unit, "IPAddressDeny") == []
    assert values(unit, "PrivateNetwork") == []
    assert "AF_INET" in values(unit, "RestrictAddressFamilies")[0]
    assert "#      IPAddressDeny=any" in unit
