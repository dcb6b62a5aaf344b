"""
The Swift and S3 blob stores against in-memory fakes: their failure paths, no sockets, no sleep.

A ``FakeAgent`` (an ``IAgent``) hands each request to a small fake Swift or fake S3 that keeps
objects in dicts, unless a scripted fault answers first (a 5xx, a 401, a refused connection,
no answer at all).  Deadlines run on a ``Clock``; the hashing threads' results come back through
``FakeReactor.callFromThread`` into a queue that ``FakeReactor.wait`` drains, so every test
drives its Deferreds synchronously.  The real-server contract tests are in
``test_contract_blob_store.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from imaged.errors import NotFound, StoreFailure, TooLarge
from imaged.interfaces import IBlobStore
from imaged.store.s3 import MIN_PART, S3BlobStore
from imaged.store.swift import SwiftBlobStore
from imaged.testing import producer_of

MiB = 1024 * 1024
SEGMENT = MiB
TIMEOUT = 60.0


# -- the harness -------------------------------------------------------------------------------


class FakeReactor(Clock):
    """A ``Clock`` for deadlines, and a queue for what the hashing threads hand back."""

    def __init__(self) -> None:
        super().__init__()
        self._from_threads: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._from_threads.put((f, args, kwargs))

    def wait_for(self, condition: Callable[[], object]) -> None:
        """Run the threads' callbacks, as they come, until ``condition()`` holds."""
        while not condition():
            f, args, kwargs = self._from_threads.get(timeout=30)  # a hang fails the test
            f(*args, **kwargs)

    def wait(self, d: Deferred[Any]) -> Any:
        """``d``'s result (or its failure, raised), running the threads' callbacks meanwhile."""
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        self.wait_for(lambda: outcome)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]


@implementer(IResponse)
class FakeResponse:
    """A whole response, delivered at once to whoever asks for the body."""

    version = (b"HTTP", 1, 1)
    phrase = b"Fake"
    request = None
    previousResponse = None

    def __init__(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 length: Any = None) -> None:
        self.code = code
        self.body = body
        self.headers = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        self.length = len(body) if length is None else length

    def deliverBody(self, protocol: Protocol) -> None:
        protocol.makeConnection(StringTransport())  # pausing it does nothing: all is here
        if self.body:
            protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response: IResponse) -> None:
        pass


class Seen:
    """One request as the fake received it."""

    def __init__(self, method: str, url: str, headers: Headers) -> None:
        self.method, self.url, self.headers = method, url, headers
        parts = urlsplit(url)
        self.path = unquote(parts.path)
        self.query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.body = bytearray()

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return None if values is None else values[0]

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.query}"


@implementer(IConsumer)
class _Receive:
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.seen.body += data


#: What a fault answers: a response, an error, or a Deferred (never firing: no answer at all).
Answer = FakeResponse | Exception | Deferred[Any]


@implementer(IAgent)
class FakeAgent:
    """Requests go to ``server`` once their body is complete, unless a fault answers first."""

    def __init__(self, server: Callable[[Seen], FakeResponse]) -> None:
        self.server = server
        self.seen: list[Seen] = []
        self._faults: list[tuple[Callable[[Seen], bool], Answer, bool]] = []

    def fault(self, when: Callable[[Seen], bool], answer: Answer, early: bool = False) -> None:
        """The next request ``when`` matches gets ``answer`` (at once if ``early``)."""
        self._faults.append((when, answer, early))

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[IResponse]:
        seen = Seen(method.decode(), uri.decode(), headers or Headers())
        self.seen.append(seen)
        answer: Answer | None = None
        early = False
        for fault in self._faults:
            if fault[0](seen):
                self._faults.remove(fault)
                _, answer, early = fault
                break
        answered: Deferred[IResponse] = Deferred()
        if bodyProducer is None or early:
            self._respond(answered, seen, answer)
        if bodyProducer is not None:
            produced = bodyProducer.startProducing(_Receive(seen))
            produced.addCallbacks(lambda _: self._respond(answered, seen, answer),
                                  lambda f: self._settle(answered, f))
        return answered

    def _respond(self, answered: Deferred[Any], seen: Seen, answer: Answer | None) -> None:
        if isinstance(answer, Deferred):
            answer.addBoth(lambda result: self._settle(answered, result))
        else:
            self._settle(answered, self.server(seen) if answer is None else answer)

    def _settle(self, answered: Deferred[Any], result: Any) -> None:
        if answered.called:
            return
        if isinstance(result, Exception | Failure):
            answered.errback(result)
        else:
            answered.callback(result)

    def count(self, method: str, path: str = "", **query: str) -> int:
        """The requests seen with ``method``, a path ending in ``path``, and ``query``
        (``multipart_manifest`` for ``multipart-manifest``)."""
        wanted = {k.replace("_", "-"): v for k, v in query.items()}
        return len([s for s in self.seen if s.method == method and s.path.endswith(path)
                    and all(s.query.get(k) == v for k, v in wanted.items())])


