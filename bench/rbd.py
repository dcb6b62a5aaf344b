#!/usr/bin/env python3
"""
RBD store benchmark: one image written and read through ``RBDBlobStore`` (in this process, on
the reactor, md5 and sha512 computed on the way), beside ``rbd import`` and ``rbd export`` of
the same file into the same pool with the same layout (format 2, layering, 8 MiB objects).

A one-node Ceph is started on 127.0.0.1 (``tests/ceph_server.py``; BlueStore on a sparse file
by default, since memstore keeps about twice the data in the OSD's memory).  The store runs
with 1 writer thread (one write in flight: glance_store's way) and with 4 (four at disjoint
offsets, its default), and its reads keep one chunk ahead.  The hashing alone is measured
too, since it bounds an upload.  Client, store threads and OSD share this machine's cores.
Not a test:

    .venv/bin/python bench/rbd.py [--size-mib 1024] [--runs 2] [--objectstore bluestore]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The project instead of this script's folder, where ``import rbd`` would find this file.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import react
from twisted.web.client import FileBodyProducer
from zope.interface import implementer

from imaged.store.rbd import RBDBlobStore
from tests.ceph_server import Ceph, CephCluster

MiB = 1024 * 1024
CHUNK = 8 * MiB


@implementer(IConsumer)
class Discard:
    def __init__(self) -> None:
        self.count = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.count += len(data)


async def through_store(reactor: Any, cluster: CephCluster, path: str, threads: int,
                        name: str) -> tuple[float, float]:
    store = RBDBlobStore.connect(reactor, pool=cluster.pool, user=cluster.user,
                                 conf=cluster.conf, chunk_size=CHUNK, threads=threads)
    try:
        with open(path, "rb") as f:
            started = time.perf_counter()
            blob = await store.write(name, FileBodyProducer(f, readSize=MiB), "sha512")
            up = time.perf_counter() - started
        started = time.perf_counter()
        producer = await store.read(blob.location)
        sink = Discard()
        await producer.startProducing(sink)
        down = time.perf_counter() - started
        assert sink.count == blob.size == os.path.getsize(path)
        await store.delete(blob.location)
        return up, down
    finally:
        await store.close()


def timed(*command: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def direct(cluster: CephCluster, path: str) -> tuple[float, float]:
    rbd = ["rbd", "-c", cluster.conf, "--id", cluster.user, "--no-progress"]
    image = f"{cluster.pool}/direct"
    up = timed(*rbd, "import", "--image-format", "2", "--image-feature", "layering",
               "--object-size", "8M", path, image)
    down = timed(*rbd, "export", image, "-")
    subprocess.run([*rbd, "rm", image], check=True, capture_output=True)
    return up, down


def hashing(path: str) -> float:
    """md5 and sha512 of the file in two threads, as the store's hashing lanes run them."""
    from concurrent.futures import ThreadPoolExecutor

    def digest(name: str) -> None:
        h = hashlib.new(name)
        with open(path, "rb") as f:
            while block := f.read(MiB):
                h.update(block)

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(digest, ["md5", "sha512"]))
    return time.perf_counter() - started


async def bench(reactor: Any, options: argparse.Namespace) -> None:
    server = Ceph(objectstore=options.objectstore)
    cluster = server.start()
    try:
        with tempfile.NamedTemporaryFile(dir=options.tmp, suffix=".img") as data:
            block = os.urandom(CHUNK)
            for i in range(options.size_mib // 8):
                data.write(block[i % 7:] + block[:i % 7])  # no two 8 MiB pieces alike
            data.flush()
            size = options.size_mib
            runs: dict[str, list[float]] = {}

            def record(name: str, seconds: float) -> None:
                runs.setdefault(name, []).append(size / seconds)

            for run in range(options.runs):
                record("hash md5+sha512", hashing(data.name))
                up, down = direct(cluster, data.name)
                record("rbd import", up)
                record("rbd export", down)
                for threads in (1, 4):
                    up, down = await through_store(reactor, cluster, data.name, threads,
                                                   f"bench-{threads}-{run}")
                    record(f"store write, {threads} thread(s)", up)
                    record(f"store read, {threads} thread(s)", down)
            result = {
                "size_mib": size, "objectstore": options.objectstore, "runs": options.runs,
                "load": os.getloadavg()[0],
                "MiB/s (median)": {k: round(statistics.median(v)) for k, v in runs.items()},
                "MiB/s (all)": {k: [round(x) for x in v] for k, v in runs.items()},
            }
            print(json.dumps(result, indent=2))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size-mib", type=int, default=1024, help="a multiple of 8")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--objectstore", choices=["bluestore", "memstore"], default="bluestore")
    parser.add_argument("--tmp", default=None, help="where the data file goes")
    options = parser.parse_args()
    react(lambda reactor: ensureDeferred(bench(reactor, options)))


if __name__ == "__main__":
    main()

