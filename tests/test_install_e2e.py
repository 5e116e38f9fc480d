"""The README's "Running it for real", followed end to end as the shipped unit would run it.

No systemd runs here, so the test plays its part: the daemon is started with
the unit's ``ExecStart=`` and ``Environment=``, as an unprivileged user with no
capabilities, no new privileges, no writable and executable memory
(``MemoryDenyWriteExecute=``, through the kernel's ``PR_SET_MDWE``) and
``UMask=0077``, cwd ``/``, a home it cannot write, its own ``$STATE_DIRECTORY``
(mode 0750), ``$WATCHDOG_USEC`` from ``WatchdogSec=`` and a ``$NOTIFY_SOCKET``
the test listens on. The README's ``bw`` alias (a command run as the service)
is the same user and environment. The config directory is root's and
read-only. Mail goes to a real SMTP server on loopback.

Everything the daemon and the CLI run comes from a wheel built from this
checkout and installed into a fresh virtual environment outside it; the
wheel's dependencies are made visible from the environment running the tests
(a ``.pth`` line), so the test needs no network. The README's paths
(``/opt/balancewatch``, ``/etc/balancewatch``) become directories under one
temporary root.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.smtpserver import Received, SmtpServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SERVICE_USER = "nobody"
STOP_WITHIN = 10.0
SENDER = "Example billing <billing@example.com>"
ALERT_SUBJECT = "Acme Ltd: USD balance $180.00 is below $250.00"  # the README promises it

# Sets what MemoryDenyWriteExecute= and UMask= would, then runs the command. It runs as root
# before setpriv drops to the service user; the kernel keeps MDWE across both execs.
LAUNCHER = """
import ctypes, errno, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
    sys.exit("prctl(PR_SET_MDWE): " + os.strerror(ctypes.get_errno()))
os.umask(0o077)
os.execvp(sys.argv[1], sys.argv[1:])
"""
SERVICE_IDS = pwd.getpwnam(SERVICE_USER)
SETPRIV = [
    "setpriv",
    f"--reuid={SERVICE_IDS.pw_uid}",
    f"--regid={SERVICE_IDS.pw_gid}",
    "--clear-groups",
    "--no-new-privs",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--",
]


def readme_section(title: str) -> str:
    """The README's ``### title`` subsection, up to the next heading."""
    text = README.read_text()
    start = text.index(f"### {title}\n")
    return text[start : text.index("\n#", start + 4)]


def shell_lines(section: str) -> list[str]:
    """The command lines of a section's ```sh blocks, without trailing comments."""
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [re.sub(r"\s+# .*$", "", line) for block in blocks for line in block.splitlines() if line]


