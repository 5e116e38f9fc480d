"""The built wheel works on its own: console script, shipped rules, templates and example config.

The wheel is built from this checkout and installed into a fresh virtual
environment. Its dependencies are made visible from the environment running
the tests (a ``.pth`` line), so the test needs no network and stays fast; the
package itself comes only from the wheel, and the checkout is nowhere on the path.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed; yields the venv directory."""
    root = tmp_path_factory.mktemp("packaging")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist", REPO]
    if importlib.util.find_spec("hatchling") is not None:
        build.insert(5, "--no-build-isolation")  # the backend is here already: no download
    _run(*build)
    [wheel] = (root / "dist").glob("balancewatch-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory far from the checkout, with no config.yaml."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def clean_env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "BALANCEWATCH_STATE_DIR": str(home / "state")}


def shipped_dir(venv: Path) -> Path:
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    return Path(site) / "balancewatch" / "_shipped"


def test_the_installed_console_script_checks_the_packaged_rules(installed: Path, elsewhere: Path) -> None:
    out = _run(installed / "bin" / "balancewatch", "check", cwd=elsewhere, env=clean_env(elsewhere))
    packaged = shipped_dir(installed)
    assert out.startswith(
        f"ok: config (defaults); 5 rules and 4 reports in 3 files in {packaged / 'rules'}; "
        f"{len(list(packaged.glob('templates/*/subject.txt')))} templates in {packaged / 'templates'}; set "
    )


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, elsewhere: Path) -> None:
    where = _run(
        installed / "bin" / "python",
        "-c",
        "import balancewatch, balancewatch.core.shipped as s\n"
        "print(balancewatch.__file__)\n"
        "print(s.example_config())",
        cwd=elsewhere,
        env=clean_env(elsewhere),
    ).splitlines()
    packaged = shipped_dir(installed)
    assert where == [str(packaged.parent / "__init__.py"), str(packaged / "config.example.yaml")]
    assert str(REPO) not in "".join(where)


def test_the_packaged_example_config_loads(installed: Path, elsewhere: Path) -> None:
    packaged = shipped_dir(installed)
    env = {
        **clean_env(elsewhere),
        "BALANCEWATCH_RULES_DIR": str(packaged / "rules"),
        "BALANCEWATCH_TEMPLATES_DIR": str(packaged / "templates"),
    }
    script = installed / "bin" / "balancewatch"
    shown = json.loads(
        _run(script, "--config", packaged / "config.example.yaml", "config", "show", cwd=elsewhere, env=env)
    )
    assert (shown["source"], shown["rules_dir"]) == (
        str(packaged / "config.example.yaml"),
        str(packaged / "rules"),
    )
    assert _run(
        script, "--config", packaged / "config.example.yaml", "check", cwd=elsewhere, env=env
    ).startswith(f"ok: config {packaged / 'config.example.yaml'}; 5 rules")
