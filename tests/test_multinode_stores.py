"""
Two ``twistd imaged`` nodes on one PostgreSQL database with two named stores, Swift and a
real Ceph RBD pool: a copy-image started via one node is watched via the other, and when the
node running a copy is killed (``kill -9``) the other ends its task cleanly: the image keeps
the copies it had, the lock goes, no half copy is listed, and a new copy works.

The nodes run with ``--node-lease 2``: a silent node is taken for dead after 2 s (heartbeats
every 0.5 s) instead of the default 120 s, so the test waits for that event, not for minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from imaged.testing import TwistdDaemon

from .test_multinode import MANAGE, MIB, call, create

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def nodes(postgres: Any, swift: Any, ceph: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TwistdDaemon]]:
    url = postgres.database("stores_" + uuid.uuid4().hex[:8])
    subprocess.run([MANAGE, "--database", url, "db", "upgrade"], check=True,
                   capture_output=True)
    work = tmp_path_factory.mktemp("store-nodes")
    key_file = work / "swift-key"
    key_file.write_text(swift.key)
    config = work / "imaged.conf"
    config.write_text(f'''
database = "{url}"
node-lease = 2.0
show-locations = true
[stores.swift]
type = "swift"
description = "Swift"
auth-url = "{swift.auth_url}"
user = "{swift.user}"
key-file = "{key_file}"
container = "nodes{uuid.uuid4().hex[:8]}"
segment-size = {4 * MIB}
weight = 50
{ceph.store_table("ceph", chunk_mib=4, weight=100)}''')
    started = []
    for name in ("a", "b"):
        workdir = work / name
        workdir.mkdir()
        started.append(TwistdDaemon(str(workdir), args=[
            "--config", str(config), "--data-dir", str(workdir)]).start())
    yield started
    for node in started:
        node.stop()


def upload(node: TwistdDaemon, image_id: str, data: bytes, store: str) -> int:
    code, body = call(node, "PUT", f"/v2/images/{image_id}/file", data, {
        "Content-Type": "application/octet-stream", "X-Image-Meta-Store": store})
    assert code == 204, body
    return code


def show(node: TwistdDaemon, image_id: str) -> dict[str, Any]:
    code, body = call(node, "GET", f"/v2/images/{image_id}")
    assert code == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


def tasks(node: TwistdDaemon, image_id: str) -> list[dict[str, Any]]:
    code, body = call(node, "GET", f"/v2/images/{image_id}/tasks")
    assert code == 200, body
    listed: list[dict[str, Any]] = json.loads(body)["tasks"]
    return listed


def copy(node: TwistdDaemon, image_id: str, *stores: str) -> None:
    code, body = call(node, "POST", f"/v2/images/{image_id}/import",
                      {"method": {"name": "copy-image"}, "stores": list(stores)})
    assert code == 202, body


def last_task_ended(node: TwistdDaemon, image_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll until the image's newest task has ended (an event, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        newest = tasks(node, image_id)[-1]
        if newest["status"] in ("success", "failure"):
            return newest
        assert time.monotonic() < deadline, newest
        time.sleep(0.1)


def test_copy_via_one_node_watched_via_the_other(nodes: list[TwistdDaemon], ceph: Any) -> None:
    a, b = nodes
    data = os.urandom(9 * MIB + 5)
    image_id = create(a)
    upload(a, image_id, data, "swift")
    copy(a, image_id, "ceph")
    task = last_task_ended(b, image_id)
    assert task["status"] == "success", task
    shown = show(b, image_id)
    assert shown["stores"] == "swift,ceph" and "os_glance_import_task" not in shown
    assert f"rbd://{ceph.fsid}/{ceph.pool}/{image_id}/snap" in [
        location["url"] for location in shown["locations"]]
    for prefer in ("ceph", "swift"):
        code, body = call(b, "GET", f"/v2/images/{image_id}/file?prefer={prefer}")
        assert code == 200 and body == data


def test_kill_9_of_the_node_running_a_copy(nodes: list[TwistdDaemon], ceph: Any) -> None:
    a, b = nodes
    data = os.urandom(160 * MIB)
    image_id = create(b)
    upload(b, image_id, data, "swift")
    before = show(b, image_id)
    copy(a, image_id, "ceph")
    a.stop(signal.SIGKILL)  # mid-copy: 160 MiB take seconds, the answer came at once
    task = last_task_ended(b, image_id)
    assert task["status"] == "failure" and "interrupted" in task["message"], task
    shown = show(b, image_id)
    assert shown["stores"] == "swift" and shown["os_glance_failed_import"] == "ceph"
    assert "os_glance_import_task" not in shown
    assert [loc["url"] for loc in shown["locations"]] == [
        loc["url"] for loc in before["locations"]]
    assert image_id not in ceph.images()  # a partial copy is never under the image's name
    code, body = call(b, "GET", f"/v2/images/{image_id}/file")
    assert code == 200 and body == data
    # The lock is gone: the copy can be made again, via the node still alive.
    copy(b, image_id, "ceph")
    assert last_task_ended(b, image_id)["status"] == "success"
    assert show(b, image_id)["stores"] == "swift,ceph"
    code, body = call(b, "GET", f"/v2/images/{image_id}/file?prefer=ceph")
    assert code == 200 and body == data
