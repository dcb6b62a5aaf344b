#!/usr/bin/env python3
"""
Metadefs benchmark: the metadata definitions catalog's reads against the image list, one daemon.

imaged is started the way users start it (``twistd imaged``, SQLite + local files, loopback) on a
data directory holding 1,000 images (seeded straight into SQLite through imaged's own schema, as
bench/metadata.py does) and Glance's 33 shipped definition files, loaded the way an operator loads
them: ``imaged-manage --data-dir DIR metadefs load``, before the daemon starts.  wrk then drives,
at concurrency 16 and 1, with a member/reader of the images' project, who sees the public
namespaces and the project's own: 31 of the 33, as in Glance (two shipped files name no
visibility, so they load private to ``admin``):

- ``GET /v2/metadefs/namespaces`` (the default page: 25 of the 31) and ``?limit=50`` (all 31);
- ``GET /v2/metadefs/namespaces/OS::Compute::Libvirt`` and the largest shipped namespace,
  ``OS::Software::DBMS`` (shows);
- ``GET /v2/metadefs/resource_types``;
- ``GET /v2/images?limit=25``, the yardstick.

Every URL is fetched once first and must answer 200 with the expected content (and an admin
must see all 33 namespaces).  Prints the machine's cores, the date and load, then requests per
second, p50/p99 latency, errors, imaged's CPU per request (/proc) and each route's requests/s as a
fraction of the image list's at the same concurrency (routes are interleaved: all at 16, then all
at 1, so background load hits them alike).  About two minutes with the defaults.  Not a test:
numbers depend on the machine; run it by hand:

    .venv/bin/python bench/metadefs.py [--images 1000] [--seconds 10] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from bench.procstats import cpu_seconds, rss_kib
from imaged.metadefs.files import SHIPPED
from imaged.model import ContainerFormat, DiskFormat, Image, Status, Visibility
from imaged.store.database import make_engine, upgrade_schema
from imaged.store.rows import image_row
from imaged.store.tables import image_properties, image_tags, images
from imaged.testing import TwistdDaemon

PROJECT = "bench-project"
HEADERS = {"X-Project-Id": PROJECT, "X-User-Id": "bench", "X-Roles": "member,reader"}
ADMIN = dict(HEADERS, **{"X-Roles": "admin,member,reader"})
LIST_ROUTE = "images?limit=25"


#: What a route's answer holds, in a few words; raises AssertionError if it is wrong.
Check = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    check: Check


def _namespaces(expected: int, paged: bool) -> Check:
    def check(document: dict[str, Any]) -> str:
        found = document["namespaces"]
        assert len(found) == expected, f"{len(found)} namespaces, expected {expected}"
        assert ("next" in document) == paged, f"next link: {document.get('next')}"
        return f"{len(found)} namespaces" + (", next link" if paged else "")
    return check


def _show(namespace: str) -> Check:
    def check(document: dict[str, Any]) -> str:
        assert document["namespace"] == namespace, document.get("namespace")
        properties = len(document.get("properties", {}))
        objects = len(document.get("objects", []))
        return f"{properties} properties, {objects} objects"
    return check


def _resource_types(document: dict[str, Any]) -> str:
    found = document["resource_types"]
    assert found, "no resource types"
    return f"{len(found)} resource types"


def _images(document: dict[str, Any]) -> str:
    found = document["images"]
    assert len(found) == 25, f"{len(found)} images, expected 25"
    return f"{len(found)} images, next link" if "next" in document else f"{len(found)} images"


def _shipped() -> tuple[int, int]:
    """How many namespaces Glance's files define, and how many of them are public."""
    visibilities = []
    for name in sorted(os.listdir(SHIPPED)):
        if name.endswith(".json"):
            with open(os.path.join(SHIPPED, name)) as f:
                visibilities.append(json.load(f).get("visibility"))
    return len(visibilities), visibilities.count("public")


SHIPPED_NAMESPACES, PUBLIC_NAMESPACES = _shipped()

ROUTES = [
    Route("namespaces", "metadefs/namespaces", _namespaces(25, paged=True)),
    Route("namespaces?limit=50", "metadefs/namespaces?limit=50",
          _namespaces(PUBLIC_NAMESPACES, paged=False)),
    Route("show OS::Compute::Libvirt", "metadefs/namespaces/OS::Compute::Libvirt",
          _show("OS::Compute::Libvirt")),
    Route("show OS::Software::DBMS", "metadefs/namespaces/OS::Software::DBMS",
          _show("OS::Software::DBMS")),
    Route("resource_types", "metadefs/resource_types", _resource_types),
    Route(LIST_ROUTE, LIST_ROUTE, _images),
]


def seed(database: str, count: int) -> None:
    """Insert ``count`` images (one tag, one property each), as bench/metadata.py does."""
    engine = make_engine(database)
    upgrade_schema(engine)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
    batch: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    properties: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for n in range(count):
            at = start + timedelta(milliseconds=n)
            image = Image(
                id=str(uuid.uuid4()), status=Status.ACTIVE if n % 3 else Status.QUEUED,
                visibility=Visibility.SHARED if n % 10 else Visibility.PUBLIC,
                created_at=at, updated_at=at, name=f"image-{n}", owner=PROJECT,
                disk_format=DiskFormat.QCOW2, container_format=ContainerFormat.BARE,
                size=n * 1024, checksum="0" * 32,
            )
            batch.append(image_row(image))
            tags.append({"image_id": image.id, "value": f"tag-{n % 7}"})
            properties.append({"image_id": image.id, "name": "os_distro", "value": "debian"})
            if len(batch) >= 5000 or n == count - 1:
                connection.execute(insert(images), batch)
                connection.execute(insert(image_tags), tags)
                connection.execute(insert(image_properties), properties)
                batch, tags, properties = [], [], []
    engine.dispose()


