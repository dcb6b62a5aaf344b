"""
The IBlobStore contract, run against the file store, the in-memory store, Swift (a real
one on 127.0.0.1, segmenting at 5 MiB so that DATA is a Static Large Object of three
segments when its length is unknown), S3 and RBD (a real one-node Ceph on 127.0.0.1, with
4 MiB objects so that DATA is written as four chunks, several at once).
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
from imaged.store.rbd import RBDBlobStore
from imaged.store.s3 import S3BlobStore
from imaged.store.swift import SwiftBlobStore
from imaged.testing import MemoryBlobStore, producer_of

# Larger than the stream's high-water mark, so writes pause and resume the producer.
DATA = os.urandom(12 * 1024 * 1024 + 17)


SEGMENT = 5 * 1024 * 1024
RBD_CHUNK = 4 * 1024 * 1024


@pytest.fixture(params=[
    "files",
    "memory",
    pytest.param("swift", marks=pytest.mark.servers),
    pytest.param("s3", marks=pytest.mark.servers),
    pytest.param("rbd", marks=pytest.mark.servers),
])
def store(request: Any, tmp_path: Any) -> Any:
    if request.param == "memory":
        yield MemoryBlobStore()
        return
    if request.param == "s3":
        blobs = s3_store(request.getfixturevalue("swift"))
        yield blobs
        pytest_twisted.blockon(blobs.close())
        return
    if request.param == "rbd":
        ceph = request.getfixturevalue("ceph")
        ceph.empty_pool()  # one pool for the session: each test starts with it empty
        blobs = RBDBlobStore.connect(reactor, pool=ceph.pool, user=ceph.user, conf=ceph.conf,
                                     chunk_size=RBD_CHUNK)
        yield blobs
        pytest_twisted.blockon(blobs.close())
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
    elif isinstance(store, S3BlobStore):
        assert await s3_leftovers(store) == ([], [])
    elif isinstance(store, RBDBlobStore):
        assert await store.stored_before(float("inf")) == []  # partial images included
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

    # S3 lists modification times to the second, rounded either way, and librbd gives whole
    # seconds, rounded down: those stores allow a second of doubt, so "old" must be more than
    # two seconds old.
    gap = 2.05 if isinstance(store, S3BlobStore | RBDBlobStore) else 0.05
    old = await store.write("image-old", producer_of(b"old"), "sha512")
    await deferLater(reactor, gap, lambda: None)
    cut = time.time()
    await deferLater(reactor, 0.05, lambda: None)
    await store.write("image-new", producer_of(b"new"), "sha512")
    assert await store.stored_before(cut) == [old.location]


def of_unknown_length(data: bytes, chunk: int) -> Any:
    """A producer of ``data`` that does not say its length (as a chunked upload)."""
    producer = producer_of(data, chunk)
    producer.length = UNKNOWN_LENGTH
    return producer


async def swift_objects(store: SwiftBlobStore) -> list[str]:
    """Every object in the store's containers (segments included)."""
    import treq

    names = []
    for container in (store.container, store.segments):
        response = await store.request("GET", f"/{container}?format=json")
        body = await treq.content(response)
        names += [f"{container}/{o['name']}" for o in (json.loads(body) if body else [])]
    return names


@pytest.mark.servers
@pytest_twisted.ensureDeferred
async def test_swift_segments_large_and_unknown_length_images(swift: Any) -> None:
    store = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor,
                           container="seg" + uuid.uuid4().hex[:8], segment_size=SEGMENT)
    try:
        unknown = of_unknown_length(DATA, 100_000)
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


@pytest.mark.servers
@pytest_twisted.ensureDeferred
async def test_swift_size_cap_midway_leaves_no_segments(swift: Any) -> None:
    store = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor,
                           container="cap" + uuid.uuid4().hex[:8], segment_size=SEGMENT)
    try:
        unknown = of_unknown_length(DATA, 100_000)
        with pytest.raises(TooLarge):
            await store.write("capped", unknown, "sha512", size_cap=SEGMENT + 1024)
        assert await swift_objects(store) == []
    finally:
        await store.close()


@pytest.mark.servers
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


@pytest.mark.servers
@pytest_twisted.ensureDeferred
async def test_swift_refuses_foreign_locations(swift: Any) -> None:
    store = SwiftBlobStore(swift.auth_url, swift.user, swift.key, reactor, container="own")
    try:
        for location in ("swift://other/x", "file:///etc/passwd", "swift://own/a/../b"):
            with pytest.raises(NotFound):
                await store.read(location)
    finally:
        await store.close()


