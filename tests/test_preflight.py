"""preflight: what `check` and `run` both verify, for the cases the corpus does not cover."""

from __future__ import annotations

from pathlib import Path

from balancewatch.config import load_settings
from balancewatch.core import shipped
from balancewatch.runtime.preflight import directory_problems, login_problems, unwritable


def test_the_example_config_with_a_local_relay_and_no_login_has_no_login_problem(tmp_path: Path) -> None:
    # The example writes `password:` and `password_file:` empty: that is no password given.
    text = shipped.example_config().read_text().replace('  host: ""', "  host: relay.example", 1)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    settings = load_settings(path, {"STATE_DIRECTORY": str(tmp_path / "state")})
    assert settings.smtp.host == "relay.example"
    assert login_problems(settings) == []


def test_a_password_without_a_user_is_still_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("smtp:\n  host: relay.example\n  password: secret\n")
    [problem] = login_problems(load_settings(path, {}))
    assert str(problem) == (
        f"{path}:3: smtp.password: a password but no smtp.username; set smtp.username, or remove the password"
    )


def test_finding_out_whether_a_directory_can_be_written_leaves_nothing_behind(tmp_path: Path) -> None:
    assert unwritable(tmp_path / "a" / "b" / "state") is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    assert unwritable(tmp_path / "kept") is None
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_the_default_database_directory_is_blamed_on_state_dir_even_when_url_is_written_empty(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('state_dir: /proc/balancewatch\ndatabase:\n  url: ""\n')
    [problem] = directory_problems(load_settings(path, {}))
    assert str(problem).startswith(f"{path}:1: state_dir: cannot write /proc/balancewatch: ")