def load_metadefs(work: str, data: str) -> str:
    """``imaged-manage --data-dir DATA metadefs load`` (Glance's shipped files); its last line."""
    manage = os.path.join(os.path.dirname(sys.executable), "imaged-manage")
    command = [manage] if os.path.exists(manage) else [sys.executable, "-m", "imaged.manage"]
    done = subprocess.run([*command, "--data-dir", data, "metadefs", "load"], cwd=work,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"imaged-manage metadefs load failed ({done.returncode}):\n"
                           + done.stdout + done.stderr)
    return done.stdout.strip().splitlines()[-1]


def fetch(url: str, headers: dict[str, str] = HEADERS) -> tuple[int, int, dict[str, Any]]:
    """One GET as wrk sends it: status, body bytes, decoded body."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        body = e.read()
        status = e.code
    try:
        document = json.loads(body)
    except ValueError:
        document = {"unparsed": body[:200].decode("utf-8", "replace")}
    return status, len(body), document


def lua_script(path: str) -> None:
    lines = ['wrk.method = "GET"']
    for name, value in HEADERS.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _match(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.M)
    if found is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return found


def _ms(text: str) -> float:
    number, unit = _match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, script: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(_match(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(_match(r"^\s+50%\s+(\S+)", out).group(1))
    p99 = _ms(_match(r"^\s+99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    total = int(_match(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "total": total}


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images seeded (default 1000)")
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="wrk warm-up per route before its first run, 0 for none (default 1)")
    parser.add_argument("--concurrency", default="16,1", help="wrk connections (default 16,1)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/metadefs.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    started = datetime.now(UTC)
    load_before = _loadavg()
    work = tempfile.mkdtemp(prefix="imaged-bench-metadefs-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    results: dict[tuple[str, int], dict[str, float]] = {}
    answers: dict[str, tuple[int, str]] = {}
    daemon = None
    try:
        print(f"seeding {args.images} images ...", file=sys.stderr)
        seed("sqlite:///" + os.path.join(data, "imaged.sqlite"), args.images)
        loaded = load_metadefs(work, data)
        print(f"imaged-manage: {loaded}", file=sys.stderr)
        daemon = TwistdDaemon(work, args=["--data-dir", data]).start()
        assert daemon.process is not None
        pid = daemon.process.pid
        scripts = os.path.join(work, "get.lua")
        lua_script(scripts)

        wrong = []
        for route in ROUTES:
            status, size, document = fetch(f"{daemon.url}/v2/{route.path}")
            try:
                assert status == 200, f"status {status}: {document}"
                answers[route.name] = (size, route.check(document))
            except (AssertionError, KeyError) as e:
                wrong.append(f"GET /v2/{route.path}: {e!r}")
        status, _, document = fetch(f"{daemon.url}/v2/metadefs/namespaces?limit=50", ADMIN)
        try:
            assert status == 200, f"status {status}: {document}"
            _namespaces(SHIPPED_NAMESPACES, paged=False)(document)
        except (AssertionError, KeyError) as e:
            wrong.append(f"GET /v2/metadefs/namespaces?limit=50 as admin: {e!r}")
        if wrong:
            print("imaged answered wrongly (not measured):\n  " + "\n  ".join(wrong),
                  file=sys.stderr)
            return 1

        warmed: set[str] = set()
        for connections in concurrencies:
            for route in ROUTES:
                url = f"{daemon.url}/v2/{route.path}"
                if args.warmup and route.name not in warmed:
                    wrk(url, scripts, connections, args.warmup)
                    warmed.add(route.name)
                cpu = cpu_seconds(pid)
                result = wrk(url, scripts, connections, args.seconds)
                result["cpu_ms"] = (cpu_seconds(pid) - cpu) * 1000 / max(result["total"], 1)
                results[(route.name, connections)] = result
                print(f"  {route.name:<26} c={connections:<2} {result['rps']:8.0f}/s "
                      f"p50 {result['p50']:6.2f} ms p99 {result['p99']:7.2f} ms "
                      f"errors {result['errors']:.0f}", file=sys.stderr)
        rss = rss_kib(pid)
        if daemon.process.poll() is not None:
            print("imaged exited during the run:\n" + daemon.log(), file=sys.stderr)
            return 1
        tracebacks = daemon.log().count("Traceback")
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0))
    print()
    print(f"bench/metadefs.py, {started:%Y-%m-%d %H:%M} UTC; {cores} cores ({usable} usable); "
          f"load average {load_before} before, {_loadavg()} after; wrk -t1, {args.seconds} s "
          f"per run; {args.images} images; {loaded}")
    print(f"imaged RSS at the end {rss / 1024:.0f} MiB; tracebacks in its log: {tracebacks}")
    print()
    print("| GET /v2/... | answer | body bytes |")
    print("|---|---|---:|")
    for route in ROUTES:
        size, what = answers[route.name]
        print(f"| {route.path} | {what} | {size} |")
    print()
    print("| route | concurrency | requests/s | p50 ms | p99 ms | errors | imaged CPU ms/req "
          f"| requests/s vs {LIST_ROUTE} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for connections in concurrencies:
        base = results[(LIST_ROUTE, connections)]["rps"]
        for route in ROUTES:
            r = results[(route.name, connections)]
            ratio = f"{r['rps'] / base:.2f}" if base else "-"
            print(f"| {route.name} | {connections} | {r['rps']:.0f} | {r['p50']:.2f} | "
                  f"{r['p99']:.2f} | {r['errors']:.0f} | {r['cpu_ms']:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
