"""
Multi-store with unmodified clients against ``twistd imaged``: a file store, a second file
store and a real Ceph RBD store (``tests/ceph_server.py``) declared as ``[stores.<name>]``
tables.  The ``glance`` CLI (``stores-info``, ``image-create --store``, ``image-import
--import-method copy-image --stores``, ``stores-delete``) and openstacksdk (``stores()``,
``import_image(method='copy-image')``) drive it; an ``rbd clone`` made outside imaged, as
Nova makes one, keeps the image from being deleted (409, nothing removed), and download
falls back to another copy when the preferred store's data is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaged.testing import TwistdDaemon

from .test_clients import GLANCE, OPENSTACK
from .test_import_clients import _id_from_table, glance

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(
        not (os.path.exists(GLANCE) and os.path.exists(OPENSTACK)),
        reason="the [clients] extra is not installed",
    ),
]

DATA = os.urandom(3 * 1024 * 1024 + 11)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, ceph: Any) -> Iterator[TwistdDaemon]:
    work = tmp_path_factory.mktemp("stores")
    config = work / "imaged.conf"
    config.write_text(f'''
default-store = "local"
[stores.local]
type = "file"
description = "This node's disk"
weight = 100
[stores.edge]
type = "file"
description = "The edge site's disk"
directory = "{work / 'edge'}"
weight = 50
{ceph.store_table("ceph", chunk_mib=1, weight=10)}''')
    started = TwistdDaemon(str(work), args=["--auth", "none", "--config", str(config),
                                            "--show-locations"]).start()
    yield started
    started.stop()


def show(daemon: TwistdDaemon, image_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{daemon.url}/v2/images/{image_id}", timeout=30) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


def download(daemon: TwistdDaemon, image_id: str) -> bytes:
    with urllib.request.urlopen(f"{daemon.url}/v2/images/{image_id}/file", timeout=60) as r:
        return bytes(r.read())


def wait_for_stores(daemon: TwistdDaemon, image_id: str, stores: str) -> dict[str, Any]:
    """Poll until the copy's outcome shows (an event, with a deadline)."""
    deadline = time.monotonic() + 60
    while True:
        shown = show(daemon, image_id)
        if shown.get("stores") == stores or time.monotonic() > deadline:
            return shown
        if shown.get("os_glance_failed_import"):
            return shown
        time.sleep(0.1)


def test_glance_cli_over_three_stores(daemon: TwistdDaemon, ceph: Any, tmp_path: Path) -> None:
    info = glance(daemon, "stores-info").stdout
    for name in ("local", "edge", "ceph"):
        assert name in info
    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    out = glance(daemon, "image-create", "--name", "placed", "--disk-format", "raw",
                 "--container-format", "bare", "--file", str(path), "--store", "edge").stdout
    image_id = _id_from_table(out)
    assert show(daemon, image_id)["stores"] == "edge"
    glance(daemon, "image-import", image_id, "--import-method", "copy-image",
           "--stores", "local,ceph")
    shown = wait_for_stores(daemon, image_id, "edge,ceph,local")
    assert shown["stores"] == "edge,ceph,local", shown
    [rbd_location] = [loc["url"] for loc in shown["locations"]
                      if loc["metadata"] == {"store": "ceph"}]
    assert rbd_location == f"rbd://{ceph.fsid}/{ceph.pool}/{image_id}/snap"
    assert image_id in ceph.images()
    glance(daemon, "stores-delete", image_id, "--store", "edge")
    assert show(daemon, image_id)["stores"] == "ceph,local"
    assert hashlib.sha512(download(daemon, image_id)).hexdigest() == shown["os_hash_value"]
    # The preferred copy's data gone (a disk lost): download reads the next store's.
    local = Path(daemon.workdir) / "imaged-data" / "stores" / "local" / image_id
    if not local.exists():
        local = next(Path(daemon.workdir).rglob(image_id))
    local.unlink()
    assert download(daemon, image_id) == DATA
    glance(daemon, "image-delete", image_id)
    assert image_id not in ceph.images()


def test_a_clone_made_outside_keeps_the_image(daemon: TwistdDaemon, ceph: Any,
                                              tmp_path: Path) -> None:
    """Nova's copy-on-write disk: an ``rbd clone`` of the image's snapshot.  Deleting the
    image is refused (409) and leaves it whole; once the clone is gone, it goes."""
    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    out = glance(daemon, "image-create", "--name", "cloned", "--disk-format", "raw",
                 "--container-format", "bare", "--file", str(path), "--store", "ceph").stdout
    image_id = _id_from_table(out)
    before = show(daemon, image_id)
    assert before["stores"] == "ceph"
    clone = f"{ceph.pool}/disk-of-{image_id[:8]}"
    ceph.rbd("clone", f"{ceph.pool}/{image_id}@snap", clone)
    result = glance_check(daemon, "image-delete", image_id)
    # glanceclient's words for Glance's 409 "image in use"
    assert result.returncode != 0 and "because it is in use" in result.stderr
    assert show(daemon, image_id) == before and download(daemon, image_id) == DATA
    ceph.rbd("rm", clone)
    glance(daemon, "image-delete", image_id)
    assert image_id not in ceph.images()


def glance_check(daemon: TwistdDaemon, *args: str) -> Any:
    from .test_import_clients import glance_at

    return glance_at(daemon.url, *args, check=False)


def test_openstacksdk_stores_and_copy_image(daemon: TwistdDaemon, tmp_path: Path) -> None:
    import openstack as sdk

    conn = sdk.connection.Connection(auth_type="none", auth={"endpoint": daemon.url})
    assert [s.id for s in conn.image.stores()] == ["local", "edge", "ceph"]
    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    image = conn.image.create_image(name="sdk", filename=str(path), disk_format="raw",
                                    container_format="bare", wait=True, timeout=60)
    conn.image.import_image(image, method="copy-image", stores=["edge", "ceph"])
    shown = wait_for_stores(daemon, image.id, "local,ceph,edge")
    assert shown["stores"] == "local,ceph,edge"
    assert conn.image.get_image(image).checksum == hashlib.md5(DATA).hexdigest()
    conn.image.delete_image(image)
