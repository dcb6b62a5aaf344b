#!/usr/bin/env python3
"""
Metadata benchmark: create, show and list (limit 25) against imaged started by twistd.

For each table size (default 1,000 and 100,000 images, seeded straight into SQLite through
imaged's own schema), imaged is started the way users start it (``twistd imaged``, SQLite + local
files, loopback) and driven with wrk at concurrency 1 and 16.  Prints requests per second,
p50/p99 latency and errors per run, the targets from the foundation issue, and how list latency
changes with the table size.  Not a test: numbers depend on the machine; run it by hand:

    .venv/bin/python bench/metadata.py [--sizes 1000,100000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from imaged.model import ContainerFormat, DiskFormat, Image, Status, Visibility
from imaged.store.database import make_engine, upgrade_schema
from imaged.store.rows import image_row
from imaged.store.tables import image_properties, image_tags, images
from imaged.testing import TwistdDaemon

PROJECT = "bench-project"
HEADERS = {"X-Project-Id": PROJECT, "X-User-Id": "bench", "X-Roles": "member,reader"}

TARGETS = {
    # operation: (requests/s at least, p99 at most in ms or None)
    "create": (120, None),
    "show": (600, 50.0),
    "list": (250, None),
}


def seed(database: str, count: int) -> str:
    """Insert ``count`` images (one tag, one property each); return one image id to show."""
    engine = make_engine(database)
    upgrade_schema(engine)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=30)
    batch: list[dict] = []
    tags: list[dict] = []
    properties: list[dict] = []
    some_id = ""
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
            some_id = image.id
            batch.append(image_row(image))
            tags.append({"image_id": image.id, "value": f"tag-{n % 7}"})
            properties.append({"image_id": image.id, "name": "os_distro", "value": "debian"})
            if len(batch) >= 5000:
                connection.execute(insert(images), batch)
                connection.execute(insert(image_tags), tags)
                connection.execute(insert(image_properties), properties)
                batch, tags, properties = [], [], []
        if batch:
            connection.execute(insert(images), batch)
            connection.execute(insert(image_tags), tags)
            connection.execute(insert(image_properties), properties)
    engine.dispose()
    return some_id


def lua_script(path: str, method: str, body: str | None) -> None:
    lines = [f'wrk.method = "{method}"']
    for name, value in HEADERS.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = [[{body}]]")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, script: str, connections: int, seconds: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "total": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/metadata.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2

    rows = []
    list_p50: dict[int, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        work = tempfile.mkdtemp(prefix=f"imaged-bench-{size}-")
        data = os.path.join(work, "data")
        os.makedirs(data)
        print(f"seeding {size} images ...", file=sys.stderr)
        show_id = seed("sqlite:///" + os.path.join(data, "imaged.sqlite"), size)
        daemon = TwistdDaemon(work, args=["--data-dir", data]).start()
        try:
            scripts = {}
            for name, method, body in (
                ("show", "GET", None),
                ("list", "GET", None),
                ("create", "POST", '{"name": "bench", "disk_format": "raw", '
                                   '"container_format": "bare", "os_distro": "debian"}'),
            ):
                scripts[name] = os.path.join(work, f"{name}.lua")
                lua_script(scripts[name], method, body)
            urls = {
                "show": f"{daemon.url}/v2/images/{show_id}",
                "list": f"{daemon.url}/v2/images?limit=25",
                "create": f"{daemon.url}/v2/images",
            }
            for op in ("show", "list", "create"):
                for connections in (1, 16):
                    wrk(urls[op], scripts[op], connections, 2)  # warm up
                    result = wrk(urls[op], scripts[op], connections, args.seconds)
                    rows.append((size, op, connections, result))
                    if op == "list":
                        list_p50[(size, connections)] = result["p50"]
                    print(f"  {size:>7} {op:<6} c={connections:<2} {result['rps']:8.0f}/s "
                          f"p50 {result['p50']:6.2f} ms p99 {result['p99']:7.2f} ms "
                          f"errors {result['errors']}", file=sys.stderr)
        finally:
            daemon.stop()
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("| images | operation | concurrency | requests/s | p50 ms | p99 ms | errors | target "
          "| met |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---|")
    for size, op, connections, r in rows:
        floor, p99_cap = TARGETS[op]
        target = f">= {floor}/s" + (f", p99 <= {p99_cap:.0f} ms" if p99_cap else "")
        if op == "create":
            target += ", 0 errors"
        if connections == 16:
            met = r["rps"] >= floor and (p99_cap is None or r["p99"] <= p99_cap) and (
                r["errors"] == 0)
            verdict = "yes" if met else "NO"
        else:
            verdict = "-"
        print(f"| {size} | {op} | {connections} | {r['rps']:.0f} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['errors']} | {target if connections == 16 else ''} "
              f"| {verdict} |")
    sizes = sorted({size for size, *_ in rows})
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print()
        print(f"| list p50 ratio, {large} vs {small} images | concurrency 1 | concurrency 16 |")
        print("|---|---:|---:|")
        ratios = [list_p50[(large, c)] / list_p50[(small, c)] for c in (1, 16)]
        print(f"| target <= 1.5 | {ratios[0]:.2f} | {ratios[1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
