#!/usr/bin/env python3
"""
Import benchmark: glance-direct and web-download vs a plain upload, through twistd imaged.

Per run, on one file of random data (default 1 GiB) and one imaged (SQLite + files, loopback):

- upload: ``PUT /v2/images/{id}/file`` with ``curl -T``, request start to 204;
- glance-direct: ``PUT /stage`` with ``curl -T`` (stage), then ``POST /import`` until
  ``GET /v2/images/{id}`` says ``active`` (import, polled every 20 ms); total = stage + import;
- web-download: ``POST /import`` naming the file on a ``python -m http.server`` of its own
  process, until ``active``; one ``GET /v2/images/{id}/tasks`` mid-way shows its progress;
- source alone: ``curl -o /dev/null`` from that server, the ceiling web-download can reach;
- imaged's RSS before, after and (sampled every 50 ms) at its peak during each phase.

Each image's size and sha512 are checked against the file.  "ratio to upload" is a phase's
MB/s over the plain upload's MB/s of the same run (1.0: as fast as an upload; the goals are
>= 0.9 for web-download and for glance-direct's stage + import); web-download over source
alone says how close imaged gets to what its source can give.  Medians of --repeat runs.
Not a test:

    .venv/bin/python bench/imports.py [--size-mib N] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.procstats import GiB, MiB, cpu_seconds, make_file, mbps, median, rss_kib
from imaged.imports import PROGRESS_INTERVAL
from imaged.testing import TwistdDaemon

POLL = 0.02  # seconds between GET /v2/images/{id} while waiting for active
SAMPLE = 0.05  # seconds between RSS samples
GOAL_RATIO = 0.9
GOAL_RSS_MIB = 64.0


# -- imaged's resident memory ------------------------------------------------------------------


@dataclass
class Memory:
    """imaged's RSS around one phase, KiB, and the CPU seconds it spent in it."""

    before: int = 0
    after: int = 0
    peak: int = 0
    cpu: float = 0.0

    @property
    def growth_mib(self) -> float:
        return (self.after - self.before) / 1024

    @property
    def peak_growth_mib(self) -> float:
        return (self.peak - self.before) / 1024


