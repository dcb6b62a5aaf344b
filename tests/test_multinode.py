"""
Several imaged nodes as one service: two ``twistd imaged`` processes on one PostgreSQL
database and one object store (Swift, then S3 through Swift's s3api), as operators run them
behind a load balancer.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from imaged.testing import TwistdDaemon

pytestmark = pytest.mark.servers  # starts twistd and other real servers

MANAGE = os.path.join(os.path.dirname(sys.executable), "imaged-manage")
MIB = 1024 * 1024


@pytest.fixture(scope="module", params=["swift", "s3"])
def nodes(request: pytest.FixtureRequest, postgres: Any, swift: Any,
          tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[TwistdDaemon, TwistdDaemon]]:
    url = postgres.database("multinode_" + uuid.uuid4().hex[:8])
    subprocess.run([MANAGE, "--database", url, "db", "upgrade"], check=True,
                   capture_output=True)
    key_file = tmp_path_factory.mktemp("secrets") / "key"
    key_file.write_text(swift.key)
    container = "multinode" + uuid.uuid4().hex[:8]
    if request.param == "swift":
        store = ["--store", "swift", "--swift-auth-url", swift.auth_url,
                 "--swift-user", swift.user, "--swift-key-file", str(key_file),
                 "--swift-container", container, "--swift-segment-size", str(4 * MIB)]
    else:
        store = ["--store", "s3", "--s3-endpoint", swift.url, "--s3-bucket", container,
                 "--s3-access-key", swift.user, "--s3-secret-key-file", str(key_file),
                 "--s3-part-size", str(5 * MIB)]
    started = []
    for name in ("a", "b"):
        workdir = tmp_path_factory.mktemp(f"node-{name}")
        started.append(TwistdDaemon(str(workdir), args=[
            "--database", url, "--data-dir", str(workdir), *store]).start())
    yield started[0], started[1]
    for node in started:
        node.stop()


def call(node: TwistdDaemon, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    target = urlparse(node.url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
    sent = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def create(node: TwistdDaemon) -> str:
    code, body = call(node, "POST", "/v2/images",
                      {"name": "mn", "disk_format": "raw", "container_format": "bare"})
    assert code == 201, body
    return str(json.loads(body)["id"])


def upload(node: TwistdDaemon, image_id: str, data: Any, length: int | None = None
           ) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/octet-stream"}
    if length is not None:
        headers["Content-Length"] = str(length)
    return call(node, "PUT", f"/v2/images/{image_id}/file", data, headers)


def test_upload_via_one_node_download_via_the_other(nodes: Any) -> None:
    a, b = nodes
    data = os.urandom(9 * MIB + 5)  # known length above a segment or part: several
    image_id = create(a)
    assert upload(a, image_id, data, len(data))[0] == 204
    code, shown = call(b, "GET", f"/v2/images/{image_id}")
    assert code == 200
    assert json.loads(shown)["status"] == "active"
    assert json.loads(shown)["checksum"] == hashlib.md5(data).hexdigest()
    code, fetched = call(b, "GET", f"/v2/images/{image_id}/file")
    assert code == 200 and fetched == data
    code, part = call(b, "GET", f"/v2/images/{image_id}/file",
                      headers={"Range": f"bytes={4 * MIB - 2}-{4 * MIB + 1}"})
    assert code == 206 and part == data[4 * MIB - 2:4 * MIB + 2]


def test_stage_via_one_node_import_via_the_other(nodes: Any) -> None:
    """Staged data lives in the shared store, not on the node that took it: any node can
    import it (Glance needs os_glance_stage_host and worker-to-worker proxying for this)."""
    a, b = nodes
    data = os.urandom(6 * MIB + 3)
    image_id = create(a)
    code, body = call(a, "PUT", f"/v2/images/{image_id}/stage", data,
                      {"Content-Type": "application/octet-stream"})
    assert code == 204, body
    code, body = call(b, "POST", f"/v2/images/{image_id}/import",
                      {"method": {"name": "glance-direct"}})
    assert code == 202, body
    deadline = time.monotonic() + 60
    while json.loads(call(a, "GET", f"/v2/images/{image_id}")[1])["status"] != "active":
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.05)
    code, fetched = call(a, "GET", f"/v2/images/{image_id}/file")
    assert code == 200 and fetched == data
    code, tasks = call(a, "GET", f"/v2/images/{image_id}/tasks")
    [task] = json.loads(tasks)["tasks"]
    assert task["status"] == "success" and task["result"] == {"image_id": image_id}


def _slow(data: bytes, pieces: int, pause: float) -> Iterator[bytes]:
    size = len(data) // pieces + 1
    for start in range(0, len(data), size):
        yield data[start:start + size]
        time.sleep(pause)


def test_concurrent_uploads_via_both_nodes_one_wins(nodes: Any) -> None:
    a, b = nodes
    image_id = create(a)
    bodies = {"a": os.urandom(3 * MIB), "b": os.urandom(3 * MIB)}
    results: dict[str, tuple[int, bytes]] = {}

    def send(name: str, node: TwistdDaemon) -> None:
        # Chunked and slow, so that both uploads are in flight at once.
        results[name] = upload(node, image_id, _slow(bodies[name], 30, 0.02))

    threads = [threading.Thread(target=send, args=(n, node)) for n, node in
               (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    codes = sorted(code for code, _ in results.values())
    assert codes == [204, 409], results
    winner = next(name for name, (code, _) in results.items() if code == 204)
    for node in (a, b):
        code, fetched = call(node, "GET", f"/v2/images/{image_id}/file")
        assert code == 200 and fetched == bodies[winner]


def test_delete_via_one_node_while_the_other_downloads(nodes: Any, swift: Any) -> None:
    a, b = nodes
    data = os.urandom(12 * MIB)
    image_id = create(a)
    assert upload(a, image_id, data, len(data))[0] == 204

    target = urlparse(a.url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
    connection.request("GET", f"/v2/images/{image_id}/file")
    response = connection.getresponse()
    assert response.status == 200
    first = response.read(256 * 1024)  # the download is under way...

    assert call(b, "DELETE", f"/v2/images/{image_id}")[0] == 204  # ...when B deletes
    rest = b""
    try:
        rest = response.read()
    except (http.client.IncompleteRead, ConnectionError) as e:
        rest = getattr(e, "partial", b"")
    received = first + rest
    # Whatever arrived is the image's bytes, never anything else; the download may be cut.
    assert data.startswith(received)
    connection.close()
    for node in (a, b):
        assert call(node, "GET", f"/v2/images/{image_id}")[0] == 404
        assert call(node, "GET", f"/v2/images/{image_id}/file")[0] == 404
    token, storage = swift.token()
    # s3api removes a deleted multipart object's parts ("+segments") asynchronously, through
    # Swift's object expirer, which this test cluster does not run; everything else is gone.
    listing = [n for n in _swift_names(storage, token) if "+segments/" not in n]
    assert not [name for name in listing if image_id in name], listing


def _swift_names(storage: str, token: str) -> list[str]:
    import urllib.request

    names = []
    request = urllib.request.Request(storage + "?format=json", headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request) as reply:
        containers = [c["name"] for c in json.loads(reply.read())]
    for container in containers:
        request = urllib.request.Request(f"{storage}/{container}?format=json",
                                         headers={"X-Auth-Token": token})
        with urllib.request.urlopen(request) as reply:
            names += [f"{container}/{o['name']}" for o in json.loads(reply.read())]
    return names


def test_nodes_log_where_they_store(nodes: Any) -> None:
    for node in nodes:
        log = Path(node.log_path).read_text()
        assert "Swift container multinode" in log or "S3 bucket multinode" in log
        assert "postgresql+psycopg://postgres@127.0.0.1" in log


@pytest.mark.parametrize("store", [
    ["--store", "swift", "--swift-auth-url", "http://127.0.0.1:1/auth/v1.0",
     "--swift-user", "test:tester"],
    ["--store", "s3", "--s3-endpoint", "http://127.0.0.1:1", "--s3-access-key", "k"],
])
def test_a_store_that_is_down_is_503_and_the_image_stays_queued(
    store: list[str], tmp_path: Path
) -> None:
    env = {"IMAGED_SWIFT_KEY": "x", "IMAGED_S3_SECRET_KEY": "x"}
    node = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path), *store],
                        env=env).start()
    try:
        image_id = create(node)
        code, body = upload(node, image_id, b"x" * 100_000, 100_000)
        assert code == 503, body
        assert b"image store is unavailable" in body
        code, shown = call(node, "GET", f"/v2/images/{image_id}")
        assert json.loads(shown)["status"] == "queued"
        assert call(node, "GET", f"/v2/images/{image_id}/file")[0] == 204
    finally:
        node.stop()


def test_healthcheck_follows_the_database(tmp_path: Path) -> None:
    """A node whose PostgreSQL goes away says so on /healthcheck (load balancers drain it)."""
    from .postgres_server import PostgreSQL

    cluster = PostgreSQL().start()
    try:
        url = cluster.database("health")
        subprocess.run([MANAGE, "--database", url, "db", "upgrade"], check=True,
                       capture_output=True)
        node = TwistdDaemon(str(tmp_path), args=["--database", url, "--data-dir",
                                                 str(tmp_path)]).start()
        try:
            assert call(node, "GET", "/healthcheck") == (200, b"OK")
            cluster.stop()
            assert call(node, "GET", "/healthcheck") == (503, b"DATABASE UNREACHABLE")
        finally:
            node.stop()
    finally:
        cluster.stop()
