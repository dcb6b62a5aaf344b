"""Faults under load against real daemons: PostgreSQL restarted mid-burst; nothing stuck after."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import pytest_twisted
from sqlalchemy import create_engine, text

from imaged.testing import TwistdDaemon

from .postgres_server import PostgreSQL

pytestmark = pytest.mark.servers

MANAGE = os.path.join(os.path.dirname(sys.executable), "imaged-manage")


@pytest.fixture
def restartable_postgres() -> Iterator[PostgreSQL]:
    """A cluster of this test's own: restarting the session's would disturb other tests."""
    server = PostgreSQL().start()
    yield server
    server.stop()


def call(url: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> int:
    target = urlparse(url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException):
        return -1  # the connection was cut: recorded, never a 5xx
    finally:
        connection.close()


def burst(url: str, stop: threading.Event, codes: Counter[int], lock: threading.Lock) -> None:
    """Create, upload, show and delete images until ``stop``."""
    while not stop.is_set():
        target = urlparse(url)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            connection.request("POST", "/v2/images", body=json.dumps(
                {"name": "burst", "disk_format": "raw", "container_format": "bare"}),
                headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            created = response.read()
            seen = [response.status]
            if response.status == 201:
                image_id = json.loads(created)["id"]
                seen.append(call(url, "PUT", f"/v2/images/{image_id}/file", os.urandom(65536),
                                 {"Content-Type": "application/octet-stream"}))
                seen.append(call(url, "GET", f"/v2/images/{image_id}"))
                if seen[-2] == 204:
                    seen.append(call(url, "DELETE", f"/v2/images/{image_id}"))
        except (ConnectionError, http.client.HTTPException):
            seen = [-1]
        finally:
            connection.close()
        with lock:
            codes.update(seen)


def consistency(database: str, images_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """Images ``saving``, blobs no image refers to, and active images whose blob is missing."""
    engine = create_engine(database)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT id, status, locations FROM images WHERE deleted = false")).all()
    engine.dispose()
    saving = [row[0] for row in rows if row[1] == "saving"]
    referenced = {copy["url"].rsplit("/", 1)[-1]
                  for row in rows if row[2] for copy in json.loads(row[2])}
    stored = {p.name for p in images_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    missing = [row[0] for row in rows if row[1] == "active" and row[0] not in stored]
    return saving, sorted(stored - referenced), missing


def test_postgresql_fast_restart_under_load(restartable_postgres: PostgreSQL,
                                            tmp_path: Path) -> None:
    database = restartable_postgres.database("faults_" + uuid.uuid4().hex[:8])
    subprocess.run([MANAGE, "--database", database, "db", "upgrade"], check=True,
                   capture_output=True)
    daemon = TwistdDaemon(str(tmp_path), args=["--database", database,
                                               "--data-dir", str(tmp_path)]).start()
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    clients = [threading.Thread(target=burst, args=(daemon.url, stop, codes, lock))
               for _ in range(8)]
    try:
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while sum(codes.values()) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the load to build up, not for time to pass
        began = time.monotonic()
        restartable_postgres.restart()
        print(f"\nrestart took {time.monotonic() - began:.1f} s")
        served = sum(codes.values())
        deadline = time.monotonic() + 30
        while sum(codes.values()) < served + 200 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    log = daemon.log()
    try:
        assert not [code for code in codes if code >= 500 and code != 503], (codes, log[-3000:])
        assert codes[201] > 0 and codes[204] > 0, codes
        # Within a minute, with no operator: nothing saving, no orphan blob, nothing missing.
        images_dir = tmp_path / "images"
        stopped = time.monotonic()
        deadline = stopped + 60
        state = consistency(database, images_dir)
        while state != ([], [], []) and time.monotonic() < deadline:
            time.sleep(0.5)
            state = consistency(database, images_dir)
        assert state == ([], [], []), (state, codes)
        repaired_in = time.monotonic() - stopped
        assert "Traceback" not in log, log[-3000:]
    finally:
        daemon.stop()
    print(f"\nresponses during a PostgreSQL fast restart: {dict(sorted(codes.items()))}; "
          f"consistent {repaired_in:.1f} s after the load stopped")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system (tmpfs): what a full disk looks like to the file store."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest_twisted.ensureDeferred
async def test_a_full_data_disk_is_413_and_keeps_nothing(tiny_disk: Path) -> None:
    from twisted.internet import reactor

    from imaged.context import RequestContext
    from imaged.errors import TooLarge
    from imaged.model import ContainerFormat, CreateImageRequest, DiskFormat, Status
    from imaged.store.files import FileBlobStore
    from imaged.testing import memory_image_service, producer_of

    blobs = FileBlobStore(str(tiny_disk / "images"), reactor)
    service = memory_image_service(blobs=blobs)
    context = RequestContext.from_roles("p", "u", frozenset({"member"}))
    image = await service.create(context, CreateImageRequest(
        name="big", disk_format=DiskFormat.RAW, container_format=ContainerFormat.BARE))
    with pytest.raises(TooLarge, match="full"):
        await service.upload(context, image.id, producer_of(os.urandom(3 << 20)))
    assert (await service.get(context, image.id)).status is Status.QUEUED
    leftovers = [p for p in (tiny_disk / "images").rglob("*") if p.is_file()]
    assert leftovers == []
    # The disk is usable again at once: a small image fits.
    done = await service.upload(context, image.id, producer_of(b"small" * 1000))
    assert done.status is Status.ACTIVE
    await blobs.close()
