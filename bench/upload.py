#!/usr/bin/env python3
"""
Data-path benchmark: uploads and downloads through imaged started by twistd, against this
machine's own limits measured in the same run.

Limits: sequential disk write with fsync; md5 and the multihash each alone; a reference
pipeline (a plain Python process hashing md5 and the multihash in parallel threads while
writing and fsyncing the same bytes from memory); loopback HTTP (curl fetching a page-cached
file sent with sendfile).  Then imaged (SQLite + files, loopback): curl uploads of 1 GiB and
4 GiB with Content-Length and chunked, a download, and the server's resident memory growth,
each as a ratio to its limit.  Medians of several runs.  Not a test:

    .venv/bin/python bench/upload.py [--runs 3] [--big 4] [--algos sha512,sha256]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from imaged.testing import TwistdDaemon

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = os.urandom(64 * MiB)


def make_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // len(BLOCK)):
            f.write(BLOCK)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- machine limits -------------------------------------------------------------------------


def disk_write(directory: str, size: int) -> float:
    path = os.path.join(directory, "disk-probe")

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        view = memoryview(BLOCK)
        for _ in range(size // len(BLOCK)):
            os.write(fd, view)
        os.fsync(fd)
        os.close(fd)

    seconds = timed(run)
    os.unlink(path)
    return mbps(size, seconds)


def hash_alone(algo: str, size: int) -> float:
    def run() -> None:
        h = hashlib.new(algo)
        for _ in range(size // len(BLOCK)):
            h.update(BLOCK)

    return mbps(size, timed(run))


def reference_pipeline(directory: str, size: int, algo: str) -> float:
    """md5 and ``algo`` in two threads while a third writes and fsyncs, 1 MiB at a time."""
    path = os.path.join(directory, "pipeline-probe")
    chunk = MiB
    views = [memoryview(BLOCK)[i:i + chunk] for i in range(0, len(BLOCK), chunk)]
    count = size // chunk

    def hasher(name: str) -> None:
        h = hashlib.new(name)
        for n in range(count):
            h.update(views[n % len(views)])

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for n in range(count):
            os.write(fd, views[n % len(views)])
        os.fsync(fd)
        os.close(fd)

    def run() -> None:
        threads = [threading.Thread(target=hasher, args=("md5",)),
                   threading.Thread(target=hasher, args=(algo,)),
                   threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    seconds = timed(run)
    os.unlink(path)
    return mbps(size, seconds)


def loopback_http(path: str) -> float:
    """curl GET of a file sent with sendfile by a minimal server: HTTP over loopback, bare."""
    size = os.path.getsize(path)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        with open(path, "rb") as f:
            conn.sendfile(f)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    seconds = timed(lambda: subprocess.run(
        ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"], check=True))
    thread.join()
    server.close()
    return mbps(size, seconds)


# -- imaged -----------------------------------------------------------------------------------


def curl_json(*args: str) -> dict:
    import json

    out = subprocess.run(["curl", "-s", *args], check=True, capture_output=True).stdout
    return json.loads(out) if out else {}


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def upload(daemon: TwistdDaemon, path: str, chunked: bool) -> tuple[float, int]:
    """One upload; returns (MB/s, resident growth in KiB during it)."""
    image = curl_json("-X", "POST", f"{daemon.url}/v2/images",
                      "-d", '{"disk_format": "raw", "container_format": "bare"}')
    assert daemon.process is not None
    pid = daemon.process.pid
    before = rss_kib(pid, "VmRSS")
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid, "VmRSS"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", path,
               "-H", "Content-Type: application/octet-stream"]
    if chunked:
        command += ["-H", "Transfer-Encoding: chunked"]
    command.append(f"{daemon.url}/v2/images/{image['id']}/file")
    result: list[str] = []
    seconds = timed(lambda: result.append(
        subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    stop.set()
    sampler.join()
    assert result[0] == "204", result
    shown = curl_json(f"{daemon.url}/v2/images/{image['id']}")
    assert shown["status"] == "active" and shown["size"] == os.path.getsize(path), shown
    daemon.last_image = image["id"]  # type: ignore[attr-defined]
    return mbps(os.path.getsize(path), seconds), peak[0] - before


def download(daemon: TwistdDaemon, image_id: str, size: int) -> float:
    return mbps(size, timed(lambda: subprocess.run(
        ["curl", "-s", "-o", "/dev/null", f"{daemon.url}/v2/images/{image_id}/file"],
        check=True)))


def delete(daemon: TwistdDaemon, image_id: str) -> None:
    subprocess.run(["curl", "-s", "-X", "DELETE", f"{daemon.url}/v2/images/{image_id}"],
                   check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=4, help="size of the large image, GiB")
    parser.add_argument("--algos", default="sha512,sha256")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="imaged-bench-data-", dir=os.environ.get("BENCH_DIR"))
    small_path, big_path = os.path.join(work, "1g.raw"), os.path.join(work, "big.raw")
    print("preparing files ...", file=sys.stderr)
    make_file(small_path, GiB)
    make_file(big_path, args.big * GiB)
    runs = args.runs
    rows: list[tuple[str, str, str]] = []
    try:
        disk = statistics.median(disk_write(work, GiB) for _ in range(runs))
        loop = statistics.median(loopback_http(small_path) for _ in range(runs))
        rows.append(("sequential disk write + fsync", f"{disk:.0f} MB/s", "limit"))
        rows.append(("loopback HTTP (curl, sendfile)", f"{loop:.0f} MB/s", "limit"))
        for algo in args.algos.split(","):
            md5 = hash_alone("md5", GiB)
            multihash = hash_alone(algo, GiB)
            ref = statistics.median(reference_pipeline(work, GiB, algo) for _ in range(runs))
            rows.append((f"md5 alone / {algo} alone", f"{md5:.0f} / {multihash:.0f} MB/s",
                         "limit"))
            rows.append((f"reference pipeline (md5 + {algo} + write + fsync)",
                         f"{ref:.0f} MB/s", "limit"))
            data = os.path.join(work, f"data-{algo}")
            daemon = TwistdDaemon(work, args=["--data-dir", data, "--hash-algo", algo]).start()
            try:
                for label, path, count in (("1 GiB", small_path, runs),
                                           (f"{args.big} GiB", big_path, max(1, runs - 1))):
                    size = os.path.getsize(path)
                    for chunked in (False, True):
                        results = []
                        references = []
                        for _ in range(count):
                            # The reference runs right before each upload, on the same bytes
                            # and the same disk state: this VM's disk speed drifts.
                            references.append(reference_pipeline(work, size, algo))
                            results.append(upload(daemon, path, chunked))
                            if label == "1 GiB" and not chunked:
                                down = download(daemon, daemon.last_image, size)  # type: ignore
                                rows.append((f"download 1 GiB ({algo} run)",
                                             f"{down:.0f} MB/s", f"{down / loop:.2f} x loopback"))
                            delete(daemon, daemon.last_image)  # type: ignore[attr-defined]
                        speed = statistics.median(r[0] for r in results)
                        ratio = statistics.median(
                            r[0] / ref for r, ref in zip(results, references, strict=True)
                        )
                        reference = statistics.median(references)
                        growth = max(r[1] for r in results) / 1024
                        mode = "chunked" if chunked else "Content-Length"
                        rows.append((
                            f"upload {label}, {mode}, {algo}",
                            f"{speed:.0f} MB/s",
                            f"{ratio:.2f} x reference ({reference:.0f} MB/s alongside); "
                            f"{speed / disk:.2f} x disk; RSS +{growth:.0f} MiB",
                        ))
                        print(f"  {rows[-1]}", file=sys.stderr)
            finally:
                daemon.stop()
                shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| measurement | figure | ratio |")
    print("|---|---:|---|")
    for name, figure, ratio in rows:
        print(f"| {name} | {figure} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