# -- S3 (Swift's s3api: a real S3 implementation that checks SigV4) ----------------------------


def s3_store(swift: Any, **kwargs: Any) -> S3BlobStore:
    options: dict[str, Any] = dict(part_size=SEGMENT)
    options.update(kwargs)
    return S3BlobStore(swift.url, "b" + uuid.uuid4().hex[:12], swift.user, swift.key, reactor,
                       **options)


async def s3_leftovers(store: S3BlobStore) -> tuple[list[str], list[str]]:
    """The bucket's objects, and its multipart uploads not completed nor aborted."""
    from xml.etree import ElementTree

    import treq

    found = []
    for query, tag in (("list-type=2", "Key"), ("uploads", "UploadId")):
        response = await store.request("GET", query=query)
        body = await treq.content(response)
        assert response.code == 200, body
        found.append([e.text for e in ElementTree.fromstring(body).iter()
                      if e.tag.endswith("}" + tag) or e.tag == tag])
    return found[0], found[1]


@pytest.mark.servers
@pytest_twisted.ensureDeferred
async def test_s3_multipart_for_unknown_and_large_lengths(swift: Any) -> None:
    store = s3_store(swift)
    try:
        unknown = of_unknown_length(DATA, 100_000)
        blob = await store.write("big", unknown, "sha512")  # 12 MiB: parts of 5, 5, 2
        assert blob.checksum == hashlib.md5(DATA).hexdigest()
        assert await read(store, blob.location) == DATA
        assert await read(store, blob.location, SEGMENT - 5, 10) == DATA[SEGMENT - 5:SEGMENT + 5]
        known = await store.write("known", producer_of(DATA, 100_000), "sha512")
        assert await read(store, known.location) == DATA
        small = of_unknown_length(b"tiny", 2)
        tiny = await store.write("tiny", small, "sha512")  # less than a part: one PUT
        assert await read(store, tiny.location) == b"tiny"
        keys, uploads = await s3_leftovers(store)
        assert len(keys) == 3 and uploads == []
        for location in (blob.location, known.location, tiny.location):
            await store.delete(location)
        assert await s3_leftovers(store) == ([], [])
    finally:
        await store.close()


@pytest.mark.servers
@pytest_twisted.ensureDeferred
async def test_s3_size_cap_midway_aborts_the_upload(swift: Any) -> None:
    store = s3_store(swift)
    try:
        unknown = of_unknown_length(DATA, 100_000)
        with pytest.raises(TooLarge):
            await store.write("capped", unknown, "sha512", size_cap=SEGMENT + 1024)
        assert await s3_leftovers(store) == ([], [])
    finally:
        await store.close()


@pytest.mark.servers
@pytest_twisted.ensureDeferred
async def test_s3_wrong_secret_or_no_server_is_a_store_failure(swift: Any) -> None:
    for store in (S3BlobStore(swift.url, "bucket", swift.user, "wrong", reactor),
                  S3BlobStore("http://127.0.0.1:1", "bucket", "k", "s", reactor)):
        try:
            with pytest.raises(StoreFailure, match="S3 image store is unavailable"):
                await store.write("nope", producer_of(b"data"), "sha512")
            with pytest.raises(StoreFailure):
                await store.read("s3://bucket/x")
        finally:
            await store.close()


def test_s3_addressing_styles() -> None:
    path = S3BlobStore("https://s3.example.test:9000/", "images", "k", "s", reactor)
    virtual = S3BlobStore("https://s3.example.test", "images", "k", "s", reactor,
                          addressing="virtual", region="eu-west-1")
    assert path.url("a.b") == "https://s3.example.test:9000/images/a.b"
    assert path.url() == "https://s3.example.test:9000/images"
    assert path.url(query="uploads") == "https://s3.example.test:9000/images?uploads"
    assert virtual.url("a.b") == "https://images.s3.example.test/a.b"
    assert virtual.url() == "https://images.s3.example.test/"
    headers = virtual.signer.headers("GET", virtual.url("a.b"), {}, b"")
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=k/")
    assert "/eu-west-1/s3/aws4_request" in headers["Authorization"]
    unsigned = path.signer.headers("PUT", path.url("a.b"), {}, None)
    assert unsigned["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    for store in (path, virtual):
        store.close()
    with pytest.raises(ValueError):
        S3BlobStore("http://x", "b", "k", "s", reactor, part_size=1024)
