"""
Image bytes in OpenStack Swift, streamed through with treq: nothing is staged locally.

An upload goes straight from the client's connection to a Swift ``PUT`` (chunked), through
``consume``'s back-pressure: when Swift is slower than the client, the client is paused.  md5
and the multihash are computed on the way in two ordered hashing threads, as the file store
does.  An image whose length is known and at most ``segment_size`` is one object; anything
else (longer, or of unknown length, as chunked uploads are) is a Static Large Object: segments
of ``segment_size`` bytes in ``<container>_segments``, then a manifest, so images above
Swift's 5 GiB object limit work and the manifest appears only once every segment is stored.

Locations are ``swift://<container>/<object>``, relative to the account the store logs into
(tempauth's ``/auth/v1.0``), so a location survives a change of Swift endpoint or token.  Any
failure removes what the upload wrote (segments included) before it is reported; Swift being
unreachable or erring is ``StoreFailure`` (503).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from ..errors import NotFound, StoreFailure
from ..hashing import Digests
from ..interfaces import IBlobStore
from ..model import StoredBlob
from ..threads import all_done
from .http import (
    NETWORK_ERRORS,
    Bytes,
    FailedRequest,
    ObjectStoreClient,
    Pipe,
    ResponseProducer,
    read_all,
)

#: Swift's default largest single object.
SWIFT_MAX_OBJECT = 5 * 1024**3


def _unavailable(what: str, detail: object) -> StoreFailure:
    return StoreFailure(f"The Swift image store is unavailable ({what}: {detail}).")


@implementer(IBlobStore)
class SwiftBlobStore:
    """``IBlobStore`` in one Swift container (segments of large images in a second one)."""

    log = Logger()

    def __init__(
        self,
        auth_url: str,
        user: str,
        key: str,
        reactor: Any,
        container: str = "imaged",
        segment_size: int = 1024**3,
        timeout: float = 60.0,
    ) -> None:
        if not 0 < segment_size <= SWIFT_MAX_OBJECT:
            raise ValueError(f"segment size must be 1 byte to 5 GiB, not {segment_size}")
        self.auth_url = auth_url
        self.user = user
        self._key = key
        self.container = container
        self.segments = container + "_segments"
        self.segment_size = segment_size
        self.timeout = timeout
        self._reactor = reactor
        self._client = ObjectStoreClient(reactor, "swift")
        self._agent = self._client.agent
        self._token: str | None = None
        self._storage_url: str | None = None
        self._containers_ready = False

    def close(self) -> Deferred[None]:
        return self._client.close()

    # -- HTTP ------------------------------------------------------------------------------

    async def _log_in(self) -> None:
        try:
            response = await self._agent.request(
                b"GET",
                self.auth_url.encode(),
                Headers(
                    {b"X-Auth-User": [self.user.encode()], b"X-Auth-Key": [self._key.encode()]}
                ),
            )
            await _drain(response)
        except NETWORK_ERRORS as e:
            raise _unavailable("auth", e) from None
        token = response.headers.getRawHeaders(b"x-auth-token", [None])[0]
        storage = response.headers.getRawHeaders(b"x-storage-url", [None])[0]
        if response.code // 100 != 2 or token is None or storage is None:
            raise _unavailable("auth", f"HTTP {response.code}")
        self._token, self._storage_url = token.decode(), storage.decode().rstrip("/")

    async def _request(
        self,
        method: bytes,
        path: str,
        body: IBodyProducer | None = None,
        headers: dict[bytes, bytes] | None = None,
        retry: bool = True,
    ) -> Any:
        """One request to the account; logs in (again, on 401) when it can retry."""
        if self._token is None:
            await self._log_in()
        assert self._token is not None and self._storage_url is not None
        raw = {b"X-Auth-Token": [self._token.encode()]}
        raw.update({k: [v] for k, v in (headers or {}).items()})
        try:
            request = self._agent.request(
                method, (self._storage_url + path).encode(), Headers(raw), body
            )
            timer = self._reactor.callLater(self.timeout, request.cancel) if body is None else None
            try:
                response = await request
            finally:
                if timer is not None and timer.active():
                    timer.cancel()
        except NETWORK_ERRORS as e:
            raise _unavailable(method.decode(), e) from None
        if response.code == 401 and retry and body is None:
            await _drain(response)
            self._token = None
            return await self._request(method, path, body, headers, retry=False)
        return response

    async def _ensure_containers(self) -> None:
        if self._containers_ready:
            return
        for container in (self.container, self.segments):
            response = await self._request(b"PUT", "/" + quote(container))
            await _drain(response)
            if response.code not in (201, 202, 204):
                raise _unavailable("container", f"HTTP {response.code}")
        self._containers_ready = True

    def _object_path(self, location: str) -> str:
        prefix = f"swift://{self.container}/"
        if not location.startswith(prefix) or "/" in location[len(prefix):]:
            raise NotFound(f"Location {location!r} is not in this store")
        return f"/{quote(self.container)}/{quote(location[len(prefix):])}"

    # -- IBlobStore ------------------------------------------------------------------------

    def write(
        self,
        image_id: str,
        producer: IBodyProducer,
        hash_algo: str,
        size_cap: int | None = None,
    ) -> Deferred[StoredBlob]:
        return Deferred.fromCoroutine(self._write(image_id, producer, hash_algo, size_cap))

    async def _write(
        self, image_id: str, producer: IBodyProducer, hash_algo: str, size_cap: int | None
    ) -> StoredBlob:
        await self._ensure_containers()
        name = f"{image_id}.{uuid.uuid4().hex}"
        length = None if producer.length is UNKNOWN_LENGTH else int(producer.length)
        digests = Digests(hash_algo)
        upload = _Upload(self, name, length, digests)
        location = f"swift://{self.container}/{name}"
        return await self._client.upload(upload, producer, size_cap, digests, location)

    def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> Deferred[IBodyProducer]:
        return Deferred.fromCoroutine(self._read(location, offset, length))

    async def _read(self, location: str, offset: int, length: int | None) -> IBodyProducer:
        path = self._object_path(location)
        headers = {}
        if length == 0:
            # Nothing to fetch; still say whether the object exists.
            head = await self._request(b"HEAD", path)
            await _drain(head)
            if head.code == 404:
                raise NotFound(f"Image data at {location} is missing")
            return Bytes(b"")
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers[b"Range"] = f"bytes={offset}-{end}".encode()
        response = await self._request(b"GET", path, headers=headers)
        if response.code == 404:
            await _drain(response)
            raise NotFound(f"Image data at {location} is missing")
        if response.code == 416:
            await _drain(response)
            return Bytes(b"")
        if response.code not in (200, 206):
            await _drain(response)
            raise _unavailable("GET", f"HTTP {response.code}")
        size = response.length
        if size is UNKNOWN_LENGTH:
            raise _unavailable("GET", "no Content-Length")
        return ResponseProducer(response, int(size))

    def delete(self, location: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._delete(location))

    async def _delete(self, location: str) -> None:
        path = self._object_path(location)
        head = await self._request(b"HEAD", path)
        await _drain(head)
        if head.code == 404:
            return
        if head.code // 100 != 2:
            raise _unavailable("HEAD", f"HTTP {head.code}")
        # A Static Large Object goes with its segments; a plain object as it is.
        large = head.headers.getRawHeaders(b"x-static-large-object", [b""])[0].lower() == b"true"
        response = await self._request(
            b"DELETE",
            path + ("?multipart-manifest=delete" if large else ""),
            headers={b"Accept": b"application/json"},
        )
        body = await _read_all(response)
        if response.code not in (200, 204, 404):
            raise _unavailable("DELETE", f"HTTP {response.code}")
        if large and body:
            # SLO reports per-segment outcomes in a 200's body.
            outcome = json.loads(body)
            if outcome.get("Errors") or not str(outcome.get("Response Status", "")).startswith(
                ("200", "404")
            ):
                raise _unavailable("DELETE", outcome.get("Response Status"))

    def stored_before(self, timestamp: float) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._stored_before(timestamp))

    async def _stored_before(self, timestamp: float) -> list[str]:
        await self._ensure_containers()
        found: list[str] = []
        marker = ""
        while True:
            response = await self._request(
                b"GET", f"/{quote(self.container)}?format=json&marker={quote(marker)}"
            )
            body = await _read_all(response)
            if response.code not in (200, 204):
                raise _unavailable("listing", f"HTTP {response.code}")
            entries = json.loads(body) if body else []
            if not entries:
                return found
            for entry in entries:
                modified = datetime.fromisoformat(entry["last_modified"]).replace(tzinfo=UTC)
                if modified.timestamp() < timestamp:
                    found.append(f"swift://{self.container}/{entry['name']}")
            marker = entries[-1]["name"]

    # -- used by _Upload -------------------------------------------------------------------

    def _hash(self, digests: Digests, data: bytes) -> Deferred[None]:
        return self._client.hashing.update(digests, data)


class _Upload:
    """One image being written: a single object, or segments then a manifest."""

    def __init__(
        self, store: SwiftBlobStore, name: str, length: int | None, digests: Digests
    ) -> None:
        self.store = store
        self.name = name
        self.digests = digests
        self.single = length is not None and length <= store.segment_size
        self.length = length
        self.segments: list[dict[str, Any]] = []
        self._pipe: Pipe | None = None
        self._response: Deferred[Any] | None = None
        self._in_segment = 0
        self._manifest_written = False
        # consume() may hand over the next chunk before this one is sent: keep them in order.
        self._order = DeferredLock()

    def _segment_name(self) -> str:
        return f"{self.name}/{len(self.segments) + 1:08d}"

    def _open(self) -> None:
        if self.single:
            path = f"/{quote(self.store.container)}/{quote(self.name)}"
            self._pipe = Pipe(self.length)
        else:
            path = f"/{quote(self.store.segments)}/{quote(self._segment_name())}"
            self._pipe = Pipe(None)
        self._path = path
        self._in_segment = 0
        body: IBodyProducer = self._pipe
        if self.single and self.length == 0:
            body = Bytes(b"")
        # A failed PUT becomes a value, reported by _send() or _close(), never "unhandled".
        self._response = Deferred.fromCoroutine(
            self.store._request(b"PUT", path, body=body, retry=False)
        ).addErrback(FailedRequest)

    async def _close(self) -> None:
        """Finish the current PUT and record it (as a segment when segmenting)."""
        assert self._pipe is not None and self._response is not None
        pipe, response_d = self._pipe, self._response
        self._pipe = self._response = None
        pipe.finish()
        response = await response_d
        if isinstance(response, FailedRequest):
            response.failure.raiseException()
        await _drain(response)
        if response.code != 201:
            raise _unavailable("PUT", f"HTTP {response.code}")
        if not self.single:
            etag = response.headers.getRawHeaders(b"etag", [b""])[0].decode().strip('"')
            self.segments.append({
                "path": f"/{self.store.segments}/{self._segment_name()}",
                "etag": etag,
                "size_bytes": self._in_segment,
            })

    def write(self, data: bytes) -> Deferred[Any]:
        hashed = self.store._hash(self.digests, data)
        sent = self._order.run(lambda: Deferred.fromCoroutine(self._send_all(data)))
        return all_done([hashed, sent])

    async def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._pipe is None:
                self._open()
            assert self._pipe is not None
            room = len(view) if self.single else self.store.segment_size - self._in_segment
            piece, view = view[:room], view[room:]
            await self._send(piece.tobytes() if len(piece) != len(data) else data)
            self._in_segment += len(piece)
            if not self.single and self._in_segment >= self.store.segment_size:
                await self._close()

    async def _send(self, data: bytes) -> None:
        assert self._pipe is not None and self._response is not None
        response_d = self._response
        if response_d.called:
            # Swift answered before the body was complete: that is a refusal.
            response = await response_d
            if isinstance(response, FailedRequest):
                response.failure.raiseException()
            await _drain(response)
            raise _unavailable("PUT", f"HTTP {response.code}")
        await self._pipe.send(data)

    async def finish(self) -> None:
        if self._pipe is None and not self.segments and not self.single:
            self._open()  # an empty image of unknown length: one empty segment
        if self._pipe is None and self.single:
            self._open()  # an empty image of known (zero) length
        if self._pipe is not None:
            await self._close()
        if self.single:
            return
        manifest = json.dumps(self.segments).encode()
        path = f"/{quote(self.store.container)}/{quote(self.name)}?multipart-manifest=put"
        response = await self.store._request(b"PUT", path, body=Bytes(manifest), retry=False)
        body = await _read_all(response)
        if response.code != 201:
            raise _unavailable("manifest", f"HTTP {response.code}: {body[:200]!r}")
        self._manifest_written = True

    async def remove(self) -> None:
        """Best effort: take away everything this upload wrote."""
        if self._pipe is not None:
            self._pipe.abort(Failure(ConnectionLost("upload abandoned")))
            self._pipe = None
        paths = [s["path"] for s in self.segments]
        if self.single or self._manifest_written:
            paths.append(f"/{self.store.container}/{self.name}")
        for path in paths:
            try:
                response = await self.store._request(b"DELETE", quote(path))
                await _drain(response)
            except Exception as e:
                self.store.log.warn("could not remove {path} from Swift: {e}", path=path, e=e)




async def _read_all(response: Any) -> bytes:
    try:
        return await read_all(response)
    except NETWORK_ERRORS as e:
        raise _unavailable("read", e) from None


async def _drain(response: Any) -> None:
    await _read_all(response)


__all__ = ["SWIFT_MAX_OBJECT", "SwiftBlobStore"]
