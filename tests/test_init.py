"""``balancewatch init DIR``: a config, the shipped rules and templates that `check` accepts as written;
never over a file that exists unless --force."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from balancewatch.cli import main
from balancewatch.core import shipped

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[Run]:
    """``balancewatch ARGV`` in-process, with no BALANCEWATCH_* variables: only the files count."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv), {"BALANCEWATCH_LOG__LEVEL": "warning"})
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke
    root.handlers[:], root.level = handlers, level


def shipped_files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_init_writes_a_directory_that_check_accepts_wherever_it_is_moved(run: Run, tmp_path: Path) -> None:
    code, out, err = run("init", str(tmp_path / "first"))
    assert (code, err) == (0, "")
    moved = (tmp_path / "first").rename(tmp_path / "etc")
    config = moved / "config.yaml"
    code, out, err = run("--config", str(config), "check")
    assert (code, err) == (0, "")
    assert out.startswith(f"ok: config {config}; ")
    assert f" in {moved / 'rules'}; " in out
    assert f" templates in {moved / 'templates'}; " in out


def test_init_copies_the_shipped_rules_and_templates_and_points_the_config_at_them(
    run: Run, tmp_path: Path
) -> None:
    target = tmp_path / "bw"
    code, out, _ = run("init", str(target))
    assert code == 0
    assert shipped_files(target / "rules") == shipped_files(shipped.rules_dir())
    assert shipped_files(target / "templates") == shipped_files(shipped.templates_dir())
    example = shipped.example_config().read_text().splitlines()
    written = (target / "config.yaml").read_text().splitlines()
    changed = [new for old, new in zip(example, written, strict=True) if old != new]
    assert changed == ["rules_dir: rules", "templates_dir: templates"]
    assert out.splitlines()[:3] == [
        f"wrote {target / 'config.yaml'}",
        f"wrote {target / 'rules'}/ ({len(shipped_files(shipped.rules_dir()))} files)",
        f"wrote {target / 'templates'}/ ({len(shipped_files(shipped.templates_dir()))} files)",
    ]
    assert f"  2. balancewatch --config {target / 'config.yaml'} check" in out.splitlines()


def test_init_refuses_to_write_over_an_existing_file_and_writes_nothing(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "bw"
    assert run("init", str(target))[0] == 0
    (target / "config.yaml").write_text("# mine\n")
    (target / "templates" / "low-balance" / "subject.txt").unlink()
    code, out, err = run("init", str(target))
    assert (code, out) == (1, "")
    assert err == (
        f"balancewatch init: {target / 'config.yaml'} exists; nothing written "
        "(--force overwrites the files init writes)\n"
    )
    assert (target / "config.yaml").read_text() == "# mine\n"
    assert not (target / "templates" / "low-balance" / "subject.txt").exists()


def test_init_force_overwrites_what_it_writes_and_leaves_other_files_alone(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "bw"
    assert run("init", str(target))[0] == 0
    subject = target / "templates" / "low-balance" / "subject.txt"
    subject.write_text("edited\n")
    (target / "rules" / "mine.yaml").write_text("alerts: []\n")
    code, _, err = run("init", "--force", str(target))
    assert (code, err) == (0, "")
    assert subject.read_bytes() == (shipped.templates_dir() / "low-balance" / "subject.txt").read_bytes()
    assert (target / "rules" / "mine.yaml").read_text() == "alerts: []\n"


def test_init_where_it_cannot_write_says_which_path_in_one_line(run: Run, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    code, out, err = run("init", str(tmp_path / "file" / "bw"))
    assert (code, out) == (1, "")
    assert (
        err
        == f"balancewatch init: {tmp_path / 'file' / 'bw' / 'config.yaml'}: cannot write: Not a directory\n"
    )
