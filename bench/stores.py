#!/usr/bin/env python3
"""
Multi-store benchmark: imaged's RBD store through ``twistd imaged`` beside ``rbd import`` and
``rbd export`` of the same file, and ``copy-image`` from a file store into RBD beside a plain
upload to the file store (issue 15).

A one-node BlueStore Ceph is started on 127.0.0.1 (``tests/ceph_server.py``) and one ``twistd
imaged`` (SQLite, ``--auth none``) with two stores from its configuration file:
``[stores.files]`` (type file, the default) and ``[stores.ceph]`` (type rbd, that cluster's
pool, user and conf, ``chunk-size = 8``).  Per run, on one file of random data (default 1 GiB):

- rbd import: ``rbd import`` of the file into the pool (format 2, layering, 8 MiB objects,
  imaged's layout), then rbd export: ``rbd export IMAGE -`` to /dev/null; the image is
  removed.  These are the ceiling the store can reach (the same librbd, no HTTP, no hashing);
- upload to ceph: ``PUT /v2/images/{id}/file`` with ``curl -T`` and ``X-Image-Meta-Store:
  ceph``, request start to 204;
- download from ceph: ``curl -o /dev/null`` of ``GET /v2/images/{id}/file`` of that image
  (its only copy is in RBD);
- upload to files: the same ``PUT`` without the header (the default store), the baseline of
  the copy below;
- copy-image files -> ceph: ``POST /v2/images/{id}/import`` with ``copy-image`` and
  ``"stores": ["ceph"]`` on that file-store image, until ``GET /v2/images/{id}`` shows
  ``stores`` ``files,ceph`` (polled every 20 ms) or the copy failed.

Each image's size and sha512 (``os_hash_value``) are checked against the file's, images are
deleted after each run and the pool is checked empty.  imaged's RSS is read from /proc before
the first run, after the last, and sampled every 50 ms during each phase; the CPU seconds per
GiB of imaged, of the OSD and of the client (``rbd`` or ``curl``) are counted per phase, and
imaged's by thread (the reactor, Python's threads, librbd/librados threads by name).  Ratios
are per run, then the median of --repeat runs: upload to ceph / rbd import and download from
ceph / rbd export (goal >= 0.8 each), copy-image / upload to files (a note: a copy reads one
store and writes another).  Everything runs on this machine's cores: client, imaged and OSD
compete for them.  Not a test:

    .venv/bin/python bench/stores.py [--size-mib N] [--repeat 2] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The project instead of this script's folder, where ``import rbd`` (as tests/ceph_server.py
# does) would find bench/rbd.py.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstats import CHUNK, GiB, MiB, cpu_seconds, make_file, mbps, median, rss_kib
from imaged.testing import TwistdDaemon
from tests.ceph_server import Ceph, CephCluster

POLL = 0.02  # seconds between GET /v2/images/{id} while a copy runs
SAMPLE = 0.05  # seconds between RSS samples
GOAL_RATIO = 0.8
GOAL_RSS_MIB = 64.0
TICKS = os.sysconf("SC_CLK_TCK")


def digest_of(path: str, algorithm: str) -> tuple[str, float]:
    """The file's digest and the CPU seconds this process spent on it (one thread)."""
    digest = hashlib.new(algorithm)
    started = time.process_time()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest(), time.process_time() - started


# -- processes' memory and CPU ----------------------------------------------------------------


