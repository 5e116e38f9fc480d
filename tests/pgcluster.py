"""A private PostgreSQL cluster a test may stop and start: never the shared server.

``initdb`` runs as the ``postgres`` user (PostgreSQL refuses to run as root)
in a directory of its own under /tmp, on a free port, with trust
authentication on loopback. ``stop()`` is an immediate shutdown, as a crash
or a failover looks to clients; ``start()`` brings the same data back.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.smtpserver import free_port

START_TIMEOUT = 30.0


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"
        )
    return found[-1].parent


class PgCluster:
    """One cluster: ``url`` reaches its ``postgres`` database as the ``postgres`` user."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bw-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o755)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"])

    def _run(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"])
        deadline = time.monotonic() + START_TIMEOUT
        while self._run(["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)], check=False).returncode:
            if time.monotonic() > deadline:
                raise AssertionError(f"the private PostgreSQL did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def running(self) -> bool:
        return self._run(["pg_ctl", "-D", str(self.data), "status"], check=False).returncode == 0

    def start_if_stopped(self) -> None:
        if not self.running():
            self.start()

    def stop(self) -> None:
        """Stop the server at once: open connections break, as in a crash or a failover."""
        self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
