"""
Image bytes in OpenStack Swift, streamed through: nothing is staged locally.

This module is Swift's dialect of ``imaged.store.objstore``: tempauth, container names, Static
Large Objects, listings.  An upload goes straight from the client's connection to a Swift
``PUT`` (chunked), through ``consume``'s back-pressure: when Swift is slower than the client,
the client is paused.  md5 and the multihash are computed on the way in two ordered hashing
threads, as the file store does.  An image whose length is known and at most ``segment_size`` is
one object; anything else (longer, or of unknown length, as chunked uploads are) is a Static
Large Object: segments of ``segment_size`` bytes in ``<container>_segments``, then a manifest,
so images above Swift's 5 GiB object limit work and the manifest appears only once every
segment is stored.

Locations are ``swift://<container>/<object>``, relative to the account the store logs into
(tempauth's ``/auth/v1.0``), so a location survives a change of Swift endpoint or token.  Any
failure removes what the upload wrote (segments included) before it is reported; Swift being
unreachable or erring is ``StoreFailure`` (503).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ..coroutines import deferred
from ..errors import NotFound
from ..hashing import Digests
from ..interfaces import IBlobStore
from ..model import StoredBlob
from ..threads import all_done
from .http import Bytes, header
from .objstore import ObjectStore, StreamedRequest

#: Swift's default largest single object.
SWIFT_MAX_OBJECT = 5 * 1024**3


@implementer(IBlobStore)
class SwiftBlobStore:
    """``IBlobStore`` in one Swift container (segments of large images in a second one)."""

    def __init__(
        self,
        auth_url: str,
        user: str,
        key: str,
        reactor: IReactorTime,
        container: str = "imaged",
        segment_size: int = 1024**3,
        timeout: float = 60.0,
        *,
        agent: IAgent | None = None,
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
        self.core = ObjectStore(reactor, "Swift", timeout, agent)
        self._token: str | None = None
        self._storage_url: str | None = None
        self._containers_ready = False

    def close(self) -> Deferred[None]:
        return self.core.close()

    # -- HTTP ------------------------------------------------------------------------------

    async def _log_in(self) -> None:
        credentials = {b"X-Auth-User": [self.user.encode()], b"X-Auth-Key": [self._key.encode()]}
        response = await self.core.send("GET", self.auth_url, Headers(credentials), what="auth")
        await self.core.drain(response)
        token, storage = header(response, b"x-auth-token"), header(response, b"x-storage-url")
        if response.code // 100 != 2 or not token or not storage:
            raise self.core.unavailable("auth", f"HTTP {response.code}")
        self._token, self._storage_url = token, storage.rstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        body: IBodyProducer | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = True,
    ) -> IResponse:
        """
        One request to the account (``path`` quoted, from ``/<container>``); logs in (again,
        on 401) when it can retry: once, and only without a body, which cannot be sent twice.
        """
        if self._token is None:
            await self._log_in()
        assert self._token is not None and self._storage_url is not None
        raw = Headers({b"X-Auth-Token": [self._token.encode()]})
        for name, value in (headers or {}).items():
            raw.setRawHeaders(name.encode(), [value.encode()])
        response = await self.core.send(method, self._storage_url + path, raw, body)
        if response.code == 401 and retry and body is None:
            await self.core.drain(response)
            self._token = None
            return await self.request(method, path, body, headers, retry=False)
        return response

    async def _ensure_containers(self) -> None:
        if self._containers_ready:
            return
        for container in (self.container, self.segments):
            response = await self.request("PUT", "/" + quote(container))
            await self.core.expect(response, (201, 202, 204), "container")
        self._containers_ready = True

    def _object_path(self, location: str) -> str:
        prefix = f"swift://{self.container}/"
        if not location.startswith(prefix) or "/" in location[len(prefix):]:
            raise NotFound(f"Location {location!r} is not in this store")
        return f"/{quote(self.container)}/{quote(location[len(prefix):])}"

    # -- IBlobStore ------------------------------------------------------------------------

    def owns(self, location: str) -> bool:
        try:
            self._object_path(location)
        except NotFound:
            return False
        return True

    @deferred
    async def ping(self) -> None:
        """The account answers (logging in if need be); the container may not exist yet."""
        response = await self.request("HEAD", "/" + quote(self.container))
        await self.core.expect(response, (200, 204, 404), "container")

    @deferred
    async def write(
        self, image_id: str, producer: IBodyProducer, hash_algo: str, size_cap: int | None = None
    ) -> StoredBlob:
        await self._ensure_containers()
        new = self.core.new_object(image_id, producer, hash_algo)
        upload = _Upload(self, new.name, new.length, new.digests)
        location = f"swift://{self.container}/{new.name}"
        return await self.core.upload(upload, producer, size_cap, new.digests, location)

    @deferred
    async def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> IBodyProducer:
        path = self._object_path(location)
        return await self.core.read(
            location, lambda method, headers: self.request(method, path, headers=headers),
            offset, length,
        )

    @deferred
    async def delete(self, location: str) -> None:
        path = self._object_path(location)
        head = await self.request("HEAD", path)
        await self.core.drain(head)
        if head.code == 404:
            return
        if head.code // 100 != 2:
            raise self.core.unavailable("HEAD", f"HTTP {head.code}")
        # A Static Large Object goes with its segments; a plain object as it is.
        large = header(head, b"x-static-large-object").lower() == "true"
        response = await self.request(
            "DELETE",
            path + ("?multipart-manifest=delete" if large else ""),
            headers={"Accept": "application/json"},
        )
        body = await self.core.expect(response, (200, 204, 404), "DELETE")
        if large and body:
            # SLO reports per-segment outcomes in a 200's body.
            outcome = json.loads(body)
            if outcome.get("Errors") or not str(outcome.get("Response Status", "")).startswith(
                ("200", "404")
            ):
                raise self.core.unavailable("DELETE", outcome.get("Response Status"))

    @deferred
    async def stored_before(self, timestamp: float) -> list[str]:
        await self._ensure_containers()
        found: list[str] = []
        marker = ""
        while True:
            response = await self.request(
                "GET", f"/{quote(self.container)}?format=json&marker={quote(marker)}"
            )
            body = await self.core.expect(response, (200, 204), "listing")
            entries = json.loads(body) if body else []
            if not entries:
                return found
            for entry in entries:
                modified = datetime.fromisoformat(entry["last_modified"]).replace(tzinfo=UTC)
                if modified.timestamp() < timestamp:
                    found.append(f"swift://{self.container}/{entry['name']}")
            marker = entries[-1]["name"]


class _Upload:
    """One image being written: a single object, or segments then a manifest."""

    def __init__(
        self, store: SwiftBlobStore, name: str, length: int | None, digests: Digests
    ) -> None:
        self.store = store
        self.core = store.core
        self.name = name
        self.digests = digests
        self.single = length is not None and length <= store.segment_size
        self.length = length
        self.segments: list[dict[str, object]] = []
        self._put: StreamedRequest | None = None
        self._in_segment = 0
        self._manifest_written = False
        # consume() may hand over the next chunk before this one is sent: keep them in order.
        self._order = DeferredLock()

    def _segment_path(self) -> str:
        """The (unquoted) path of the segment being written, as the manifest names it."""
        return f"/{self.store.segments}/{self.name}/{len(self.segments) + 1:08d}"

    def _open(self) -> None:
        if self.single:
            path, length = f"/{self.store.container}/{self.name}", self.length
        else:
            path, length = self._segment_path(), None
        self._put = StreamedRequest(
            self.core,
            length,
            lambda body: self.store.request("PUT", quote(path), body=body, retry=False),
        )
        self._in_segment = 0

    async def _close(self) -> None:
        """Finish the current PUT and record it (as a segment when segmenting)."""
        assert self._put is not None
        put, self._put = self._put, None
        response = await put.close()
        await self.core.expect(response, (201,), "PUT")
        if not self.single:
            self.segments.append({
                "path": self._segment_path(),
                "etag": header(response, b"etag").strip('"'),
                "size_bytes": self._in_segment,
            })

    def write(self, data: bytes) -> Deferred[None]:
        hashed = self.core.hash(self.digests, data)
        sent = self._order.run(self._send_all, data)
        return all_done([hashed, sent])

    async def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._put is None:
                self._open()
            assert self._put is not None
            room = len(view) if self.single else self.store.segment_size - self._in_segment
            piece, view = view[:room], view[room:]
            await self._put.send(piece.tobytes() if len(piece) != len(data) else data)
            self._in_segment += len(piece)
            if not self.single and self._in_segment >= self.store.segment_size:
                await self._close()

    async def finish(self) -> None:
        if self._put is None and (self.single or not self.segments):
            self._open()  # an empty image: one empty object, or one empty segment
        if self._put is not None:
            await self._close()
        if self.single:
            return
        manifest = json.dumps(self.segments).encode()
        path = f"/{quote(self.store.container)}/{quote(self.name)}?multipart-manifest=put"
        response = await self.store.request("PUT", path, body=Bytes(manifest), retry=False)
        body = await self.core.content(response)
        if response.code != 201:
            raise self.core.unavailable("manifest", f"HTTP {response.code}: {body[:200]!r}")
        self._manifest_written = True

    async def remove(self) -> None:
        """Best effort: take away everything this upload wrote."""
        if self._put is not None:
            put, self._put = self._put, None
            await put.abandon()
        paths = [str(s["path"]) for s in self.segments]
        if self.single or self._manifest_written:
            paths.append(f"/{self.store.container}/{self.name}")
        for path in paths:
            await self.core.remove(path, self._delete(path))

    async def _delete(self, path: str) -> None:
        await self.core.drain(await self.store.request("DELETE", quote(path)))


__all__ = ["SWIFT_MAX_OBJECT", "SwiftBlobStore"]
