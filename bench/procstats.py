"""
What the bench scripts share: sizes and rates, random input files, and a process's memory and
CPU from /proc (imaged's, the OSD's), so each script measures the same way.
"""

from __future__ import annotations

import hashlib
import os
import statistics

GiB = 1024**3
MiB = 1024 * 1024
CHUNK = 16 * MiB


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def median(values: list[float]) -> float:
    return statistics.median(values)


def make_file(path: str, size: int) -> str:
    """``size`` bytes of random data at ``path``; their sha512."""
    digest = hashlib.sha512()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def rss_kib(pid: int) -> int:
    """A process's resident memory now, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far, all its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
