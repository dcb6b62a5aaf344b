#!/usr/bin/env python3
"""
Hostile-input benchmark: what one attacker costs everyone else, against ``twistd imaged``.

Three attacks, each while a steady client shows one image in a loop (its latencies are the
figures that matter), and the daemon's RSS before and after:

- a 256 MiB JSON body to ``POST /v2/images``, sent as fast as loopback takes it;
- a 64 MiB extra-property value in a ``PATCH`` (refused; the image unchanged);
- a SQLite database locked from outside for ``--lock-seconds`` (default 40) by another
  process's ``BEGIN EXCLUSIVE``: show and ``/healthcheck`` latencies and the create answers.

Not a test: numbers depend on the machine.  Run it by hand:

    .venv/bin/python bench/hostile.py [--lock-seconds 40]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from imaged.testing import TwistdDaemon

HEADERS = {"X-Project-Id": "bench", "X-User-Id": "bench", "X-Roles": "member,reader"}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request(method, path, body=body, headers={**HEADERS, **(headers or {})})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


class Watcher(threading.Thread):
    """Shows an image over and over, recording each latency and status."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                code, _ = request(self.port, "GET", self.path)
            except OSError:
                code = -1
            self.samples.append((time.monotonic() - began, code))

    def report(self, label: str) -> None:
        latencies = sorted(s[0] * 1000 for s in self.samples)
        codes: dict[int, int] = {}
        for _, code in self.samples:
            codes[code] = codes.get(code, 0) + 1
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 1 else latencies[0]
        print(f"| {label} | {len(latencies)} | {p50:.1f} | {p99:.1f} | {max(latencies):.1f} "
              f"| {codes} |")


def watch(port: int, path: str, attack: Any, label: str) -> Any:
    watcher = Watcher(port, path)
    watcher.start()
    time.sleep(0.5)  # a baseline before the attack
    try:
        outcome = attack()
    finally:
        time.sleep(0.5)
        watcher.stop.set()
        watcher.join()
    watcher.report(label)
    return outcome


def big_json(port: int, size: int) -> tuple[int, float, int]:
    """Send ``size`` bytes of JSON as fast as the server reads them; the answer and when."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /v2/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    began = time.monotonic()
    sock.sendall(head + b'{"name": "')
    sock.setblocking(False)
    chunk = b"x" * (1 << 20)
    sent, answer = 0, b""
    while sent < size and b"\r\n\r\n" not in answer:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            pass
        except OSError:
            break
        try:
            answer += sock.recv(65536)
        except (BlockingIOError, OSError):
            pass
    sock.setblocking(True)
    sock.settimeout(30)
    while b"\r\n\r\n" not in answer:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    elapsed = time.monotonic() - began
    sock.close()
    code = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else -1
    return code, elapsed, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock-seconds", type=float, default=40.0)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="imaged-hostile-")
    daemon = TwistdDaemon(workdir, args=["--data-dir", workdir]).start()
    assert daemon.process is not None
    pid, port = daemon.process.pid, int(daemon.url.rsplit(":", 1)[1])
    try:
        code, body = request(port, "POST", "/v2/images", json.dumps({"name": "w"}).encode(),
                             {"Content-Type": "application/json"})
        image = json.loads(body)["id"]
        path = f"/v2/images/{image}"
        print(f"imaged pid {pid}, RSS at start {rss_mib(pid):.0f} MiB\n")
        print("| while | shows | p50 ms | p99 ms | max ms | statuses |")
        print("|---|---:|---:|---:|---:|---|")
        watch(port, path, lambda: None, "nothing (baseline)")
        rss = rss_mib(pid)
        code, elapsed, sent = watch(port, path, lambda: big_json(port, 256 << 20),
                                    "a 256 MiB JSON body")
        big = (code, elapsed, sent, rss_mib(pid) - rss)
        value = "v" * (64 << 20)
        patch = json.dumps([{"op": "add", "path": "/note", "value": value}]).encode()
        patched = watch(port, path, lambda: request(
            port, "PATCH", path, patch,
            {"Content-Type": "application/openstack-images-v2.1-json-patch"})[0],
            "a 64 MiB property value")
        unchanged = "note" not in json.loads(request(port, "GET", path)[1])
        locker = sqlite3.connect(os.path.join(workdir, "imaged.sqlite"), isolation_level=None)

        def locked() -> list[tuple[str, int, float]]:
            locker.execute("BEGIN EXCLUSIVE")
            answers = []
            try:
                deadline = time.monotonic() + args.lock_seconds
                while time.monotonic() < deadline:
                    for method, target, body in (("GET", "/healthcheck", None),
                                                 ("POST", "/v2/images", b'{"name": "l"}')):
                        began = time.monotonic()
                        status, _ = request(port, method, target, body,
                                            {"Content-Type": "application/json"})
                        answers.append((f"{method} {target}", status, time.monotonic() - began))
                    time.sleep(1)
            finally:
                locker.execute("ROLLBACK")
            return answers

        answers = watch(port, path, locked, f"SQLite locked from outside {args.lock_seconds:.0f} s")
        print()
        print(f"256 MiB JSON body: {big[0]} after {big[1] * 1000:.0f} ms, {big[2] >> 20} MiB "
              f"sent by then; RSS {big[3]:+.0f} MiB")
        print(f"64 MiB property value: {patched}; image unchanged: {unchanged}")
        for what in ("GET /healthcheck", "POST /v2/images"):
            mine = [(s, t) for w, s, t in answers if w == what]
            statuses = sorted({s for s, _ in mine})
            worst = max(t for _, t in mine)
            print(f"while locked, {what}: statuses {statuses}, slowest {worst * 1000:.0f} ms "
                  f"({len(mine)} requests)")
        print(f"RSS at the end {rss_mib(pid):.0f} MiB")
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
