"""The rotating log file twistd can be pointed at: bounded in size and in number of files."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import Logger

from imaged.logfiles import rotating


def test_rotates_at_its_size_and_keeps_only_so_many(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGED_LOG_FILE", str(tmp_path / "imaged.log"))
    monkeypatch.setenv("IMAGED_LOG_ROTATE_BYTES", "2000")
    monkeypatch.setenv("IMAGED_LOG_KEEP", "3")
    observer = rotating()
    log = Logger(namespace="imaged.test", observer=observer)
    for n in range(500):
        log.info("refused request {n} with a reason long enough to fill the file", n=n)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["imaged.log", "imaged.log.1", "imaged.log.2", "imaged.log.3"]
    assert all((tmp_path / name).stat().st_size <= 2200 for name in files)
    assert "refused request 499" in (tmp_path / "imaged.log").read_text()


def test_refuses_nonsense_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGED_LOG_FILE", str(tmp_path / "imaged.log"))
    monkeypatch.setenv("IMAGED_LOG_ROTATE_BYTES", "0")
    with pytest.raises(ValueError):
        rotating()