@contextmanager
def sampled(pid: int) -> Iterator[Memory]:
    """RSS before and after the block, and its peak sampled every 50 ms in a thread."""
    memory = Memory(before=rss_kib(pid))
    memory.peak = memory.before
    cpu_before = cpu_seconds(pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE):
            memory.peak = max(memory.peak, rss_kib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield memory
    finally:
        stop.set()
        sampler.join()
        memory.after = rss_kib(pid)
        memory.peak = max(memory.peak, memory.after)
        memory.cpu = cpu_seconds(pid) - cpu_before


# -- clients ----------------------------------------------------------------------------------


class Api:
    """JSON requests to imaged on one kept-alive connection (cheap enough to poll with)."""

    def __init__(self, url: str) -> None:
        match = re.fullmatch(r"http://([^:/]+):(\d+)", url)
        assert match, url
        self.host, self.port = match.group(1), int(match.group(2))
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None,
                expect: int = 200) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                text = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server closed a kept-alive connection between requests: once more.
                self.close()
                if attempt == 2:
                    raise
        if response.status != expect:
            raise RuntimeError(f"{method} {path}: {response.status} (wanted {expect}): "
                               f"{text[:500]!r}")
        document: dict[str, Any] = json.loads(text) if text else {}
        return document

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def curl(*args: str) -> str:
    """curl's ``%{http_code}`` for one transfer (curl streams the file: no GIL shared)."""
    result = subprocess.run(["curl", "-s", "-S", "-o", "/dev/null", "-w", "%{http_code}", *args],
                            check=True, capture_output=True, text=True)
    return result.stdout


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(start, seconds) of one call."""
    start = time.perf_counter()
    fn()
    return start, time.perf_counter() - start


class SourceServer:
    """``python -m http.server`` on 127.0.0.1 (its own process) serving ``directory``."""

    def __init__(self, directory: str, log_path: str) -> None:
        self.directory = directory
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30) -> SourceServer:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                 "--directory", self.directory, "0"],
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self.process.stdout is not None
        # It prints its port once listening (port 0: the kernel chose one).
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        match = re.search(r"port (\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"http.server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{match.group(1)}"
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """One ``GET /v2/images/{id}/tasks`` during a web-download."""

    at: float
    task_status: str
    done: int | None
    total: int | None
    after_active: bool = False


@dataclass
class Run:
    seconds: dict[str, float] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    progress: Progress | None = None


class Bench:
    def __init__(self, daemon: TwistdDaemon, source: SourceServer, path: str,
                 digest: str) -> None:
        self.daemon = daemon
        self.api = Api(daemon.url)
        self.source = source
        self.path = path
        self.size = os.path.getsize(path)
        self.digest = digest
        self.deadline = max(120.0, self.size / 20e6)  # 20 MB/s would be a failure anyway

    @property
    def source_uri(self) -> str:
        return f"{self.source.url}/{os.path.basename(self.path)}"

    @property
    def pid(self) -> int:
        assert self.daemon.process is not None
        return self.daemon.process.pid

    def create(self) -> str:
        image = self.api.request("POST", "/v2/images",
                                 {"disk_format": "raw", "container_format": "bare"}, 201)
        return str(image["id"])

    def verify(self, image_id: str, phase: str) -> None:
        shown = self.api.request("GET", f"/v2/images/{image_id}")
        problems = [
            f"{key} is {shown.get(key)!r}, not {wanted!r}"
            for key, wanted in (("status", "active"), ("size", self.size),
                                ("os_hash_algo", "sha512"), ("os_hash_value", self.digest))
            if shown.get(key) != wanted
        ]
        if problems:
            raise RuntimeError(f"{phase}: image {image_id}: " + "; ".join(problems))

    def delete(self, image_id: str) -> None:
        self.api.request("DELETE", f"/v2/images/{image_id}", expect=204)

    def put(self, image_id: str, target: str) -> None:
        code = curl("-T", self.path, "-H", "Content-Type: application/octet-stream",
                    f"{self.daemon.url}/v2/images/{image_id}/{target}")
        if code != "204":
            raise RuntimeError(f"PUT /{target}: {code}\n{self.daemon.log()[-3000:]}")

    def until_active(self, image_id: str, started: float,
                     on_poll: Callable[[float], None] | None = None) -> float:
        """Polls every 20 ms; the moment ``active`` was seen."""
        deadline = started + self.deadline
        while True:
            status = self.api.request("GET", f"/v2/images/{image_id}")["status"]
            now = time.perf_counter()
            if status == "active":
                return now
            if status == "queued":  # an import that failed goes back to queued
                tasks = self.api.request("GET", f"/v2/images/{image_id}/tasks")["tasks"]
                messages = [t.get("message") for t in tasks]
                raise RuntimeError(f"import of {image_id} failed: {messages}")
            if now > deadline:
                raise RuntimeError(f"image {image_id} still {status} after {self.deadline} s")
            if on_poll is not None:
                on_poll(now - started)
            time.sleep(POLL)

    def run(self) -> Run:
        run = Run()

        image_id = self.create()
        with sampled(self.pid) as memory:
            _, seconds = timed(lambda: self.put(image_id, "file"))
        run.seconds["upload"], run.memory["upload"] = seconds, memory
        self.verify(image_id, "upload")
        self.delete(image_id)

        image_id = self.create()
        with sampled(self.pid) as total:
            with sampled(self.pid) as memory:
                started, seconds = timed(lambda: self.put(image_id, "stage"))
            run.seconds["stage"], run.memory["stage"] = seconds, memory
            with sampled(self.pid) as memory:
                posted = time.perf_counter()
                self.api.request("POST", f"/v2/images/{image_id}/import",
                                 {"method": {"name": "glance-direct"}}, 202)
                active = self.until_active(image_id, posted)
            run.seconds["import"], run.memory["import"] = active - posted, memory
        run.seconds["glance-direct"], run.memory["glance-direct"] = active - started, total
        self.verify(image_id, "glance-direct")
        self.delete(image_id)

        image_id = self.create()
        # Mid-way at this run's upload pace, but not before imaged first records progress.
        sample_at = max(run.seconds["upload"] / 2, PROGRESS_INTERVAL + 0.25)

        def look(elapsed: float) -> None:
            if run.progress is None and elapsed >= sample_at:
                run.progress = self.progress(image_id, elapsed)

        uri = self.source_uri
        with sampled(self.pid) as memory:
            posted = time.perf_counter()
            self.api.request("POST", f"/v2/images/{image_id}/import",
                             {"method": {"name": "web-download", "uri": uri}}, 202)
            active = self.until_active(image_id, posted, look)
        run.seconds["web-download"], run.memory["web-download"] = active - posted, memory
        if run.progress is None:  # it was over sooner: what the task says afterwards
            run.progress = self.progress(image_id, time.perf_counter() - posted)
            run.progress.after_active = True
        self.verify(image_id, "web-download")
        self.delete(image_id)

        _, seconds = timed(lambda: self.check_source())
        run.seconds["source alone"] = seconds
        return run

    def progress(self, image_id: str, elapsed: float) -> Progress:
        tasks = self.api.request("GET", f"/v2/images/{image_id}/tasks")["tasks"]
        if not tasks:
            return Progress(elapsed, "(no task)", None, None)
        task = tasks[0]
        seen = task.get("os_imaged_progress") or {}
        return Progress(elapsed, str(task["status"]), seen.get("done"), seen.get("total"))

    def check_source(self) -> None:
        code = curl(self.source_uri)
        if code != "200":
            raise RuntimeError(f"source server: {code}")


# -- report -----------------------------------------------------------------------------------


ROWS = (
    ("upload (PUT /file)", "upload"),
    ("glance-direct (total)", "glance-direct"),
    ("  stage", "stage"),
    ("  import", "import"),
    ("web-download", "web-download"),
    ("source alone (curl)", "source alone"),
)


def report(runs: list[Run], size: int, rss_start: int, rss_end: int) -> None:
    def speed(run: Run, key: str) -> float:
        return mbps(size, run.seconds[key])

    print()
    print(f"{len(runs)} run(s) of {size // MiB} MiB; medians; RSS growth is after - before "
          f"each phase (peak sampled every {SAMPLE * 1000:.0f} ms - before), MiB")
    print()
    print(f"{'':24} {'MB/s':>8} {'seconds':>9} {'ratio to upload':>17} "
          f"{'RSS growth (peak) MiB':>23} {'imaged CPU s/GiB':>17}")
    for label, key in ROWS:
        rate = median([speed(r, key) for r in runs])
        seconds = median([r.seconds[key] for r in runs])
        ratio = median([speed(r, key) / speed(r, "upload") for r in runs])
        if key in runs[0].memory:
            growth = median([r.memory[key].growth_mib for r in runs])
            peak = median([r.memory[key].peak_growth_mib for r in runs])
            memory = f"{growth:+.1f} ({peak:+.1f})"
            cpu = f"{median([r.memory[key].cpu for r in runs]) * GiB / size:.2f}"
        else:
            memory = cpu = "-"
        print(f"{label:24} {rate:8.0f} {seconds:9.3f} {ratio:17.2f} {memory:>23} {cpu:>17}")
    print()
    vs_source = median([speed(r, "web-download") / speed(r, "source alone") for r in runs])
    print(f"web-download / source alone: {vs_source:.2f}")
    print(f"imaged RSS: {rss_start / 1024:.1f} MiB at start, {rss_end / 1024:.1f} MiB at end")
    for n, run in enumerate(runs, 1):
        p = run.progress
        assert p is not None
        total = "null" if p.total is None else f"{p.total / MiB:.1f} MiB"
        done = "null" if p.done is None else f"{p.done / MiB:.1f} MiB"
        print(f"web-download progress, run {n}: at {p.at:.2f} s of "
              f"{run.seconds['web-download']:.2f} s, task {p.task_status}, "
              f"os_imaged_progress done {done} of {total}"
              + (" (sampled once active: it finished before the first progress write"
                 f" at {PROGRESS_INTERVAL:g} s or before mid-way)" if p.after_active else ""))
    print()

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    web = median([speed(r, "web-download") / speed(r, "upload") for r in runs])
    direct = median([speed(r, "glance-direct") / speed(r, "upload") for r in runs])
    worst = max(m.peak_growth_mib for r in runs for m in r.memory.values())
    print("goals (information, not an exit code):")
    print(f"  web-download >= {GOAL_RATIO} x upload:          {web:.2f}   "
          f"{verdict(web >= GOAL_RATIO)}")
    print(f"  stage + import >= {GOAL_RATIO} x upload:        {direct:.2f}   "
          f"{verdict(direct >= GOAL_RATIO)}")
    print(f"  RSS growth <= {GOAL_RSS_MIB:.0f} MiB (worst peak): {worst:+.1f}  "
          f"{verdict(worst <= GOAL_RSS_MIB)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size, MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1")
    # SIGTERM unwinds like ^C does, through the cleanup below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    # One directory, one filesystem: the source file, imaged's data and the logs.
    work = tempfile.mkdtemp(prefix="imaged-bench-imports-", dir=os.environ.get("BENCH_DIR"))
    source_dir, data = os.path.join(work, "source"), os.path.join(work, "data")
    os.mkdir(source_dir)
    path = os.path.join(source_dir, "image.raw")
    daemon: TwistdDaemon | None = None
    source: SourceServer | None = None
    bench: Bench | None = None
    try:
        print(f"writing {args.size_mib} MiB of random data to {path} ...", file=sys.stderr)
        digest = make_file(path, args.size_mib * MiB)
        # Named before they start, so the cleanup below stops them even mid-start.
        daemon = TwistdDaemon(work, args=[
            "--data-dir", data, "--hash-algo", "sha512",
            "--import-allowed-networks", "127.0.0.0/8", "--import-allowed-ports", "",
        ])
        daemon.start()
        source = SourceServer(source_dir, os.path.join(work, "http.server.log"))
        source.start()
        assert daemon.process is not None
        rss_start = rss_kib(daemon.process.pid)
        bench = Bench(daemon, source, path, digest)
        runs: list[Run] = []
        for n in range(args.repeat):
            run = bench.run()
            runs.append(run)
            print(f"run {n + 1}: " + ", ".join(
                f"{key} {mbps(bench.size, s):.0f} MB/s" for key, s in run.seconds.items()),
                file=sys.stderr)
        rss_end = rss_kib(daemon.process.pid)
        report(runs, args.size_mib * MiB, rss_start, rss_end)
    finally:
        if bench is not None:
            bench.api.close()
        if source is not None:
            source.stop()
        if daemon is not None:
            daemon.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