def _stat(path: str) -> tuple[str, float]:
    """(comm, user + system CPU seconds) of a /proc/.../stat file."""
    with open(path) as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return comm, (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each live thread's (comm, CPU seconds so far)."""
    threads: dict[int, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            threads[int(tid)] = _stat(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            pass  # it ended meanwhile
    return threads


def thread_group(pid: int, tid: int, comm: str, main_comm: str) -> str:
    """Threads named alike counted together: ``msgr-worker-0`` and ``-1`` are ``msgr-worker``;
    Python's threads keep the process's name (this Python does not name them)."""
    if tid == pid:
        return "main (reactor)"
    if comm == main_comm:
        return "python threads"
    return re.sub(r"[-_:]?\d+$", "", comm) or comm


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far (curl, rbd)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Usage:
    """One phase: imaged's RSS (KiB) around it and its peak, and the CPU seconds spent in it."""

    before: int = 0
    after: int = 0
    peak: int = 0
    imaged_cpu: float = 0.0
    osd_cpu: float = 0.0
    client_cpu: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)

    def peak_growth_mib(self, since: int | None = None) -> float:
        return (self.peak - (self.before if since is None else since)) / 1024


@contextmanager
def sampled(pid: int, osd_pid: int) -> Iterator[Usage]:
    """imaged's RSS before and after the block and its peak sampled every 50 ms in a thread;
    the CPU of imaged (by thread), of the OSD and of this process's children meanwhile."""
    usage = Usage(before=rss_kib(pid))
    usage.peak = usage.before
    imaged_before, osd_before, children_before = (
        cpu_seconds(pid), cpu_seconds(osd_pid), children_cpu())
    threads_before = thread_cpu(pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE):
            usage.peak = max(usage.peak, rss_kib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        usage.after = rss_kib(pid)
        usage.peak = max(usage.peak, usage.after)
        usage.imaged_cpu = cpu_seconds(pid) - imaged_before
        usage.osd_cpu = cpu_seconds(osd_pid) - osd_before
        usage.client_cpu = children_cpu() - children_before
        main_comm = _stat(f"/proc/{pid}/stat")[0]
        counted = 0.0
        for tid, (comm, seconds) in thread_cpu(pid).items():
            spent = seconds - threads_before.get(tid, (comm, 0.0))[1]
            if spent > 0:
                group = thread_group(pid, tid, comm, main_comm)
                usage.threads[group] = usage.threads.get(group, 0.0) + spent
                counted += spent
        if usage.imaged_cpu - counted > 0.005:
            usage.threads["(threads that ended)"] = usage.imaged_cpu - counted


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


def curl(max_time: float, *args: str) -> tuple[str, int]:
    """curl's ``%{http_code}`` and ``%{size_download}`` for one transfer (curl streams the
    file in its own process: no GIL shared with the sampler)."""
    result = subprocess.run(
        ["curl", "-s", "-S", "-o", "/dev/null", "--max-time", f"{max_time:.0f}",
         "-w", "%{http_code} %{size_download}", *args],
        check=True, capture_output=True, text=True,
    )
    code, size = result.stdout.split()
    return code, int(size)


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- one run ----------------------------------------------------------------------------------


RBD_IMPORT = "rbd import"
RBD_EXPORT = "rbd export"
UP_CEPH = "upload to ceph"
DOWN_CEPH = "download from ceph"
UP_FILES = "upload to files"
COPY = "copy-image files->ceph"


@dataclass
class Run:
    seconds: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


class CopyFailed(Exception):
    pass


class Bench:
    def __init__(self, daemon: TwistdDaemon, cluster: CephCluster, osd_pid: int, path: str,
                 digest: str) -> None:
        self.daemon = daemon
        self.cluster = cluster
        self.osd_pid = osd_pid
        self.api = Api(daemon.url)
        self.path = path
        self.size = os.path.getsize(path)
        self.digest = digest
        self.deadline = max(300.0, self.size / 10e6)  # 10 MB/s would be a failure anyway

    @property
    def pid(self) -> int:
        assert self.daemon.process is not None
        return self.daemon.process.pid

    def sampled(self) -> AbstractContextManager[Usage]:
        return sampled(self.pid, self.osd_pid)

    # -- rbd alone

    def rbd(self, *args: str, quiet: bool = True) -> None:
        subprocess.run(["rbd", "-c", self.cluster.conf, "--id", self.cluster.user,
                        "--no-progress", *args],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE if quiet else None, timeout=self.deadline)

    def direct(self, run: Run) -> None:
        image = f"{self.cluster.pool}/bench-direct"
        with self.sampled() as usage:
            run.seconds[RBD_IMPORT] = timed(lambda: self.rbd(
                "import", "--image-format", "2", "--image-feature", "layering",
                "--object-size", "8M", self.path, image))
        run.usage[RBD_IMPORT] = usage
        with self.sampled() as usage:
            run.seconds[RBD_EXPORT] = timed(lambda: self.rbd("export", image, "-"))
        run.usage[RBD_EXPORT] = usage
        self.rbd("rm", image)

    # -- through imaged

    def create(self) -> str:
        image = self.api.request("POST", "/v2/images",
                                 {"disk_format": "raw", "container_format": "bare"}, 201)
        return str(image["id"])

    def show(self, image_id: str) -> dict[str, Any]:
        return self.api.request("GET", f"/v2/images/{image_id}")

    def verify(self, image_id: str, phase: str, stores: str) -> None:
        shown = self.show(image_id)
        problems = [
            f"{key} is {shown.get(key)!r}, not {wanted!r}"
            for key, wanted in (("status", "active"), ("size", self.size),
                                ("os_hash_algo", "sha512"), ("os_hash_value", self.digest),
                                ("stores", stores))
            if shown.get(key) != wanted
        ]
        if problems:
            raise RuntimeError(f"{phase}: image {image_id}: " + "; ".join(problems))

    def delete(self, image_id: str) -> None:
        self.api.request("DELETE", f"/v2/images/{image_id}", expect=204)

    def put(self, image_id: str, store: str | None) -> None:
        headers = ["-H", "Content-Type: application/octet-stream"]
        if store is not None:
            headers += ["-H", f"X-Image-Meta-Store: {store}"]
        code, _ = curl(self.deadline, "-T", self.path, *headers,
                       f"{self.daemon.url}/v2/images/{image_id}/file")
        if code != "204":
            raise RuntimeError(f"PUT /file ({store or 'default store'}): {code}\n"
                               f"{self.daemon.log()[-3000:]}")

    def get(self, image_id: str) -> None:
        code, size = curl(self.deadline, f"{self.daemon.url}/v2/images/{image_id}/file")
        if code != "200" or size != self.size:
            raise RuntimeError(f"GET /file: {code}, {size} bytes of {self.size}\n"
                               f"{self.daemon.log()[-3000:]}")

    def copy(self, image_id: str) -> None:
        """copy-image into ceph until ``stores`` says so (polled every 20 ms); CopyFailed with
        the task's message if it failed."""
        self.api.request("POST", f"/v2/images/{image_id}/import",
                         {"method": {"name": "copy-image"}, "stores": ["ceph"]}, 202)
        deadline = time.perf_counter() + self.deadline
        while True:
            shown = self.show(image_id)
            if shown.get("stores") == "files,ceph":
                return
            if shown.get("os_glance_failed_import"):
                tasks = self.api.request("GET", f"/v2/images/{image_id}/tasks")["tasks"]
                messages = [t.get("message") for t in tasks if t.get("status") == "failure"]
                raise CopyFailed(f"failed for {shown['os_glance_failed_import']}: {messages}")
            if time.perf_counter() > deadline:
                raise CopyFailed(f"stores still {shown.get('stores')!r} after "
                                 f"{self.deadline:.0f} s")
            time.sleep(POLL)

    def pool_empty(self) -> None:
        """Deleting images removed their RBD images (a short wait: a delete may trail)."""
        deadline = time.monotonic() + 30
        while (left := self.cluster.images()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            raise RuntimeError(f"pool {self.cluster.pool} not empty after the run: {left}")

    def run(self) -> Run:
        run = Run()
        self.direct(run)

        image_id = self.create()
        with self.sampled() as usage:
            run.seconds[UP_CEPH] = timed(lambda: self.put(image_id, "ceph"))
        run.usage[UP_CEPH] = usage
        self.verify(image_id, UP_CEPH, "ceph")
        with self.sampled() as usage:
            run.seconds[DOWN_CEPH] = timed(lambda: self.get(image_id))
        run.usage[DOWN_CEPH] = usage
        self.delete(image_id)

        image_id = self.create()
        with self.sampled() as usage:
            run.seconds[UP_FILES] = timed(lambda: self.put(image_id, None))
        run.usage[UP_FILES] = usage
        self.verify(image_id, UP_FILES, "files")
        try:
            with self.sampled() as usage:
                run.seconds[COPY] = timed(lambda: self.copy(image_id))
            run.usage[COPY] = usage
            self.verify(image_id, COPY, "files,ceph")
        except CopyFailed as e:
            run.failures[COPY] = str(e)
        self.delete(image_id)
        self.pool_empty()
        return run


# -- report -----------------------------------------------------------------------------------


# (label, phase, phase it is compared with, goal)
ROWS: tuple[tuple[str, str, str | None, float | None], ...] = (
    ("rbd import (direct)", RBD_IMPORT, None, None),
    ("rbd export (direct)", RBD_EXPORT, None, None),
    ("upload to ceph (PUT)", UP_CEPH, RBD_IMPORT, GOAL_RATIO),
    ("download from ceph (GET)", DOWN_CEPH, RBD_EXPORT, GOAL_RATIO),
    ("upload to files (PUT)", UP_FILES, None, None),
    ("copy-image files->ceph", COPY, UP_FILES, None),
)
IMAGED_PHASES = (UP_CEPH, DOWN_CEPH, UP_FILES, COPY)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(runs: list[Run], size: int, rss_start: int, rss_end: int,
           hashing: dict[str, float], load: tuple[float, float, float]) -> None:
    per_gib = GiB / size

    def speed(run: Run, key: str) -> float:
        return mbps(size, run.seconds[key])

    print()
    print(f"{len(runs)} run(s) of {size // MiB} MiB; medians.  load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores "
          f"({len(os.sched_getaffinity(0))} usable)")
    print(f"RSS: imaged's peak (sampled every {SAMPLE * 1000:.0f} ms) minus its RSS before the "
          "phase / before the first run, MiB.  CPU: seconds per GiB moved.")
    print()
    print(f"{'phase':26} {'MB/s':>6} {'seconds':>8} {'ratio':>6} {'goal':>11} "
          f"{'RSS peak +MiB':>14} {'imaged CPU':>10} {'OSD CPU':>8} {'client CPU':>10}")
    for label, key, base, goal in ROWS:
        done = [r for r in runs if key in r.seconds]
        if not done:
            print(f"{label:26} {'FAILED':>6}")
            continue
        rate = median([speed(r, key) for r in done])
        seconds = median([r.seconds[key] for r in done])
        if base is not None:
            ratio_value = median([speed(r, key) / speed(r, base) for r in done])
            ratio = f"{ratio_value:.2f}"
            target = ("note" if goal is None
                      else f">={goal} {verdict(ratio_value >= goal)}")
        else:
            ratio = target = "-"
        peak = median([r.usage[key].peak_growth_mib() for r in done])
        peak_start = median([r.usage[key].peak_growth_mib(rss_start) for r in done])
        rss = f"{peak:+.0f} / {peak_start:+.0f}"
        imaged = median([r.usage[key].imaged_cpu for r in done]) * per_gib
        osd = median([r.usage[key].osd_cpu for r in done]) * per_gib
        client = median([r.usage[key].client_cpu for r in done]) * per_gib
        failed = len(runs) - len(done)
        print(f"{label:26} {rate:6.0f} {seconds:8.2f} {ratio:>6} {target:>11} {rss:>14} "
              f"{imaged:10.2f} {osd:8.2f} {client:10.2f}"
              + (f"   ({failed} run(s) failed)" if failed else ""))
    print()
    print("ratios: upload to ceph / rbd import, download from ceph / rbd export, "
          "copy-image / upload to files")
    print("hashing alone, this process, one thread, CPU s/GiB: "
          + ", ".join(f"{name} {seconds * per_gib:.2f}" for name, seconds in hashing.items()))
    print(f"imaged RSS: {rss_start / 1024:.1f} MiB before the first run, "
          f"{rss_end / 1024:.1f} MiB after the last")
    for run_number, run in enumerate(runs, 1):
        for key, message in run.failures.items():
            print(f"run {run_number}: {key} FAILED: {message}")
    print()
    print("imaged's CPU by thread, s/GiB (mean of the runs):")
    for key in IMAGED_PHASES:
        done = [r for r in runs if key in r.usage]
        if not done:
            continue
        groups: dict[str, float] = {}
        for r in done:
            for group, seconds in r.usage[key].threads.items():
                groups[group] = groups.get(group, 0.0) + seconds * per_gib / len(done)
        top = sorted(groups.items(), key=lambda item: -item[1])
        shown = [f"{group} {seconds:.2f}" for group, seconds in top if seconds >= 0.01]
        print(f"  {key:24} " + ", ".join(shown))
    print()
    worst = max(r.usage[k].peak_growth_mib(rss_start)
                for r in runs for k in IMAGED_PHASES if k in r.usage)
    print("goals (information, not an exit code):")
    for label, key, base, goal in ROWS:
        if goal is None or base is None:
            continue
        done = [r for r in runs if key in r.seconds]
        value = median([speed(r, key) / speed(r, base) for r in done])
        print(f"  {label} >= {goal} x {base}: {value:.2f}  {verdict(value >= goal)}")
    print(f"  imaged RSS peak <= {GOAL_RSS_MIB:.0f} MiB over its start (worst phase): "
          f"{worst:+.1f}  {verdict(worst <= GOAL_RSS_MIB)}")


def write_config(path: str, work: str, cluster: CephCluster) -> None:
    with open(path, "w") as f:
        f.write(f'''\
default-store = "files"

[stores.files]
type = "file"
description = "This node's disk"
directory = "{os.path.join(work, 'files')}"
weight = 100

[stores.ceph]
type = "rbd"
description = "Ceph RBD (bench)"
pool = "{cluster.pool}"
user = "{cluster.user}"
conf = "{cluster.conf}"
chunk-size = 8
weight = 50
''')


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size, MiB")
    parser.add_argument("--repeat", type=int, default=2, help="runs; medians are reported")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (and Ceph's logs in it)")
    args = parser.parse_args()
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1")
    # SIGTERM unwinds like ^C does, through the cleanup below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load = os.getloadavg()

    work = tempfile.mkdtemp(prefix="imaged-bench-stores-", dir=os.environ.get("BENCH_DIR"))
    path = os.path.join(work, "image.raw")
    ceph: Ceph | None = None
    cluster: CephCluster | None = None
    daemon: TwistdDaemon | None = None
    bench: Bench | None = None
    try:
        print(f"writing {args.size_mib} MiB of random data to {path} ...", file=sys.stderr)
        make_file(path, args.size_mib * MiB)
        digest, sha512_cpu = digest_of(path, "sha512")
        _, md5_cpu = digest_of(path, "md5")
        print("starting Ceph (BlueStore) ...", file=sys.stderr)
        # Named before they start, so the cleanup below stops them even mid-start.
        ceph = Ceph(objectstore="bluestore")
        cluster = ceph.start()
        osd_pid = int((cluster.dir / "run" / "osd.0.pid").read_text())
        config = os.path.join(work, "imaged.conf")
        write_config(config, work, cluster)
        daemon = TwistdDaemon(work, args=[
            "--auth", "none", "--config", config, "--data-dir", os.path.join(work, "data"),
            "--hash-algo", "sha512",
        ])
        daemon.start()
        assert daemon.process is not None
        rss_start = rss_kib(daemon.process.pid)
        bench = Bench(daemon, cluster, osd_pid, path, digest)
        runs: list[Run] = []
        for n in range(args.repeat):
            run = bench.run()
            runs.append(run)
            print(f"run {n + 1}: " + ", ".join(
                f"{key} {mbps(bench.size, s):.0f} MB/s" for key, s in run.seconds.items())
                + "".join(f", {key} FAILED" for key in run.failures)
                + f"; imaged RSS {rss_kib(daemon.process.pid) / 1024:.0f} MiB", file=sys.stderr)
        rss_end = rss_kib(daemon.process.pid)
        report(runs, args.size_mib * MiB, rss_start, rss_end,
               {"md5": md5_cpu, "sha512": sha512_cpu}, load)
    finally:
        try:
            if bench is not None:
                bench.api.close()
            if daemon is not None:
                try:
                    daemon.stop()
                except subprocess.TimeoutExpired:  # it did not stop in 30 s
                    if daemon.process is not None:
                        daemon.process.kill()
                        daemon.process.wait()
        finally:
            # imaged first (a client of the cluster), then Ceph, whatever happened to imaged.
            if ceph is not None:
                if args.keep and cluster is not None:
                    shutil.copytree(cluster.dir / "log", os.path.join(work, "ceph-log"),
                                    dirs_exist_ok=True)
                ceph.stop()
            if args.keep:
                print(f"kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
