"""
A throwaway PostgreSQL cluster on 127.0.0.1 for the tests.

Debian's server binaries (``postgresql`` package, installed by ``./dev test``) run
``initdb`` into a temporary directory and ``pg_ctl`` start it on a free port, with its
socket in the same directory; as root, through ``runuser -u postgres`` because PostgreSQL
refuses to run as root.  Durability is off (test data only) and authentication is ``trust``
on loopback.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .servers import free_port


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries are missing: apt-get install postgresql "
            "(./dev test does)"
        )
    return Path(found[-1]).parent


class PostgreSQL:
    """One cluster; ``database(name)`` makes a database and returns its SQLAlchemy URL."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="imaged-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.getuid() == 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=True, cwd=self.root
        )

    def start(self) -> PostgreSQL:
        if self.as_root:
            shutil.chown(self.root, "postgres")
        os.chmod(self.root, 0o700)
        self._run(
            str(self.bindir / "initdb"), "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
            "--auth=trust", "-U", "postgres", "-D", str(self.data),
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, "-w", "-t", "60", "start",
        )
        return self

    def database(self, name: str) -> str:
        self._run(
            str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", name,
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, as a failover or an upgrade
        does, and the server comes back on the same port."""
        # -l: the server's output goes to its log, not to the pipe ``_run`` waits on.
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "log"), "-m", "fast", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        if not self.root.exists():
            return  # stopped already
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass
        for _ in range(50):
            if not (self.data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
