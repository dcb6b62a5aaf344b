"""Static checks as part of the suite: the type checker (with zope interfaces) and the linter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "mypy")), reason="mypy not installed")
def test_mypy() -> None:
    result = _run(os.path.join(BIN, "mypy"), "imaged", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "ruff")), reason="ruff not installed")
def test_ruff() -> None:
    result = _run(os.path.join(BIN, "ruff"), "check", "imaged", "tests", "twisted", "bench",
                  "examples")
    assert result.returncode == 0, result.stdout + result.stderr
