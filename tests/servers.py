"""
What the test fixtures' real servers (Keystone, Swift, PostgreSQL) share: a free loopback
port, and a virtualenv of their own for the ones that come from PyPI.

Keystone and Swift pin OpenStack's dependencies, which must not meet imaged's, so each gets
``.venv-<name>`` beside the project, built on first use from ``tests/<name>-requirements.txt``
and rebuilt when that file changes (``IMAGED_<NAME>_VENV`` puts it elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_venv(name: str) -> Path:
    """The virtualenv for server ``name`` (``keystone``, ``swift``), built if out of date."""
    requirements = HERE / f"{name}-requirements.txt"
    venv = Path(os.environ.get(f"IMAGED_{name.upper()}_VENV", REPO / f".venv-{name}"))
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / f".imaged-{name}"
    if stamp.exists() and stamp.read_text() == want:
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"installing {name} failed:\n" + pip.stderr[-5000:])
    stamp.write_text(want)
    return venv
