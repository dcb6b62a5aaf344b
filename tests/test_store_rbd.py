"""
What only the RBD store does, on a real one-node Ceph (``tests/ceph_server.py``): glance_store's
layout, checked with the raw rbd API; a clone made outside imaged, as Nova makes one, and
what it does to deletion; partial images; connection failures.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface.verify import verifyObject

import imaged.store.rbd as rbd_store
from imaged.errors import Duplicate, InUse, NotFound, StoreFailure, TooLarge
from imaged.interfaces import IBlobStore
from imaged.store.rbd import RBDBlobStore, RBDUnavailable
from imaged.testing import producer_of

from .servers import free_port
from .test_contract_blob_store import of_unknown_length, read

pytestmark = pytest.mark.servers

CHUNK = 4 * 1024 * 1024
DATA = os.urandom(3 * CHUNK + 12345)


@pytest.fixture
def store(ceph: Any) -> Any:
    ceph.empty_pool()
    blobs = RBDBlobStore.connect(reactor, pool=ceph.pool, user=ceph.user, conf=ceph.conf,
                                 chunk_size=CHUNK)
    yield blobs
    pytest_twisted.blockon(blobs.close())


def new_id() -> str:
    return str(uuid.uuid4())


def test_provides_interface(store: RBDBlobStore, ceph: Any) -> None:
    assert verifyObject(IBlobStore, store)
    assert store.where == f"RBD pool {ceph.pool} (cluster {ceph.fsid})"


@pytest.mark.parametrize("known_length", [True, False], ids=["known", "unknown"])
@pytest_twisted.ensureDeferred
async def test_glance_store_layout(store: RBDBlobStore, ceph: Any, known_length: bool) -> None:
    import rbd

    image_id = new_id()
    producer = producer_of(DATA, 100_000) if known_length else of_unknown_length(DATA, 100_000)
    blob = await store.write(image_id, producer, "sha512")
    assert blob.location == f"rbd://{ceph.fsid}/{ceph.pool}/{image_id}/snap"
    assert (blob.size, blob.checksum) == (len(DATA), hashlib.md5(DATA).hexdigest())
    assert blob.hash_value == hashlib.sha512(DATA).hexdigest()
    assert ceph.images() == [image_id]  # no partial image left beside it
    with ceph.admin() as ioctx, rbd.Image(ioctx, image_id, read_only=True) as image:
        assert not image.old_format()
        assert image.features() == rbd.RBD_FEATURE_LAYERING
        assert image.stat()["order"] == 22  # 4 MiB objects
        assert image.size() == len(DATA)  # grown by doubling, then trimmed
        assert [s["name"] for s in image.list_snaps()] == ["snap"]
        assert image.is_protected_snap("snap")
    assert await read(store, blob.location) == DATA


@pytest_twisted.ensureDeferred
async def test_a_clone_made_outside_keeps_the_image(
    store: RBDBlobStore, ceph: Any, tmp_path: Any
) -> None:
    import rbd

    image_id = new_id()
    blob = await store.write(image_id, producer_of(DATA, 100_000), "sha512")
    clone = f"{ceph.pool}/vm-{image_id}-disk"
    # What Nova's RBD image backend does with the location's pool/image@snap.
    ceph.rbd("clone", "--image-feature", "layering", f"{ceph.pool}/{image_id}@snap", clone)
    ceph.rbd("export", "--no-progress", clone, str(tmp_path / "disk"))
    assert (tmp_path / "disk").read_bytes() == DATA

    with pytest.raises(InUse, match="RBD clones depend on it"):
        await store.delete(blob.location)
    assert ceph.images() == sorted([image_id, clone.split("/")[1]])
    with ceph.admin() as ioctx, rbd.Image(ioctx, image_id, read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == ["snap"]
        assert image.is_protected_snap("snap")
    assert await read(store, blob.location) == DATA

    ceph.rbd("rm", "--no-progress", clone)
    await store.delete(blob.location)
    assert ceph.images() == []


@pytest_twisted.ensureDeferred
async def test_other_snapshots_keep_the_image(store: RBDBlobStore, ceph: Any) -> None:
    import rbd

    image_id = new_id()
    blob = await store.write(image_id, producer_of(b"data"), "sha512")
    ceph.rbd("snap", "create", f"{ceph.pool}/{image_id}@backup")
    with pytest.raises(InUse, match="other RBD snapshots: backup"):
        await store.delete(blob.location)
    with ceph.admin() as ioctx, rbd.Image(ioctx, image_id, read_only=True) as image:
        assert [s["name"] for s in image.list_snaps()] == ["snap", "backup"]
        assert image.is_protected_snap("snap")


class Broken:
    """Writes 10 MiB, then fails, as a client that goes away mid-upload."""

    length = 20 * 1024 * 1024

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for _ in range(10):
            consumer.write(os.urandom(1024 * 1024))
        d: Deferred[None] = Deferred()
        reactor.callLater(0, d.errback, ConnectionError("gone"))
        return d

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_failed_writes_leave_no_image(store: RBDBlobStore, ceph: Any) -> None:
    with pytest.raises(ConnectionError):
        await store.write(new_id(), Broken(), "sha512")
    assert ceph.images() == []
    with pytest.raises(TooLarge):
        await store.write(new_id(), of_unknown_length(DATA, 100_000), "sha512",
                          size_cap=CHUNK + 1000)
    assert ceph.images() == []


@pytest_twisted.ensureDeferred
async def test_a_cancelled_write_leaves_no_image(store: RBDBlobStore, ceph: Any) -> None:
    started: Deferred[None] = Deferred()

    class Stalled:
        """Writes 10 MiB, then nothing more (a client gone quiet)."""

        length = UNKNOWN_LENGTH

        def startProducing(self, consumer: Any) -> Deferred[None]:
            for _ in range(10):
                consumer.write(os.urandom(1024 * 1024))
            started.callback(None)
            return Deferred()

        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            pass

    writing = store.write(new_id(), Stalled(), "sha512")
    await started  # the partial image exists, chunks are being written
    # From the reactor, as a disconnect does, not from inside startProducing: the store's
    # coroutine must be waiting for something to be cancelled.
    await deferLater(reactor, 0, lambda: None)
    writing.cancel()
    with pytest.raises(CancelledError):
        await writing  # which fires once the partial image is gone
    assert ceph.images() == []


@pytest_twisted.ensureDeferred
async def test_declared_length_is_not_allocated_up_front(
    store: RBDBlobStore, ceph: Any
) -> None:
    """A client declaring a terabyte gets an image that grows with what it sends: had the
    image been made a terabyte, trimming it (as removing it) would walk 262,144 objects."""
    producer = producer_of(DATA, 100_000)
    producer.length = 1024**4
    blob = await store.write(new_id(), producer, "sha512")
    assert blob.size == len(DATA)
    assert await read(store, blob.location) == DATA


@pytest_twisted.ensureDeferred
async def test_an_image_is_written_once(store: RBDBlobStore, ceph: Any) -> None:
    image_id = new_id()
    await store.write(image_id, producer_of(b"first"), "sha512")
    with pytest.raises(Duplicate):
        await store.write(image_id, producer_of(b"second"), "sha512")
    assert ceph.images() == [image_id]


@pytest_twisted.ensureDeferred
async def test_ranged_reads(store: RBDBlobStore) -> None:
    blob = await store.write(new_id(), of_unknown_length(DATA, 65536), "sha512")
    size = len(DATA)
    for offset, length in [
        (0, 1), (5, 10), (CHUNK - 3, 6), (CHUNK + 1, 2 * CHUNK), (1, size - 2),
        (size - 3, None), (size - 3, 100), (3 * CHUNK, None), (size, None), (size + 5, 7),
        (7, 0),
    ]:
        end = size if length is None else offset + length
        assert await read(store, blob.location, offset, length) == DATA[offset:end], (
            offset, length)


@pytest_twisted.ensureDeferred
async def test_missing_images_are_not_found(store: RBDBlobStore, ceph: Any) -> None:
    missing = f"rbd://{ceph.fsid}/{ceph.pool}/{new_id()}/snap"
    with pytest.raises(NotFound):
        await store.read(missing)
    with pytest.raises(NotFound):
        await store.read(missing, 0, 0)
    await store.delete(missing)  # nothing to delete is fine
    blob = await store.write(new_id(), producer_of(b"data"), "sha512")
    with pytest.raises(NotFound):
        await store.read(blob.location.replace("/snap", "/other"))
    with pytest.raises(NotFound):
        await store.read(f"rbd://{ceph.fsid}/elsewhere/{new_id()}/snap")


@pytest_twisted.ensureDeferred
async def test_owns_and_legacy_locations(store: RBDBlobStore, ceph: Any) -> None:
    image_id = new_id()
    blob = await store.write(image_id, producer_of(b"legacy"), "sha512")
    other_fsid = str(uuid.uuid4())
    assert store.owns(blob.location)
    assert store.owns(f"rbd://{image_id}")  # glance_store's legacy form: the default pool
    assert store.owns(f"rbd://{ceph.fsid}/{ceph.pool}/a%2Fb/snap")
    for foreign in [
        f"rbd://{other_fsid}/{ceph.pool}/{image_id}/snap",
        f"rbd://{ceph.fsid}/volumes/{image_id}/snap",
        f"rbd://{ceph.fsid}/{ceph.pool}/{image_id}",
        f"rbd://{ceph.fsid}//{image_id}/snap",
        "rbd://",
        f"swift://imaged/{image_id}",
        f"file:///var/lib/imaged/{image_id}",
    ]:
        assert not store.owns(foreign), foreign
    assert await read(store, f"rbd://{image_id}") == b"legacy"  # the image itself, no snap


@pytest_twisted.ensureDeferred
async def test_stored_before_lists_partial_leftovers(store: RBDBlobStore, ceph: Any) -> None:
    image_id = new_id()
    blob = await store.write(image_id, producer_of(b"complete"), "sha512")
    # An upload cut short by a crash leaves its partial image.
    partial = f"{new_id()}.partial-{uuid.uuid4().hex}"
    ceph.rbd("create", "--size", "4M", "--image-feature", "layering", f"{ceph.pool}/{partial}")
    # An image this store did not make (no snapshot "snap") is never a candidate.
    ceph.rbd("create", "--size", "4M", f"{ceph.pool}/not-ours")
    leftover = f"rbd://{ceph.fsid}/{ceph.pool}/{partial}/snap"
    assert sorted(await store.stored_before(time.time() + 2)) == sorted([blob.location, leftover])
    assert await store.stored_before(time.time() - 60) == []
    await store.delete(leftover)
    assert ceph.images() == sorted([image_id, "not-ours"])


@pytest_twisted.ensureDeferred
async def test_ping(store: RBDBlobStore, ceph: Any) -> None:
    await store.ping()
    await store.close()
    with pytest.raises(StoreFailure, match=f"RBD pool images at {ceph.conf}: not connected"):
        await store.ping()
    with pytest.raises(StoreFailure):
        await store.read(f"rbd://{ceph.fsid}/{ceph.pool}/x/snap")


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and error.__cause__ is None and error.__suppress_context__
    return message


def test_unreachable_cluster(ceph: Any, tmp_path: Any) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text(
        f"[global]\nmon host = [v2:127.0.0.1:{free_port()}]\n[client]\n"
        f"keyring = {ceph.keyring}\nlog file = {tmp_path}/client.log\n"
        f"admin socket = {tmp_path}/client.asok\nerr to stderr = false\n"
    )
    started = time.monotonic()
    with pytest.raises(RBDUnavailable) as caught:
        RBDBlobStore.connect(reactor, conf=str(conf), connect_timeout=1)
    assert time.monotonic() - started < 10
    assert one_line(caught.value) == (
        f"cannot use RBD pool images as client.imaged with {conf}: no answer from the "
        "monitors in 1 s"
    )


def test_refused_or_missing_pool(ceph: Any, tmp_path: Any) -> None:
    with pytest.raises(RBDUnavailable) as caught:
        RBDBlobStore.connect(reactor, conf=ceph.conf, user="intruder", connect_timeout=2)
    assert one_line(caught.value).endswith(": the monitors refused access (is the keyring "
                                           "right, and the user's caps?)")
    with pytest.raises(RBDUnavailable) as caught:
        RBDBlobStore.connect(reactor, conf=ceph.conf, pool="nowhere", connect_timeout=2)
    assert one_line(caught.value) == (
        f"cannot use RBD pool nowhere as client.imaged with {ceph.conf}: there is no pool "
        "nowhere"
    )
    with pytest.raises(RBDUnavailable, match=r"configuration: .*conf_read_file"):
        RBDBlobStore.connect(reactor, conf=str(tmp_path / "missing.conf"))


def test_missing_bindings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setitem(sys.modules, "rados", None)  # import rados: ImportError
    monkeypatch.setitem(sys.modules, "rbd", None)
    monkeypatch.setattr(rbd_store, "DEBIAN_BINDINGS", str(tmp_path))
    with pytest.raises(RBDUnavailable) as caught:
        RBDBlobStore(reactor)
    assert one_line(caught.value).startswith(
        "the rbd store needs Ceph's Python bindings: apt install python3-rbd python3-rados ("
    )


DEBIAN_RBD = os.path.join(rbd_store.DEBIAN_BINDINGS, "rbd.cpython-311-x86_64-linux-gnu.so")


@pytest.mark.skipif(
    not os.path.exists(DEBIAN_RBD) or sys.implementation.cache_tag != "cpython-311",
    reason="needs Debian's python3-rbd built for this interpreter",
)
def test_debian_bindings_outside_the_virtualenv(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_here(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.delitem(sys.modules, "rados", raising=False)
    monkeypatch.delitem(sys.modules, "rbd", raising=False)
    monkeypatch.setattr(rbd_store.importlib, "import_module", not_here)
    store = RBDBlobStore(reactor)
    assert store._rbd.__spec__.origin == DEBIAN_RBD
    assert store.features == store._rbd.RBD_FEATURE_LAYERING


def test_chunk_size_must_be_an_object_size() -> None:
    for size in (5 * 1024 * 1024, 1024, 64 * 1024 * 1024):
        with pytest.raises(ValueError):
            RBDBlobStore(reactor, chunk_size=size)


@pytest_twisted.ensureDeferred
async def test_cluster_gone_is_a_store_failure() -> None:
    """A second cluster, stopped under a connected store: each request fails in bounded time."""
    from .ceph_server import Ceph

    server = Ceph()
    try:
        cluster = server.start()
        store = RBDBlobStore.connect(reactor, pool=cluster.pool, user=cluster.user,
                                     conf=cluster.conf, connect_timeout=1)
        blob = await store.write(new_id(), producer_of(b"data"), "sha512")
    finally:
        server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreFailure, match="RBD image store is unavailable"):
            await store.write(new_id(), producer_of(b"data"), "sha512")
        with pytest.raises(StoreFailure):
            await store.read(blob.location)
        with pytest.raises(StoreFailure, match=f"RBD pool images at {cluster.conf}: "):
            await store.ping()
        assert time.monotonic() - started < 30
    finally:
        await store.close()
