"""
Wire tests of streamed uploads: the real Site and protocol over a StringTransport, fed raw
bytes (as Synapse's tests/http/test_site.py).  They also guard the Twisted internals that
imaged/web/streaming.py relies on: if an upgrade changes them, bodies stop streaming and the
"stored before the body ended" assertions fail.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from imaged.api import (
    APIConfig,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    ImageService,
    Limits,
    RequestContext,
    routes,
)
from imaged.hashing import Digests
from imaged.interfaces import IBlobStore
from imaged.model import StoredBlob
from imaged.store.sql import SQLMetadataStore
from imaged.streams import ChunkProducer, consume
from imaged.testing import LOCAL_PEER, MemoryBlobStore, producer_of
from imaged.web.site import make_site

OWNER = {"X-Project-Id": "p1", "X-Roles": "member"}


@implementer(IBlobStore)
class HeldBlobStore:
    """A blob store whose chunk writes wait until the test lets them land."""

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []
        self.landed = 0
        self.blobs: dict[str, bytes] = {}
        self.hold = True

    def write(self, image_id: str, producer: Any, hash_algo: str, size_cap: Any = None) -> Any:
        digests = Digests(hash_algo)
        chunks: list[bytes] = []

        def write_chunk(data: bytes) -> Deferred[None]:
            def land(_: object) -> None:
                digests.update(data)
                chunks.append(data)
                self.landed += len(data)

            if not self.hold:
                land(None)
                return succeed(None)
            d: Deferred[None] = Deferred()
            d.addCallback(land)
            self.pending.append(d)
            return d

        def publish(_: object) -> StoredBlob:
            location = f"held://{image_id}"
            self.blobs[location] = b"".join(chunks)
            return StoredBlob(digests.size, digests.checksum, hash_algo, digests.hash_value,
                              location)

        return consume(producer, write_chunk, size_cap).addCallback(publish)

    def release(self) -> None:
        while self.pending:
            self.pending.pop(0).callback(None)

    def read(self, location: str, offset: int = 0, length: Any = None) -> Any:
        raise NotImplementedError("not used by these tests")

    def delete(self, location: str) -> Any:
        self.blobs.pop(location, None)
        return succeed(None)


class Wire:
    """One HTTP connection to a streaming imaged site, driven byte by byte."""

    def __init__(self, cap: int = 64 * 1024 * 1024) -> None:
        self.blobs = HeldBlobStore()
        self.service = ImageService(SQLMetadataStore.in_memory(), self.blobs,
                                    limits=Limits(image_size_cap=cap))
        api = routes(APIConfig(image_service=self.service, limits=self.service.limits))
        self.site = make_site(api.resource(), body_router=api.bodies)
        self.connect()

    def connect(self) -> None:
        self.protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(peerAddress=LOCAL_PEER)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def headers(self, method: str, path: str, extra: dict[str, str]) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: imaged.test"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def response(self) -> tuple[int, bytes]:
        raw = self.transport.value()
        while raw.startswith(b"HTTP/1.1 100"):
            raw = raw.split(b"\r\n\r\n", 1)[1]
        status = int(raw.split(b" ", 2)[1]) if raw else 0
        return status, raw

    def create(self, **attributes: Any) -> str:
        body = json.dumps({"disk_format": "raw", "container_format": "bare", **attributes})
        self.headers("POST", "/v2/images", {**OWNER, "Content-Length": str(len(body))})
        self.send(body.encode())
        status, raw = self.response()
        assert status == 201, raw
        image_id = json.loads(raw.split(b"\r\n\r\n", 1)[1])["id"]
        self.transport.clear()
        return image_id

    def status_of(self, image_id: str) -> str:
        image = self.service.get(_owner_context(), image_id)
        result: list[Any] = []
        image.addBoth(result.append)
        return result[0].status.value


def _owner_context() -> Any:
    from imaged.context import RequestContext

    return RequestContext.from_roles("p1", None, frozenset({"member"}))


def upload_headers(length: int | None = None, **extra: str) -> dict[str, str]:
    headers = {**OWNER, "Content-Type": "application/octet-stream"}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)
    headers.update(extra)
    return headers


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_body_reaches_the_store_before_it_ends_and_backpressure_pauses_the_socket() -> None:
    wire = Wire()
    image_id = wire.create()
    data = os.urandom(12 * 1024 * 1024)
    wire.headers("PUT", f"/v2/images/{image_id}/file", upload_headers(len(data)))
    assert wire.status_of(image_id) == "saving"  # checked and started on the headers alone
    piece = 64 * 1024
    sent = 0
    while wire.transport.producerState == "producing" and sent < len(data):
        wire.send(data[sent:sent + piece])
        sent += piece
    # The store holds 8 MiB unwritten: the server stopped reading the socket.
    assert wire.transport.producerState == "paused"
    assert sent < len(data)
    assert len(wire.blobs.pending) >= 8
    wire.blobs.release()
    assert wire.transport.producerState == "producing"
    assert wire.blobs.landed > 0  # stored while the body is still arriving
    wire.blobs.hold = False
    wire.send(data[sent:])
    wire.blobs.release()
    status, raw = wire.response()
    assert status == 204, raw
    assert wire.blobs.blobs[f"held://{image_id}"] == data
    assert wire.status_of(image_id) == "active"
    image = wire.service.get(_owner_context(), image_id)
    checksums: list[Any] = []
    image.addCallback(checksums.append)
    assert checksums[0].checksum == hashlib.md5(data).hexdigest()


def test_expect_100_continue_then_upload() -> None:
    wire = Wire()
    wire.blobs.hold = False
    image_id = wire.create()
    wire.headers("PUT", f"/v2/images/{image_id}/file",
                 upload_headers(5, Expect="100-continue"))
    assert wire.transport.value().startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    wire.send(b"hello")
    assert wire.response()[0] == 204
    assert wire.blobs.blobs[f"held://{image_id}"] == b"hello"


@pytest.mark.parametrize(
    "case, code",
    [
        ("missing image", 404),
        ("other project", 404),
        ("not queued", 409),
        ("wrong content type", 415),
        ("declared size over cap", 413),
        ("formats unset", 400),
    ],
)
def test_rejected_uploads_store_nothing(case: str, code: int) -> None:
    wire = Wire(cap=1024 * 1024)
    wire.blobs.hold = False
    image_id = wire.create()
    headers = upload_headers(300_000)
    if case == "missing image":
        image_id = "0b7c9b43-8e31-4f53-8a3c-9f4a3d8b3b11"
    elif case == "other project":
        headers.update({"X-Project-Id": "p2"})
        wire.service.metadata.modify(image_id, lambda i, _: __import__("attrs").evolve(
            i, visibility=__import__("imaged.model", fromlist=["Visibility"]).Visibility.PRIVATE))
    elif case == "not queued":
        wire.headers("PUT", f"/v2/images/{image_id}/file", upload_headers(3))
        wire.send(b"abc")
        assert wire.response()[0] == 204
        wire.transport.clear()
        wire.blobs.blobs.clear()
        wire.blobs.landed = 0
    elif case == "wrong content type":
        headers["Content-Type"] = "application/json"
    elif case == "declared size over cap":
        headers["x-openstack-image-size"] = str(2 * 1024 * 1024)
    elif case == "formats unset":
        image_id = wire.create(disk_format=None, container_format=None)
    wire.headers("PUT", f"/v2/images/{image_id}/file", headers)
    for _ in range(10):
        wire.send(b"x" * 30_000)
    status, raw = wire.response()
    assert status == code, raw
    assert wire.blobs.blobs == {} and wire.blobs.landed == 0
    assert wire.transport.producerState == "producing"


def test_chunked_body_over_the_cap_is_413_and_nothing_is_kept() -> None:
    wire = Wire(cap=1024 * 1024)
    wire.blobs.hold = False
    image_id = wire.create()
    wire.headers("PUT", f"/v2/images/{image_id}/file", upload_headers(None))
    for _ in range(40):
        wire.send(chunked(b"y" * 64 * 1024))
    wire.send(b"0\r\n\r\n")
    status, raw = wire.response()
    assert status == 413, raw
    assert wire.blobs.blobs == {}
    assert wire.status_of(image_id) == "queued"


def test_chunked_upload_within_cap() -> None:
    wire = Wire()
    wire.blobs.hold = False
    image_id = wire.create()
    wire.headers("PUT", f"/v2/images/{image_id}/file", upload_headers(None))
    parts = [os.urandom(10_000) for _ in range(30)]
    for part in parts:
        wire.send(chunked(part))
    wire.send(b"0\r\n\r\n")
    assert wire.response()[0] == 204
    assert wire.blobs.blobs[f"held://{image_id}"] == b"".join(parts)


def test_disconnect_mid_upload_restores_queued_and_keeps_nothing() -> None:
    wire = Wire()
    wire.blobs.hold = False
    image_id = wire.create()
    wire.headers("PUT", f"/v2/images/{image_id}/file", upload_headers(5_000_000))
    wire.send(b"z" * 2_000_000)
    assert wire.status_of(image_id) == "saving"
    wire.protocol.connectionLost(Failure(ConnectionDone("client went away")))
    assert wire.status_of(image_id) == "queued"
    assert wire.blobs.blobs == {}
    # and the image takes a new upload
    wire.connect()
    wire.headers("PUT", f"/v2/images/{image_id}/file", upload_headers(4))
    wire.send(b"done")
    assert wire.response()[0] == 204


def test_router_sees_the_request_line_and_claims_only_uploads() -> None:
    wire = Wire()
    wire.blobs.hold = False
    asked: list[tuple[bytes, bytes, Any]] = []
    router = wire.site.body_router

    def spy(request: Any, method: bytes, path: bytes, length: Any) -> Any:
        stream = router(request, method, path, length)
        asked.append((method, path, stream))
        return stream

    wire.site.body_router = spy
    body = b'{"name": "plain", "disk_format": "raw", "container_format": "bare"}'
    wire.headers("POST", "/v2/images?x=1", {**OWNER, "Content-Length": str(len(body))})
    wire.send(body)
    status, raw = wire.response()
    assert status == 201
    image_id = json.loads(raw.split(b"\r\n\r\n", 1)[1])["id"]
    wire.transport.clear()
    wire.headers("PUT", f"/v2.9/images/{image_id}/file", upload_headers(2))
    wire.send(b"ok")
    assert wire.response()[0] == 204
    # Twisted's pending request line reached the router while the body was still to come.
    assert [(m, p) for m, p, _ in asked] == [
        (b"POST", b"/v2/images?x=1"),
        (b"PUT", f"/v2.9/images/{image_id}/file".encode()),
    ]
    assert asked[0][2] is None and asked[1][2] is not None


def test_a_download_failing_midway_is_cut_never_completed_with_an_error_page() -> None:
    """The store fails after the status line and some bytes went out (a Swift object deleted
    during the download): the client must see a short body, not an error page inside it."""
    class Failing(MemoryBlobStore):
        def read(self, location: str, offset: int = 0, length: Any = None) -> Any:
            def chunk(position: int, size: int) -> Deferred[bytes]:
                if position >= 8192:
                    return Deferred.fromCoroutine(_raise(OSError("store went away")))
                return succeed(b"a" * size)

            return succeed(ChunkProducer(chunk, 0, 65536, chunk=4096))

    async def _raise(error: Exception) -> bytes:
        raise error

    blobs = Failing()
    service = ImageService(SQLMetadataStore.in_memory(), blobs)
    api = routes(APIConfig(image_service=service))
    site = make_site(api.resource(), body_router=api.bodies)
    owner = RequestContext.from_roles("p1", "u1", frozenset({"member"}))
    results: list[Any] = []
    service.create(owner, CreateImageRequest(disk_format=DiskFormat.RAW,
                                             container_format=ContainerFormat.BARE)
                   ).addCallback(results.append)
    image = results[0]
    service.upload(owner, image.id, producer_of(b"a" * 65536)).addCallback(results.append)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=LOCAL_PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(f"GET /v2/images/{image.id}/file HTTP/1.1\r\nHost: x\r\n"
                          "X-Project-Id: p1\r\nX-Roles: member\r\n\r\n".encode())
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 65536" in head
    assert body == b"a" * 8192  # what the store gave, and nothing else
    assert transport.disconnected  # aborted: the client knows the body is short
