"""
The IBlobStore contract, run against the file store, the in-memory store and Swift (a real
one on 127.0.0.1, segmenting at 5 MiB so that DATA is a Static Large Object of three
segments when its length is unknown).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer
from zope.interface.verify import verifyObject

from imaged.errors import NotFound, StoreFailure, TooLarge
from imaged.interfaces import IBlobStore
from imaged.store.files import FileBlobStore
from imaged.store.swift import SwiftBlobStore
from imaged.testing import MemoryBlobStore, producer_of

# Larger than the stream's high-water mark, so writes pause and resume the producer.
DATA = os.urandom(12 * 1024 * 1024 + 17)


SEGMENT = 5 * 1024 * 1024


@pytest.fixture(params=["files", "memory", "swift"])
def store(request: Any, tmp_path: Any) -> Any:
    if request.param == "memory":
        yield MemoryBlobStore()
        return
    if request.param == "swift":
        swift = request.getfixturevalue("swift")
        container = "c" + uuid.uuid4().hex[:12]
        blobs = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor,
                               container=container, segment_size=SEGMENT)
        yield blobs
        pytest_twisted.blockon(blobs.close())
        return
    files = FileBlobStore(str(tmp_path / "blobs"), reactor)
    yield files
    files.close()


@implementer(IConsumer)
class Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


async def read(store: Any, location: str, offset: int = 0, length: Any = None) -> bytes:
    producer = await store.read(location, offset, length)
    collect = Collect()
    await producer.startProducing(collect)
    data = b"".join(collect.chunks)
    assert len(data) == producer.length
    return data


def test_provides_interface(store: Any) -> None:
    assert verifyObject(IBlobStore, store)


@pytest_twisted.ensureDeferred
async def test_write_read_delete(store: Any) -> None:
    blob = await store.write("image-1", producer_of(DATA, 100_000), "sha512")
    assert blob.size == len(DATA)
    assert blob.checksum == hashlib.md5(DATA).hexdigest()
    assert blob.hash_algo == "sha512" and blob.hash_value == hashlib.sha512(DATA).hexdigest()
    assert await read(store, blob.location) == DATA
    assert await read(store, blob.location, 5, 10) == DATA[5:15]
    assert await read(store, blob.location, len(DATA) - 3) == DATA[-3:]
    await store.delete(blob.location)
    with pytest.raises(NotFound):
        await store.read(blob.location)
    await store.delete(blob.location)  # deleting twice is fine


@pytest_twisted.ensureDeferred
async def test_other_hash_algorithm(store: Any) -> None:
    blob = await store.write("image-2", producer_of(b"abc"), "sha256")
    assert blob.hash_value == hashlib.sha256(b"abc").hexdigest()


@pytest_twisted.ensureDeferred
async def test_size_cap(store: Any) -> None:
    with pytest.raises(TooLarge):
        await store.write("image-3", producer_of(DATA, 4096), "sha512", size_cap=len(DATA) - 1)
    blob = await store.write("image-3", producer_of(DATA), "sha512", size_cap=len(DATA))
    assert blob.size == len(DATA)


@pytest_twisted.ensureDeferred
async def test_failed_producer_stores_nothing(store: Any, tmp_path: Any) -> None:
    class Broken:
        length = 10

        def startProducing(self, consumer: Any) -> Deferred[None]:
            consumer.write(b"part" * 300_000)
            d: Deferred[None] = Deferred()
            reactor.callLater(0, d.errback, ConnectionError("gone"))
            return d

        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            pass

    with pytest.raises(ConnectionError):
        await store.write("image-4", Broken(), "sha512")
    if isinstance(store, FileBlobStore):
        leftovers = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
        assert leftovers == []
    elif isinstance(store, SwiftBlobStore):
        assert await swift_objects(store) == []
    else:
        assert store.blobs == {}


@pytest_twisted.ensureDeferred
async def test_read_paused_producer_waits(store: Any) -> None:
    blob = await store.write("image-5", producer_of(DATA), "sha512")
    producer = await store.read(blob.location)
    collect = Collect()
    producer.pauseProducing()
    done = producer.startProducing(collect)
    await _settle()
    assert collect.chunks == []
    producer.resumeProducing()
    await done
    assert b"".join(collect.chunks) == DATA


@pytest_twisted.ensureDeferred
async def test_read_stopped_producer_stops(store: Any) -> None:
    blob = await store.write("image-6", producer_of(DATA), "sha512")
    producer = await store.read(blob.location)

    @implementer(IConsumer)
    class StopAfterFirst(Collect):
        def write(self, data: bytes) -> None:
            super().write(data)
            producer.stopProducing()

    consumer = StopAfterFirst()
    done = producer.startProducing(consumer)
    await _settle()
    assert len(consumer.chunks) == 1 and not done.called


def _settle() -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, 0.05, lambda: None)


def test_file_store_removes_partial_leftovers(tmp_path: Any) -> None:
    root = tmp_path / "blobs"
    (root / ".partial").mkdir(parents=True)
    (root / ".partial" / "crashed.upload").write_bytes(b"half")
    store = FileBlobStore(str(root), reactor)
    try:
        assert list((root / ".partial").iterdir()) == []
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_file_store_refuses_foreign_locations(tmp_path: Any) -> None:
    store = FileBlobStore(str(tmp_path / "blobs"), reactor)
    try:
        with pytest.raises(NotFound):
            await store.read("file:///etc/passwd")
        with pytest.raises(NotFound):
            await store.read("file://" + str(tmp_path / "blobs" / ".." / "x"))
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_file_store_publishes_complete_files_only(tmp_path: Any) -> None:
    store = FileBlobStore(str(tmp_path / "blobs"), reactor)
    try:
        blob = await store.write("image-7", producer_of(DATA), "sha512")
        path = tmp_path / "blobs" / "image-7"
        assert blob.location == "file://" + str(path)
        assert path.read_bytes() == DATA
        assert list((tmp_path / "blobs" / ".partial").iterdir()) == []
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_stored_before(store: Any) -> None:
    import time

    from twisted.internet.task import deferLater

    old = await store.write("image-old", producer_of(b"old"), "sha512")
    await deferLater(reactor, 0.05, lambda: None)
    cut = time.time()
    await deferLater(reactor, 0.05, lambda: None)
    await store.write("image-new", producer_of(b"new"), "sha512")
    assert await store.stored_before(cut) == [old.location]


async def swift_objects(store: SwiftBlobStore) -> list[str]:
    """Every object in the store's containers (segments included)."""
    import treq

    names = []
    for container in (store.container, store.segments):
        response = await store._request(b"GET", f"/{container}?format=json")
        body = await treq.content(response)
        names += [f"{container}/{o['name']}" for o in (json.loads(body) if body else [])]
    return names