def _ranged(data: bytes, seen: Seen, headers: dict[str, str] | None = None) -> FakeResponse:
    """A GET or HEAD of ``data``, honouring ``Range: bytes=a-b`` as Swift and S3 do."""
    if seen.method == "HEAD":
        return FakeResponse(200, headers=headers)
    spec = seen.header("Range")
    if spec is None:
        return FakeResponse(200, data, headers)
    first, _, last = spec.removeprefix("bytes=").partition("-")
    start, end = int(first), int(last) + 1 if last else len(data)
    if start >= len(data):
        return FakeResponse(416)
    return FakeResponse(206, data[start:end], headers)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- a fake Swift ------------------------------------------------------------------------------


AUTH_URL = "http://swift.test/auth/v1.0"
ACCOUNT = "/v1/AUTH_test"


class FakeSwift:
    """tempauth, containers, plain objects and Static Large Objects, JSON listings."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}  # "container/name" -> bytes
        self.manifests: dict[str, list[dict[str, Any]]] = {}
        self.modified: dict[str, float] = {}
        self.containers: set[str] = set()
        self.tokens: set[str] = set()
        self.logins = 0
        self.now = 1_700_000_000.0
        self.agent = FakeAgent(self)

    def __call__(self, seen: Seen) -> FakeResponse:
        if seen.path == "/auth/v1.0":
            if (seen.header("X-Auth-User"), seen.header("X-Auth-Key")) != ("test:tester", "pw"):
                return FakeResponse(401)
            self.logins += 1
            token = f"token-{self.logins}"
            self.tokens.add(token)
            return FakeResponse(200, headers={"X-Auth-Token": token,
                                              "X-Storage-Url": "http://swift.test" + ACCOUNT})
        if seen.header("X-Auth-Token") not in self.tokens:
            return FakeResponse(401)
        name = seen.path.removeprefix(ACCOUNT + "/")
        if "/" not in name:
            return self._container(seen, name)
        if seen.method == "PUT":
            return self._put(seen, name)
        if seen.method == "DELETE":
            return self._delete(seen, name)
        if name in self.manifests:
            data = b"".join(self.objects[s["path"].lstrip("/")] for s in self.manifests[name])
            return _ranged(data, seen, {"X-Static-Large-Object": "True"})
        if name in self.objects:
            return _ranged(self.objects[name], seen)
        return FakeResponse(404)

    def _container(self, seen: Seen, container: str) -> FakeResponse:
        if seen.method == "PUT":
            self.containers.add(container)
            return FakeResponse(201)
        marker = seen.query.get("marker", "")
        names = sorted(n for n in {*self.objects, *self.manifests}
                       if n.startswith(container + "/") and n > f"{container}/{marker}")
        listing = [{"name": n.split("/", 1)[1], "last_modified": _iso(self.modified[n])}
                   for n in names[:2]]  # two a page, so that paging is exercised
        return FakeResponse(200, json.dumps(listing).encode())

    def _put(self, seen: Seen, name: str) -> FakeResponse:
        body = bytes(seen.body)
        self.modified[name] = self.now
        if seen.query.get("multipart-manifest") == "put":
            segments = json.loads(body)
            for segment in segments:
                stored = self.objects[segment["path"].lstrip("/")]
                assert segment["etag"] == _md5(stored) and segment["size_bytes"] == len(stored)
            self.manifests[name] = segments
        else:
            self.objects[name] = body
        return FakeResponse(201, headers={"ETag": f'"{_md5(body)}"'})

    def _delete(self, seen: Seen, name: str) -> FakeResponse:
        if seen.query.get("multipart-manifest") == "delete" and name in self.manifests:
            for segment in self.manifests.pop(name):
                self.objects.pop(segment["path"].lstrip("/"), None)
            return FakeResponse(200, json.dumps({"Response Status": "200 OK",
                                                 "Errors": []}).encode())
        if self.objects.pop(name, None) is None and self.manifests.pop(name, None) is None:
            return FakeResponse(404)
        return FakeResponse(204)

    def stored(self) -> list[str]:
        return sorted({*self.objects, *self.manifests})


def _iso(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None).isoformat()


# -- a fake S3 ---------------------------------------------------------------------------------


S3_URL = "http://s3.test"
NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _xml(tag: str, **children: str) -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in children.items())
    return f'<{tag} xmlns="{NS}">{inner}</{tag}>'.encode()


class FakeS3:
    """One bucket, path-style: objects, multipart uploads, ListObjectsV2."""

    def __init__(self) -> None:
        self.bucket_exists = False
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, str] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.wrong_etag = False
        self.now = "2024-01-01T00:00:10.000Z"
        self.agent = FakeAgent(self)

    def __call__(self, seen: Seen) -> FakeResponse:
        assert (seen.header("Authorization") or "").startswith("AWS4-HMAC-SHA256")
        key = seen.path.removeprefix("/images").lstrip("/")
        if not key:
            return self._bucket(seen)
        upload = seen.query.get("uploadId")
        if seen.method == "POST" and "uploads" in seen.query:
            upload = f"upload-{len(self.uploads) + 1}"
            self.uploads[upload] = {}
            return FakeResponse(200, _xml("InitiateMultipartUploadResult", UploadId=upload))
        if upload is not None and upload not in self.uploads:
            return FakeResponse(404, _xml("Error", Code="NoSuchUpload"))
        if seen.method == "PUT" and upload:
            self.uploads[upload][int(seen.query["partNumber"])] = bytes(seen.body)
            return FakeResponse(200, headers={"ETag": f'"{_md5(bytes(seen.body))}"'})
        if seen.method == "POST" and upload:
            numbers = [int(e.text or "") for e in ElementTree.fromstring(seen.body).iter()
                       if e.tag == "PartNumber"]
            parts = self.uploads.pop(upload)
            return self._store(key, b"".join(parts[n] for n in numbers), 200,
                               _xml("CompleteMultipartUploadResult", Key=key))
        if seen.method == "DELETE" and upload:
            del self.uploads[upload]
            return FakeResponse(204)
        if seen.method == "PUT":
            assert seen.header("X-Amz-Content-SHA256") == "UNSIGNED-PAYLOAD"
            return self._store(key, bytes(seen.body), 200, b"")
        if seen.method == "DELETE":
            self.objects.pop(key, None)
            return FakeResponse(204)
        if key in self.objects:
            return _ranged(self.objects[key], seen)
        return FakeResponse(404, b"" if seen.method == "HEAD" else _xml("Error", Code="NoSuchKey"))

    def stored(self) -> list[str]:
        return sorted(self.objects)

    def _bucket(self, seen: Seen) -> FakeResponse:
        if seen.method == "PUT":
            self.bucket_exists = True
            return FakeResponse(200)
        if seen.method == "HEAD":
            return FakeResponse(200 if self.bucket_exists else 404)
        contents = "".join(
            f"<Contents><Key>{k}</Key><LastModified>{self.modified[k]}</LastModified></Contents>"
            for k in sorted(self.objects)
        )
        return FakeResponse(200, f'<ListBucketResult xmlns="{NS}">{contents}'
                                 "<IsTruncated>false</IsTruncated></ListBucketResult>".encode())

    def _store(self, key: str, data: bytes, code: int, body: bytes) -> FakeResponse:
        self.objects[key] = data
        self.modified[key] = self.now
        etag = "0" * 32 if self.wrong_etag else _md5(data)
        return FakeResponse(code, body, {"ETag": f'"{etag}"'})


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def reactor() -> FakeReactor:
    return FakeReactor()


@pytest.fixture
def swift() -> FakeSwift:
    return FakeSwift()


@pytest.fixture
def s3() -> FakeS3:
    return FakeS3()


@pytest.fixture
def swift_store(reactor: FakeReactor, swift: FakeSwift) -> Iterator[SwiftBlobStore]:
    store = SwiftBlobStore(AUTH_URL, "test:tester", "pw", reactor, segment_size=SEGMENT,
                           timeout=TIMEOUT, agent=swift.agent)
    yield store
    reactor.wait(store.close())


@pytest.fixture
def s3_store(reactor: FakeReactor, s3: FakeS3) -> Iterator[S3BlobStore]:
    store = S3BlobStore(S3_URL, "images", "key", "secret", reactor, timeout=TIMEOUT,
                        part_size=MIN_PART, agent=s3.agent)
    yield store
    reactor.wait(store.close())


def unknown_length(data: bytes) -> IBodyProducer:
    producer = producer_of(data, 100_000)
    producer.length = UNKNOWN_LENGTH
    return producer


def read(reactor: FakeReactor, store: Any, location: str, offset: int = 0,
         length: int | None = None) -> bytes:
    producer = reactor.wait(store.read(location, offset, length))
    received = _Receive(Seen("GET", "", Headers()))
    reactor.wait(producer.startProducing(received))
    assert len(received.seen.body) == producer.length
    return bytes(received.seen.body)


def check_digests(blob: Any, data: bytes) -> None:
    assert blob.size == len(data)
    assert blob.checksum == _md5(data)
    assert blob.hash_algo == "sha512" and blob.hash_value == hashlib.sha512(data).hexdigest()


def is_method(method: str, within: str = "") -> Callable[[Seen], bool]:
    return lambda seen: seen.method == method and within in seen.path


def is_part(number: int) -> Callable[[Seen], bool]:
    return lambda seen: seen.method == "PUT" and seen.query.get("partNumber") == str(number)


def is_segment(number: int) -> Callable[[Seen], bool]:
    return lambda seen: seen.method == "PUT" and seen.path.endswith(f"/{number:08d}")


SEGMENTED = os.urandom(2 * SEGMENT + 1000)  # three segments
MULTIPART = os.urandom(2 * MIN_PART + 1000)  # three parts


# -- both stores ------------------------------------------------------------------------------


def test_both_provide_the_interface(swift_store: SwiftBlobStore, s3_store: S3BlobStore) -> None:
    assert verifyObject(IBlobStore, swift_store)
    assert verifyObject(IBlobStore, s3_store)


@pytest.mark.parametrize("kind", ["swift", "s3"])
def test_requests_without_a_body_have_a_deadline(
    kind: str, reactor: FakeReactor, request: pytest.FixtureRequest
) -> None:
    fake, store = request.getfixturevalue(kind), request.getfixturevalue(kind + "_store")
    blob = reactor.wait(store.write("img", producer_of(b"data"), "sha512"))
    delete = "HEAD" if kind == "swift" else "DELETE"  # Swift asks whether it is an SLO first
    for method, call in (("GET", lambda: store.read(blob.location)),
                         ("HEAD", lambda: store.read(blob.location, 0, 0)),
                         (delete, lambda: store.delete(blob.location))):
        fake.agent.fault(is_method(method), Deferred())  # never answers
        pending = call()
        reactor.advance(TIMEOUT - 1)
        assert not pending.called
        reactor.advance(1)
        with pytest.raises(StoreFailure, match=f"{method}: no answer in 60 s"):
            reactor.wait(pending)
    assert len(fake.stored()) == 1


@pytest.mark.parametrize(("kind", "writing", "reading", "location"), [
    ("swift", "auth", "auth", "swift://imaged/x"),  # Swift logs in first
    ("s3", "HEAD", "GET", "s3://images/x"),  # S3 asks whether the bucket exists first
])
def test_connection_refused_is_a_store_failure(
    kind: str, writing: str, reading: str, location: str, reactor: FakeReactor,
    request: pytest.FixtureRequest,
) -> None:
    fake, store = request.getfixturevalue(kind), request.getfixturevalue(kind + "_store")
    fake.agent.fault(lambda s: True, ConnectionRefusedError())
    with pytest.raises(StoreFailure, match=rf"image store is unavailable \({writing}: Connection"):
        reactor.wait(store.write("img", producer_of(b"data"), "sha512"))
    fake.agent.fault(lambda s: True, ConnectionRefusedError())
    with pytest.raises(StoreFailure, match=rf"\({reading}: Connection"):
        reactor.wait(store.read(location))
    assert fake.stored() == []


# -- Swift -------------------------------------------------------------------------------------


def test_swift_single_object(reactor: FakeReactor, swift: FakeSwift,
                             swift_store: SwiftBlobStore) -> None:
    data = os.urandom(300_000)
    blob = reactor.wait(swift_store.write("img", producer_of(data), "sha512"))
    check_digests(blob, data)
    assert blob.location.startswith("swift://imaged/img.")
    assert swift.stored() == [blob.location.removeprefix("swift://")]
    assert swift.containers == {"imaged", "imaged_segments"}
    assert read(reactor, swift_store, blob.location) == data
    assert reactor.getDelayedCalls() == []  # every deadline was cancelled with its answer


def test_swift_segmented_upload_writes_segments_then_manifest(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    blob = reactor.wait(swift_store.write("big", unknown_length(SEGMENTED), "sha512"))
    check_digests(blob, SEGMENTED)
    name = blob.location.removeprefix("swift://imaged/")
    assert [s["size_bytes"] for s in swift.manifests["imaged/" + name]] == [
        SEGMENT, SEGMENT, 1000]
    assert len([o for o in swift.objects if o.startswith("imaged_segments/")]) == 3
    assert [s.method for s in swift.agent.seen][-1] == "PUT"  # the manifest comes last
    assert swift.agent.seen[-1].query == {"multipart-manifest": "put"}
    assert read(reactor, swift_store, blob.location) == SEGMENTED
    assert read(reactor, swift_store, blob.location, SEGMENT - 5, 10) == SEGMENTED[
        SEGMENT - 5:SEGMENT + 5]
    reactor.wait(swift_store.delete(blob.location))
    assert swift.stored() == []


def test_swift_5xx_on_a_segment_removes_the_segments_written(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    swift.agent.fault(is_segment(2), FakeResponse(503))
    with pytest.raises(StoreFailure, match=r"Swift image store is unavailable \(PUT: HTTP 503"):
        reactor.wait(swift_store.write("big", unknown_length(SEGMENTED), "sha512"))
    assert swift.stored() == []
    assert swift.agent.count("DELETE", "/00000001") == 1
    assert swift.agent.count("PUT", multipart_manifest="put") == 0


def test_swift_answer_before_the_body_is_a_refusal(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    swift.agent.fault(lambda s: s.method == "PUT" and "/imaged/img." in s.path,
                      FakeResponse(413), early=True)
    with pytest.raises(StoreFailure, match="HTTP 413"):
        reactor.wait(swift_store.write("img", producer_of(b"x" * (3 * MiB // 4)), "sha512"))
    assert swift.stored() == []


def test_swift_manifest_refused_removes_the_segments(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    swift.agent.fault(lambda s: s.query.get("multipart-manifest") == "put",
                      FakeResponse(400, b"bad manifest"))
    with pytest.raises(StoreFailure, match="manifest: HTTP 400: b'bad manifest'"):
        reactor.wait(swift_store.write("big", unknown_length(SEGMENTED), "sha512"))
    assert swift.stored() == []


def test_swift_size_cap_midway_leaves_nothing(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    with pytest.raises(TooLarge):
        reactor.wait(swift_store.write("big", unknown_length(SEGMENTED), "sha512",
                                       size_cap=SEGMENT + SEGMENT // 2))
    assert swift.stored() == []


def test_swift_401_logs_in_again_once(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    blob = reactor.wait(swift_store.write("img", producer_of(b"data"), "sha512"))
    swift.tokens.clear()  # the token expired
    assert read(reactor, swift_store, blob.location) == b"data"
    assert swift.logins == 2
    gets = [s for s in swift.agent.seen if s.method == "GET" and "/imaged/" in s.path]
    assert [s.header("X-Auth-Token") for s in gets] == ["token-1", "token-2"]


def test_swift_second_401_is_not_retried(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    blob = reactor.wait(swift_store.write("img", producer_of(b"data"), "sha512"))
    for _ in range(2):
        swift.agent.fault(is_method("GET", "/imaged/"), FakeResponse(401))
    with pytest.raises(StoreFailure, match="GET: HTTP 401"):
        read(reactor, swift_store, blob.location)
    assert swift.logins == 2
    assert swift.agent.count("GET", blob.location.removeprefix("swift://")) == 2


def test_swift_refused_login_is_a_store_failure(
    reactor: FakeReactor, swift: FakeSwift
) -> None:
    store = SwiftBlobStore(AUTH_URL, "test:tester", "wrong", reactor, agent=swift.agent)
    try:
        with pytest.raises(StoreFailure, match="auth: HTTP 401"):
            reactor.wait(store.write("img", producer_of(b"data"), "sha512"))
    finally:
        reactor.wait(store.close())


def test_swift_requests_with_a_body_have_none(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    manifest: Deferred[Any] = Deferred()
    swift.agent.fault(lambda s: s.query.get("multipart-manifest") == "put", manifest)
    written = swift_store.write("big", unknown_length(SEGMENTED), "sha512")
    reactor.wait_for(lambda: swift.agent.count("PUT", multipart_manifest="put"))
    reactor.advance(10 * TIMEOUT)
    assert not written.called and reactor.getDelayedCalls() == []
    manifest.callback(swift(swift.agent.seen[-1]))  # Swift answers at last
    check_digests(reactor.wait(written), SEGMENTED)


def test_swift_reads(reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore) -> None:
    blob = reactor.wait(swift_store.write("img", producer_of(b"0123456789"), "sha512"))
    assert read(reactor, swift_store, blob.location, 2, 3) == b"234"
    assert read(reactor, swift_store, blob.location, 7) == b"789"
    assert read(reactor, swift_store, blob.location, 20) == b""  # 416: nothing in the range
    assert read(reactor, swift_store, blob.location, 0, 0) == b""
    reactor.wait(swift_store.delete(blob.location))
    assert swift.stored() == []
    for length in (None, 0):
        with pytest.raises(NotFound):
            reactor.wait(swift_store.read(blob.location, 0, length))
    with pytest.raises(NotFound):
        reactor.wait(swift_store.read("swift://other/x"))
    reactor.wait(swift_store.delete(blob.location))  # deleting twice is fine


def test_swift_stored_before_pages_through_the_listing(
    reactor: FakeReactor, swift: FakeSwift, swift_store: SwiftBlobStore
) -> None:
    old = [reactor.wait(swift_store.write(f"old{n}", producer_of(b"o"), "sha512"))
           for n in range(3)]
    swift.now += 10
    reactor.wait(swift_store.write("new", producer_of(b"n"), "sha512"))
    found = reactor.wait(swift_store.stored_before(swift.now - 5))
    assert sorted(found) == sorted(blob.location for blob in old)


# -- S3 ----------------------------------------------------------------------------------------


def test_s3_single_put(reactor: FakeReactor, s3: FakeS3,
                       s3_store: S3BlobStore) -> None:
    data = os.urandom(300_000)
    blob = reactor.wait(s3_store.write("img", producer_of(data), "sha512"))
    check_digests(blob, data)
    assert s3.bucket_exists and list(s3.objects) == [blob.location.removeprefix("s3://images/")]
    assert s3.agent.count("POST") == 0  # no multipart upload
    assert read(reactor, s3_store, blob.location) == data
    assert reactor.getDelayedCalls() == []


def test_s3_multipart_upload(reactor: FakeReactor, s3: FakeS3,
                             s3_store: S3BlobStore) -> None:
    blob = reactor.wait(s3_store.write("big", unknown_length(MULTIPART), "sha512"))
    check_digests(blob, MULTIPART)
    key = blob.location.removeprefix("s3://images/")
    assert s3.objects == {key: MULTIPART} and s3.uploads == {}
    assert s3.agent.count("PUT", key, uploadId="upload-1") == 3
    assert s3.agent.count("POST", key, uploadId="upload-1") == 1  # completed
    assert read(reactor, s3_store, blob.location, MIN_PART - 5, 10) == MULTIPART[
        MIN_PART - 5:MIN_PART + 5]


def test_s3_short_unknown_length_is_one_put(
    reactor: FakeReactor, s3: FakeS3, s3_store: S3BlobStore
) -> None:
    blob = reactor.wait(s3_store.write("tiny", unknown_length(b"tiny"), "sha512"))
    assert list(s3.objects.values()) == [b"tiny"] and s3.agent.count("POST") == 0
    check_digests(blob, b"tiny")


def test_s3_5xx_on_a_part_aborts_the_upload(
    reactor: FakeReactor, s3: FakeS3, s3_store: S3BlobStore
) -> None:
    s3.agent.fault(is_part(2), FakeResponse(500, _xml("Error", Code="InternalError")))
    with pytest.raises(StoreFailure, match="upload part 2: HTTP 500 InternalError"):
        reactor.wait(s3_store.write("big", unknown_length(MULTIPART), "sha512"))
    assert s3.objects == {} and s3.uploads == {}
    assert s3.agent.count("DELETE", uploadId="upload-1") == 1  # aborted
    assert s3.agent.count("POST", uploadId="upload-1") == 0  # never completed


def test_s3_connection_lost_on_a_part_aborts_the_upload(
    reactor: FakeReactor, s3: FakeS3, s3_store: S3BlobStore
) -> None:
    s3.agent.fault(is_part(1), ConnectionLost("reset"))
    with pytest.raises(StoreFailure, match="PUT: Connection"):
        reactor.wait(s3_store.write("big", unknown_length(MULTIPART), "sha512"))
    assert s3.objects == {} and s3.uploads == {}


def test_s3_completion_error_in_a_200_aborts_the_upload(
    reactor: FakeReactor, s3: FakeS3, s3_store: S3BlobStore
) -> None:
    s3.agent.fault(lambda s: s.method == "POST" and "uploadId" in s.query,
                   FakeResponse(200, _xml("Error", Code="InternalError")))
    with pytest.raises(StoreFailure, match=r"complete multipart upload: .*InternalError"):
        reactor.wait(s3_store.write("big", unknown_length(MULTIPART), "sha512"))
    assert s3.objects == {} and s3.uploads == {}
    assert s3.agent.count("DELETE", uploadId="upload-1") == 1


def test_s3_etag_not_the_md5_deletes_the_object(
    reactor: FakeReactor, s3: FakeS3, s3_store: S3BlobStore
) -> None:
    s3.wrong_etag = True
    with pytest.raises(StoreFailure, match="ETag is not the data's md5"):
        reactor.wait(s3_store.write("img", producer_of(b"data"), "sha512"))
    assert s3.objects == {}
    assert s3.agent.count("DELETE") == 1


def test_s3_size_cap_midway_aborts_the_upload(reactor: FakeReactor, s3: FakeS3,
                                              s3_store: S3BlobStore) -> None:
    with pytest.raises(TooLarge):
        reactor.wait(s3_store.write("big", unknown_length(MULTIPART), "sha512",
                                    size_cap=MIN_PART + MiB))
    assert s3.objects == {} and s3.uploads == {}


def test_s3_reads(reactor: FakeReactor, s3: FakeS3,
                  s3_store: S3BlobStore) -> None:
    blob = reactor.wait(s3_store.write("img", producer_of(b"0123456789"), "sha512"))
    assert read(reactor, s3_store, blob.location, 2, 3) == b"234"
    assert read(reactor, s3_store, blob.location, 20) == b""
    assert read(reactor, s3_store, blob.location, 0, 0) == b""
    s3.agent.fault(lambda s: s.method == "GET", FakeResponse(200, b"x", length=UNKNOWN_LENGTH))
    with pytest.raises(StoreFailure, match="no Content-Length"):
        reactor.wait(s3_store.read(blob.location))
    s3.agent.fault(lambda s: s.method == "GET", FakeResponse(403, _xml("Error", Code="Denied")))
    with pytest.raises(StoreFailure, match="GET: HTTP 403 Denied"):
        reactor.wait(s3_store.read(blob.location))
    reactor.wait(s3_store.delete(blob.location))
    for length in (None, 0):
        with pytest.raises(NotFound):
            reactor.wait(s3_store.read(blob.location, 0, length))
    with pytest.raises(NotFound):
        reactor.wait(s3_store.delete("s3://other/x"))


def test_s3_stored_before_allows_a_second_of_rounding(
    reactor: FakeReactor, s3: FakeS3, s3_store: S3BlobStore
) -> None:
    blob = reactor.wait(s3_store.write("img", producer_of(b"data"), "sha512"))
    listed = 1_704_067_210.0  # 2024-01-01T00:00:10Z, as the fake lists it
    assert reactor.wait(s3_store.stored_before(listed + 1.0)) == []
    assert reactor.wait(s3_store.stored_before(listed + 1.5)) == [blob.location]
