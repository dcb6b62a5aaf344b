#!/usr/bin/env python3
"""
Soak: the fuzzer's grammar (tests/fuzzing.py) replayed against ``twistd imaged`` over real
sockets, sampling the daemon's RSS, counting statuses and looking for tracebacks in its log.

The question it answers is the one the in-process fuzzer cannot: does a long-running daemon
stay flat in memory under a stream of hostile requests?  Not a test; run it by hand:

    .venv/bin/python bench/soak.py [--count 20000] [--database postgresql://...]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import socket
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypothesis.errors import NonInteractiveExampleWarning

from imaged.testing import TwistdDaemon
from tests.fuzzing import requests, seed_requests


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def exchange(port: int, raw: bytes) -> int:
    """Send one request's bytes; the final status answered, or -1 when the server closed
    (or went quiet) before answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass
        answer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
                while answer.startswith(b"HTTP/1.1 100") and b"\r\n\r\n" in answer:
                    answer = answer.split(b"\r\n\r\n", 1)[1]  # an interim answer
                if b"\r\n" in answer and not answer.startswith(b"HTTP/1.1 100"):
                    break
        except OSError:
            pass
    parts = answer.split(b" ", 2)
    return int(parts[1]) if answer.startswith(b"HTTP/") and len(parts) > 1 else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--database", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    workdir = tempfile.mkdtemp(prefix="imaged-soak-")
    extra = ["--database", args.database] if args.database else []
    daemon = TwistdDaemon(workdir, args=["--data-dir", workdir, *extra]).start()
    assert daemon.process is not None
    pid, port = daemon.process.pid, int(daemon.url.rsplit(":", 1)[1])
    codes: collections.Counter[int] = collections.Counter()
    try:
        for request in seed_requests():
            exchange(port, request.encode())
        print("| requests | RSS MiB | 5xx so far |\n|---:|---:|---:|")
        print(f"| 0 | {rss_mib(pid):.0f} | 0 |")
        began = time.monotonic()
        for n in range(1, args.count + 1):
            request = requests.example()
            while request.promises_more():  # a server rightly waits for the rest: skip
                request = requests.example()
            # A run's "images it created" are the seed's here (the daemon keeps one world).
            raw = re.sub(rb"@@new(\d+)@@", lambda m: b"5eed0000-0000-4000-8000-%012d"
                         % (int(m.group(1)) % 10 + 1), request.encode())
            codes[exchange(port, raw)] += 1
            if n % max(1, args.count // 10) == 0:
                errors = sum(c for code, c in codes.items() if code >= 500)
                print(f"| {n} | {rss_mib(pid):.0f} | {errors} |", flush=True)
        elapsed = time.monotonic() - began
        log = daemon.log()
        print(f"\n{args.count} requests in {elapsed:.0f} s; statuses {dict(sorted(codes.items()))}")
        errors = [line for line in log.splitlines() if "#error]" in line or "#critical]" in line]
        print(f"tracebacks in the daemon's log: {log.count('Traceback')}; "
              f"error lines: {len(errors)}")
        for line in errors[:10]:
            print("   ", line[:300])
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