@pytest_twisted.ensureDeferred
async def test_swift_segments_large_and_unknown_length_images(swift: Any) -> None:
    store = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor,
                           container="seg" + uuid.uuid4().hex[:8], segment_size=SEGMENT)
    try:
        unknown = producer_of(DATA, 100_000)
        unknown.length = UNKNOWN_LENGTH
        blob = await store.write("big", unknown, "sha512")
        objects = await swift_objects(store)
        segments = [o for o in objects if o.startswith(store.segments + "/")]
        assert len(segments) == 3  # 5 + 5 + 2 MiB
        assert await read(store, blob.location) == DATA
        assert await read(store, blob.location, SEGMENT - 5, 10) == DATA[SEGMENT - 5:SEGMENT + 5]
        small = await store.write("small", producer_of(b"x" * 1000), "sha512")
        assert len(await swift_objects(store)) == 5  # manifest, 3 segments, one plain object
        await store.delete(blob.location)
        await store.delete(small.location)
        assert await swift_objects(store) == []
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_swift_size_cap_midway_leaves_no_segments(swift: Any) -> None:
    store = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor,
                           container="cap" + uuid.uuid4().hex[:8], segment_size=SEGMENT)
    try:
        unknown = producer_of(DATA, 100_000)
        unknown.length = UNKNOWN_LENGTH
        with pytest.raises(TooLarge):
            await store.write("capped", unknown, "sha512", size_cap=SEGMENT + 1024)
        assert await swift_objects(store) == []
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_swift_down_is_a_store_failure(swift: Any) -> None:
    store = SwiftBlobStore("http://127.0.0.1:1/auth/v1.0", swift.user, swift.key, reactor)
    try:
        with pytest.raises(StoreFailure, match="Swift image store is unavailable"):
            await store.write("nowhere", producer_of(b"data"), "sha512")
        with pytest.raises(StoreFailure):
            await store.read("swift://imaged/x")
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_swift_refuses_foreign_locations(swift: Any) -> None:
    store = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor, container="own")
    try:
        for location in ("swift://other/x", "file:///etc/passwd", "swift://own/a/../b"):
            with pytest.raises(NotFound):
                await store.read(location)
    finally:
        await store.close()
