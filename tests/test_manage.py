"""
``imaged-manage db upgrade|current`` and the daemon's refusal of an out-of-date server schema,
run as operators run them (the installed console script, ``twistd imaged``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from imaged.testing import TWISTD, TwistdDaemon

MANAGE = os.path.join(os.path.dirname(sys.executable), "imaged-manage")


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MANAGE, *args], capture_output=True, text=True, timeout=120)


def test_db_upgrade_and_current_on_postgresql(postgres: Any, tmp_path: Path) -> None:
    url = postgres.database("manage_" + uuid.uuid4().hex[:8])
    before = manage("--database", url, "db", "current")
    assert before.returncode == 1 and "revision none (needs upgrade to" in before.stdout

    # The daemon will not start on it, and says what to do.
    refused = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "imaged", "--listen", "tcp:0:interface=127.0.0.1",
         "--database", url, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode != 0
    assert "imaged-manage --database <url> db upgrade" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr

    upgraded = manage("--database", url, "db", "upgrade")
    assert upgraded.returncode == 0 and "upgraded from an empty database to" in upgraded.stdout
    again = manage("--database", url, "db", "upgrade")
    assert again.returncode == 0 and "already at revision" in again.stdout
    assert manage("--database", url, "db", "current").returncode == 0

    daemon = TwistdDaemon(str(tmp_path), args=["--database", url, "--data-dir",
                                               str(tmp_path)]).start()
    try:
        assert "postgresql+psycopg://postgres@127.0.0.1" in daemon.log()
    finally:
        daemon.stop()


def test_db_commands_on_an_embedded_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert manage("--data-dir", str(data), "db", "current").returncode == 1
    assert manage("--data-dir", str(data), "db", "upgrade").returncode == 0
    assert (data / "imaged.sqlite").exists()
    assert manage("--data-dir", str(data), "db", "current").returncode == 0


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    result = manage("--database", url, "db", "upgrade")
    assert result.returncode == 2
    assert result.stderr.startswith("imaged-manage: postgresql+psycopg://nobody:***@")
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    refused = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "imaged", "--database", url, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert "imaged: cannot use the database" in out and "secret" not in out