def run(argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def service_user_python() -> str:
    """An interpreter of this Python version that the service user may run (root's pyenv is private)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys._base_executable, shutil.which(f"python{version}"), f"/usr/bin/python{version}"]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [*SETPRIV, candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    pytest.skip(f"no Python {version} that user {SERVICE_USER} may run")


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """The machine's stand-in: a directory the service user may traverse (pytest's tmp is root's)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the daemon as an unprivileged user")
    path = Path(tempfile.mkdtemp(prefix="balancewatch-install-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def opt(root: Path) -> Path:
    """The README's Install: a wheel built from the checkout, in a fresh /opt/balancewatch."""
    python_for_service = service_user_python()
    dist = root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)]
    if importlib.util.find_spec("hatchling") is not None:
        build.insert(5, "--no-build-isolation")  # the backend is here already: no download
    run(build)
    [wheel] = dist.glob("balancewatch-*.whl")
    venv = root / "opt" / "balancewatch"
    run([python_for_service, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def shipped(venv: Path) -> Path:
    """The installed wheel's copies of the shipped files (a user copies the same from the clone)."""
    example = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import balancewatch.core.shipped as s; print(s.example_config())",
        ]
    )
    return Path(example.strip()).parent


def configure(etc: Path, packaged: Path, smtp: SmtpServer) -> Path:
    """The README's config steps: the example config, rules and templates; the smtp: and from edits.

    The example names /etc/balancewatch for rules and templates; here that directory is ``etc``.
    Then the directory is made read-only (0555, files 0444), root's.
    """
    etc.mkdir(parents=True)
    shutil.copytree(packaged / "rules", etc / "rules")
    shutil.copytree(packaged / "templates", etc / "templates")
    text = (packaged / "config.example.yaml").read_text().replace("/etc/balancewatch", str(etc))
    edits = {
        '  host: ""\n': f"  host: {smtp.host}\n",
        "  port:\n": f"  port: {smtp.port}\n",
        "  security: starttls\n": "  security: none\n",
        '  from: "balancewatch <balancewatch@localhost>"\n': f'  from: "{SENDER}"\n',
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"config.example.yaml: expected one {old!r}"
        text = text.replace(old, new)
    config = etc / "config.yaml"
    config.write_text(text)
    for path in [etc, *etc.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return config


def unit_values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def assert_installed_unit(unit: str, venv: Path) -> None:
    """The wheel's unit names the installed script and the docs page installed with it."""
    assert shlex.split(unit_values(unit, "ExecStart")[0]) == [str(venv / "bin" / "balancewatch"), "run"]
    [doc] = unit_values(unit, "Documentation")
    assert Path(unquote(urlparse(doc).path)) == venv / "share" / "doc" / "balancewatch" / "systemd.md"
    assert (venv / "share" / "doc" / "balancewatch" / "systemd.md").is_file()
    if shutil.which("systemd-analyze"):
        path = venv.parent / "balancewatch.service"
        path.write_text(unit)
        run(["systemd-analyze", "verify", str(path)])


def state_directory(path: Path) -> Path:
    """What StateDirectory= and StateDirectoryMode=0750 make: the service user's own directory."""
    path.mkdir(parents=True)
    os.chown(path, SERVICE_IDS.pw_uid, SERVICE_IDS.pw_gid)
    path.chmod(0o750)
    return path


def unit_environment(unit: str, state: Path, notify_socket: str) -> dict[str, str]:
    """The environment systemd gives ExecStart=: the unit's Environment= and what its settings imply."""
    watchdog_usec = int(unit_values(unit, "WatchdogSec")[0].removesuffix("s")) * 1_000_000
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/",  # a dynamic user's home: not writable by it
        "LANG": "C.UTF-8",
        **dict(value.split("=", 1) for value in unit_values(unit, "Environment")),
        "STATE_DIRECTORY": str(state),
        "NOTIFY_SOCKET": notify_socket,
        "WATCHDOG_USEC": str(watchdog_usec),
    }


class NotifySocket:
    """systemd's side of sd_notify: an abstract datagram socket any user may send to."""

    def __init__(self) -> None:
        self.name = f"@balancewatch-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        """Block until a message holds ``line``; fail after ``timeout`` or once ``process`` has exited."""
        deadline = time.monotonic() + timeout
        while not any(line in m.splitlines() for m in self.messages):
            left = deadline - time.monotonic()
            assert left > 0, f"no {line} within {timeout}s; got {self.messages}"
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the daemon exited {process.returncode} before {line}")
            self.sock.settimeout(min(left, 0.5))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


def wait_for_subject(smtp: SmtpServer, prefix: str, timeout: float) -> Received:
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        received = smtp.wait_for(seen + 1, timeout=max(deadline - time.monotonic(), 0.001))
        for message in received[seen:]:
            if str(message.message["Subject"]).startswith(prefix):
                return message
        seen = len(received)


def test_the_readme_installs_with_the_steps_this_test_follows() -> None:
    install = shell_lines(readme_section("Install"))
    assert "python3 -m pip wheel --no-deps -w dist ." in install
    assert "python3 -m venv /opt/balancewatch" in install
    assert "cp config.example.yaml /etc/balancewatch/config.yaml" in install
    assert "cp -r rules templates /etc/balancewatch/" in install
    systemd = shell_lines(readme_section("Run under systemd"))
    assert (
        systemd[0]
        == "/opt/balancewatch/bin/balancewatch systemd-unit > /etc/systemd/system/balancewatch.service"
    )
    assert "bw check" in systemd
    assert "systemctl enable --now balancewatch" in systemd
    [alias] = [line for line in systemd if line.startswith("alias bw=")]
    assert "BALANCEWATCH_CONFIG=/etc/balancewatch/config.yaml /opt/balancewatch/bin/balancewatch" in alias
    alert = readme_section("See it alert")
    assert f'"{ALERT_SUBJECT}"' in " ".join(alert.split())
    assert all(line.startswith("bw ") for line in shell_lines(alert))


def test_installed_from_the_wheel_the_unit_runs_the_daemon_that_emails_a_low_balance(
    opt: Path, root: Path
) -> None:
    smtp = SmtpServer()
    smtp.start()
    notify = NotifySocket()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        etc = root / "etc" / "balancewatch"
        configure(etc, shipped(opt), smtp)
        unit = run([str(opt / "bin" / "balancewatch"), "systemd-unit", "--config", str(etc / "config.yaml")])
        assert_installed_unit(unit, opt)
        state = state_directory(root / "var" / "lib" / "balancewatch")
        env = unit_environment(unit, state, notify.name)
        as_service = [sys.executable, "-c", LAUNCHER, *SETPRIV]

        def bw(line: str) -> str:
            """A README ``bw ...`` line, run as the service runs commands (ExecReload= too)."""
            [reload_check, _] = unit_values(unit, "ExecReload")
            executable = shlex.split(reload_check)[0]
            command_env = {k: v for k, v in env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
            return run([*as_service, executable, *shlex.split(line)[1:]], cwd="/", env=command_env)

        assert bw("bw check").startswith(f"ok: config {etc / 'config.yaml'}; ")
        with (root / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                [*as_service, *shlex.split(unit_values(unit, "ExecStart")[0])],
                cwd="/",
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            notify.wait_for("READY=1", timeout=30, process=daemon)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its output:\n{(root / 'daemon.log').read_text()}") from None
        for line in shell_lines(readme_section("See it alert")):
            bw(line)
        mail = wait_for_subject(smtp, ALERT_SUBJECT, timeout=75)
        assert mail.rcpt_tos == ("you@example.com",)
        assert mail.message["From"] == SENDER

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_WITHIN) == 0, (root / "daemon.log").read_text()
        notify.wait_for("STOPPING=1", timeout=1)  # sent before it exited: already queued
        database = state / "balancewatch.db"
        assert (database.stat().st_uid, database.stat().st_mode & 0o077) == (SERVICE_IDS.pw_uid, 0)
        assert sorted(p.name for p in etc.iterdir()) == ["config.yaml", "rules", "templates"]
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
        notify.close()
        smtp.stop()
