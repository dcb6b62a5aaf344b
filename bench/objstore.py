#!/usr/bin/env python3
"""
Object-store benchmark: uploads and downloads through imaged with ``--store swift`` and
``--store s3``, each beside a direct transfer of the same file to the same store in the same
run, so imaged's overhead is a ratio.

A Swift cluster with s3api is started on 127.0.0.1 (``tests/swift_server.py``).  Direct
Swift: curl with a tempauth token (``-T`` file, GET to /dev/null).  Direct S3: botocore's
own client (``put_object`` with an unsigned payload, ``get_object`` streamed), since curl's
SigV4 would hash the whole file first.  Through imaged (twistd, SQLite + the store): curl
``-T`` with Content-Length and chunked (``-H 'Transfer-Encoding: chunked'``, so Swift gets
segments and S3 a multipart upload), and a download.  Also imaged's peak resident memory.
Client, imaged and every Swift process share this machine's two cores.  Not a test:

    .venv/bin/python bench/objstore.py [--size-mib 512] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaged.testing import TwistdDaemon
from tests.swift_server import Swift

MiB = 1024 * 1024


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def curl(*args: str) -> str:
    result = subprocess.run(["curl", "-sS", "-f", *args], capture_output=True, text=True,
                            check=True)
    return result.stdout


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def direct_swift(swift: Swift, path: str) -> tuple[float, float]:
    token, storage = swift.token()
    auth = ["-H", f"X-Auth-Token: {token}"]
    curl("-X", "PUT", *auth, f"{storage}/direct")
    up = timed(lambda: curl("-T", path, *auth, f"{storage}/direct/object"))
    down = timed(lambda: curl("-o", "/dev/null", *auth, f"{storage}/direct/object"))
    curl("-X", "DELETE", *auth, f"{storage}/direct/object")
    return up, down


def direct_s3(swift: Swift, path: str) -> tuple[float, float]:
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=swift.url, aws_access_key_id=swift.user,
        aws_secret_access_key=swift.key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path", "payload_signing_enabled": False},
                      request_checksum_calculation="when_required"))
    try:
        client.create_bucket(Bucket="directbucket")
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass

    def put() -> None:
        with open(path, "rb") as f:
            client.put_object(Bucket="directbucket", Key="object", Body=f)

    def get() -> None:
        body = client.get_object(Bucket="directbucket", Key="object")["Body"]
        while body.read(1024 * 1024):
            pass

    up, down = timed(put), timed(get)
    client.delete_object(Bucket="directbucket", Key="object")
    return up, down


def through_imaged(node: TwistdDaemon, path: str, chunked: bool) -> tuple[float, float]:
    image = json.loads(curl("-X", "POST", "-H", "Content-Type: application/json", "-d",
                            '{"disk_format": "raw", "container_format": "bare"}',
                            f"{node.url}/v2/images"))
    url = f"{node.url}/v2/images/{image['id']}/file"
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    up = timed(lambda: curl("-T", path, "-H", "Content-Type: application/octet-stream",
                            *extra, url))
    down = timed(lambda: curl("-o", "/dev/null", url))
    curl("-X", "DELETE", f"{node.url}/v2/images/{image['id']}")
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="imaged-objbench-"))
    path = str(work / "image.raw")
    with open(path, "wb") as f:
        block = os.urandom(16 * MiB)
        for _ in range(size // len(block)):
            f.write(block)
    swift = Swift().start()
    key = work / "key"
    key.write_text(swift.key)
    stores = {
        "swift": ["--store", "swift", "--swift-auth-url", swift.auth_url, "--swift-user",
                  swift.user, "--swift-key-file", str(key), "--swift-segment-size",
                  str(256 * MiB)],
        "s3": ["--store", "s3", "--s3-endpoint", swift.url, "--s3-bucket", "imagedbench",
               "--s3-access-key", swift.user, "--s3-secret-key-file", str(key)],
    }
    direct = {"swift": direct_swift, "s3": direct_s3}
    rows = []
    try:
        for name, options in stores.items():
            node_dir = work / name
            node_dir.mkdir()
            node = TwistdDaemon(str(node_dir), args=["--data-dir", str(node_dir),
                                                     *options]).start()
            try:
                results: dict[str, list[float]] = {}
                failed_log = node.log_path
                for _ in range(args.runs):
                    for label, (up, down) in (
                        ("direct", direct[name](swift, path)),
                        ("imaged, Content-Length", through_imaged(node, path, False)),
                        ("imaged, chunked", through_imaged(node, path, True)),
                    ):
                        results.setdefault(label + " up", []).append(up)
                        results.setdefault(label + " down", []).append(down)
                assert node.process is not None
                rss = peak_rss_mib(node.process.pid)
            except subprocess.CalledProcessError:
                print(Path(failed_log).read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                node.stop()
            best = {k: size / MiB / statistics.median(v) for k, v in results.items()}
            for direction in ("up", "down"):
                base = best[f"direct {direction}"]
                for label in ("direct", "imaged, Content-Length", "imaged, chunked"):
                    key_name = f"{label} {direction}"
                    if key_name not in best or (direction == "down" and "chunked" in label):
                        continue
                    rows.append((name, "upload" if direction == "up" else "download", label,
                                 best[key_name], best[key_name] / base))
            rows.append((name, "imaged peak RSS", f"{rss:.0f} MiB", float("nan"),
                         float("nan")))
    finally:
        swift.stop()
        for leftover in work.glob("**/*"):
            if leftover.is_file():
                leftover.unlink()
    print(f"\n{args.size_mib} MiB, median of {args.runs} runs, loopback, 2 cores shared by "
          "client, imaged and Swift\n")
    print("| store | transfer | how | MiB/s | ratio to direct |")
    print("|---|---|---|---:|---:|")
    for store, what, how, speed, ratio in rows:
        if speed != speed:  # NaN: the memory row
            print(f"| {store} | {what} | {how} | | |")
        else:
            print(f"| {store} | {what} | {how} | {speed:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
