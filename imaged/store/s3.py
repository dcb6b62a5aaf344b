"""
Image bytes in any S3-compatible store (AWS S3, Ceph RGW, MinIO, Swift's s3api), streamed.

This module is S3's dialect of ``imaged.store.objstore``: signing, addressing, multipart
uploads, listings.  Requests are signed with botocore's SigV4 signer (``S3SigV4Auth``); botocore
only computes headers, the bodies go through the store's ``IAgent`` as producers.  Uploads:

- of known length up to ``part_size``: one ``PUT`` streamed from the client with
  ``UNSIGNED-PAYLOAD`` (S3 needs the length up front, which the client gave us); the ETag
  S3 returns must equal the md5 we computed, or the blob is removed and the upload fails;
- otherwise (larger, or of unknown length as chunked uploads are): a multipart upload.  Parts
  of ``part_size`` bytes are buffered (S3 needs each part's length), at most
  ``parts_in_flight`` are sent at once, and the client is paused while that window is full,
  so memory stays at about ``part_size * (parts_in_flight + 1)`` whatever the image size.  An
  upload of unknown length that ends up shorter than one part is sent as one ``PUT``.

Any failure aborts the multipart upload (S3 drops its parts) or deletes the object.  Locations
are ``s3://<bucket>/<key>``.  Path-style (``endpoint/bucket/key``, what Ceph RGW, MinIO and
Swift serve by default) or virtual-hosted (``bucket.endpoint/key``, AWS's default)
addressing.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from twisted.internet.defer import Deferred
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
from .http import Bytes, Gather, Shared, header
from .objstore import ObjectStore, StreamedRequest, Window

#: S3's smallest part (but the last) and largest part count.
MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000
_UNSIGNED = Config(s3={"payload_signing_enabled": False})
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _find(element: ElementTree.Element, name: str) -> str | None:
    """A child's text, with or without S3's XML namespace."""
    found = element.find(_S3 + name)
    if found is None:
        found = element.find(name)
    return None if found is None else found.text


def _error_code(body: bytes) -> str | None:
    """The ``<Code>`` of an S3 error body, to say more than the status in a failure."""
    try:
        return _find(ElementTree.fromstring(body), "Code")
    except ElementTree.ParseError:
        return None


class Signer:
    """SigV4 headers for one request, by botocore (no hand-written signing)."""

    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
        self._credentials = Credentials(access_key, secret_key)
        self.region = region

    def headers(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> dict[str, str]:
        """``body`` ``None``: a streamed body, sent as ``UNSIGNED-PAYLOAD``."""
        request = AWSRequest(method=method, url=url, headers=headers, data=body or b"")
        if body is None:
            request.context["client_config"] = _UNSIGNED
        S3SigV4Auth(self._credentials, "s3", self.region).add_auth(request)
        return dict(request.headers.items())


@implementer(IBlobStore)
class S3BlobStore:
    """``IBlobStore`` in one S3 bucket."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        reactor: IReactorTime,
        region: str = "us-east-1",
        addressing: str = "path",
        part_size: int = 16 * 1024 * 1024,
        parts_in_flight: int = 2,
        timeout: float = 60.0,
        *,
        agent: IAgent | None = None,
    ) -> None:
        if addressing not in ("path", "virtual"):
            raise ValueError(f"addressing is 'path' or 'virtual', not {addressing!r}")
        if part_size < MIN_PART:
            raise ValueError(f"part size must be at least {MIN_PART} bytes (S3's minimum)")
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.addressing = addressing
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.timeout = timeout
        self.signer = Signer(access_key, secret_key, region)
        self.core = ObjectStore(reactor, "S3", timeout, agent, error_detail=_error_code)
        self._bucket_ready = False

    def close(self) -> Deferred[None]:
        return self.core.close()

    # -- requests --------------------------------------------------------------------------

    def url(self, key: str = "", query: str = "") -> str:
        """Where ``key`` (or the bucket itself, for ``""``) is, in this store's addressing."""
        path = "/" + quote(key, safe="/-_.~") if key else "/"
        if self.addressing == "virtual":
            parts = urlsplit(self.endpoint)
            base = f"{parts.scheme}://{self.bucket}.{parts.netloc}"
        else:
            base = f"{self.endpoint}/{quote(self.bucket)}"
            path = path if key else ""
        return base + path + (f"?{query}" if query else "")

    async def request(
        self,
        method: str,
        key: str = "",
        query: str = "",
        body: IBodyProducer | None = None,
        signed_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> IResponse:
        """
        One signed request.  ``signed_body``: a small body, signed with its sha256; ``body``: a
        streamed one, sent unsigned.  Only a request without either has a deadline.
        """
        url = self.url(key, query)
        signed = self.signer.headers(method, url, dict(headers or {}), signed_body)
        if signed_body is not None:
            body = Bytes(signed_body)
        raw = Headers({k.encode(): [v.encode()] for k, v in signed.items()
                       if k.lower() != "content-length"})
        return await self.core.send(method, url, raw, body)

    async def delete_object(self, key: str) -> None:
        """Remove one object; a missing one is not an error."""
        response = await self.request("DELETE", key)
        await self.core.expect(response, (200, 204, 404), "DELETE")

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        head = await self.request("HEAD")
        await self.core.drain(head)
        if head.code == 404:
            body = b""
            if self.signer.region != "us-east-1":
                body = (
                    "<CreateBucketConfiguration><LocationConstraint>"
                    f"{self.signer.region}</LocationConstraint></CreateBucketConfiguration>"
                ).encode()
            created = await self.request("PUT", signed_body=body)
            await self.core.expect(created, (200,), "create bucket")
        elif head.code != 200:
            raise self.core.unavailable("bucket", f"HTTP {head.code}")
        self._bucket_ready = True

    def _key(self, location: str) -> str:
        prefix = f"s3://{self.bucket}/"
        key = location[len(prefix):] if location.startswith(prefix) else ""
        if not key or "/" in key or key.startswith("."):
            raise NotFound(f"Location {location!r} is not in this store")
        return key

    # -- IBlobStore ------------------------------------------------------------------------

    def owns(self, location: str) -> bool:
        try:
            self._key(location)
        except NotFound:
            return False
        return True

    @deferred
    async def ping(self) -> None:
        """The endpoint answers for the bucket (which is made at the first write if need be)."""
        head = await self.request("HEAD")
        await self.core.expect(head, (200, 404), "bucket")

    @deferred
    async def write(
        self, image_id: str, producer: IBodyProducer, hash_algo: str, size_cap: int | None = None
    ) -> StoredBlob:
        await self._ensure_bucket()
        new = self.core.new_object(image_id, producer, hash_algo)
        upload: _SinglePut | _Multipart
        if new.length is not None and new.length <= self.part_size:
            upload = _SinglePut(self, new.name, new.length, new.digests)
        else:
            upload = _Multipart(self, new.name, new.digests, new.length)
        location = f"s3://{self.bucket}/{new.name}"
        return await self.core.upload(upload, producer, size_cap, new.digests, location)

    @deferred
    async def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> IBodyProducer:
        key = self._key(location)
        return await self.core.read(
            location, lambda method, headers: self.request(method, key, headers=headers),
            offset, length,
        )

    @deferred
    async def delete(self, location: str) -> None:
        await self.delete_object(self._key(location))

    @deferred
    async def stored_before(self, timestamp: float) -> list[str]:
        """
        S3 lists ``LastModified`` to the second (``.000Z``), rounded down by some stores and
        up by others (Swift's s3api), so an object counts as older than ``timestamp`` only if
        its listed time is more than a second before: an upload finishing just now must never
        look like an orphan.
        """
        await self._ensure_bucket()
        found: list[str] = []
        token = ""
        while True:
            query = "list-type=2" + (f"&continuation-token={quote(token, safe='')}" if token
                                     else "")
            response = await self.request("GET", query=query)
            body = await self.core.expect(response, (200,), "list")
            listing = ElementTree.fromstring(body)
            contents = listing.findall(_S3 + "Contents") or listing.findall("Contents")
            for item in contents:
                key, modified = _find(item, "Key"), _find(item, "LastModified")
                if key is None or modified is None:
                    continue
                when = datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()
                if when + 1.0 < timestamp:
                    found.append(f"s3://{self.bucket}/{key}")
            token = _find(listing, "NextContinuationToken") or ""
            if (_find(listing, "IsTruncated") or "false").lower() != "true" or not token:
                return found


class _SinglePut:
    """An image of known length, up to one part: a single streamed ``PUT``."""

    def __init__(self, store: S3BlobStore, key: str, length: int, digests: Digests) -> None:
        self.store, self.core, self.key, self.digests = store, store.core, key, digests
        self.put = StreamedRequest(
            store.core, length, lambda body: store.request("PUT", key, body=body)
        )

    def write(self, data: bytes) -> Deferred[None]:
        hashed = self.core.hash(self.digests, data)
        return all_done([hashed, Deferred.fromCoroutine(self.put.send(data))])

    async def finish(self) -> None:
        response = await self.put.close()
        await self.core.expect(response, (200,), "PUT")
        etag = header(response, b"etag").strip('"')
        if etag and etag != self.digests.checksum:
            raise self.core.unavailable("PUT", "the stored object's ETag is not the data's md5")

    async def remove(self) -> None:
        await self.put.abandon()
        await self.core.remove(self.key, self.store.delete_object(self.key))


class _Multipart:
    """
    An image of unknown or large length: parts buffered and sent a window at a time.
    Becomes a single ``PUT`` if it ends before filling one part.
    """

    def __init__(
        self, store: S3BlobStore, key: str, digests: Digests, length: int | None
    ) -> None:
        self.store, self.core, self.key, self.digests = store, store.core, key, digests
        self.part_size = store.part_size
        if length is not None:
            # Enough room for the whole image in S3's 10,000 parts.
            self.part_size = max(self.part_size, -(-length // MAX_PARTS))
        self.buffer = Gather()  # the part being gathered
        self.upload_id: str | None = None
        self.began: Shared[str] | None = None
        self.etags: dict[int, str] = {}
        self.window = Window(store.parts_in_flight)
        self.queued = 0
        self.single: _SinglePut | None = None

    def write(self, data: bytes) -> Deferred[None]:
        hashed = self.core.hash(self.digests, data)
        self.buffer.add(data)
        pending: list[Deferred[None]] = [hashed]
        while self.buffer.size >= self.part_size:
            pending.append(self._queue(self.buffer.take(self.part_size)))
        return all_done(pending)

    def _queue(self, part: bytes) -> Deferred[None]:
        """Start sending the next part; fires when it may be followed (the window has room)."""
        self.queued += 1
        number = self.queued
        return self.window.start(lambda: self._send_part(number, part))

    def _begin(self) -> Deferred[str]:
        """The upload's id; created once, however many parts ask at the same time."""
        if self.began is None:
            self.began = Shared(Deferred.fromCoroutine(self._create()))
        return self.began.get()

    async def _create(self) -> str:
        response = await self.store.request("POST", self.key, "uploads", signed_body=b"")
        body = await self.core.expect(response, (200,), "create multipart upload")
        upload_id = _find(ElementTree.fromstring(body), "UploadId")
        if not upload_id:
            raise self.core.unavailable("create multipart upload", "no UploadId")
        self.upload_id = upload_id
        return upload_id

    def _query(self, upload_id: str) -> str:
        return f"uploadId={quote(upload_id, safe='')}"

    async def _send_part(self, number: int, part: bytes) -> None:
        query = f"partNumber={number}&{self._query(await self._begin())}"
        response = await self.store.request("PUT", self.key, query, body=Bytes(part))
        await self.core.expect(response, (200,), f"upload part {number}")
        self.etags[number] = header(response, b"etag")

    async def finish(self) -> None:
        if not self.queued:
            # Shorter than one part: one PUT of what was buffered.
            data = self.buffer.take()
            self.single = _SinglePut(self.store, self.key, len(data), self.digests)
            if data:
                await self.single.put.send(data)
            await self.single.finish()
            return
        if self.buffer.size:
            await self._queue(self.buffer.take())
        await self.window.wait()
        query = self._query(await self._begin())
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{self.etags[n]}</ETag></Part>"
            for n in sorted(self.etags)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        response = await self.store.request("POST", self.key, query, signed_body=body)
        answer = await self.core.expect(response, (200,), "complete multipart upload")
        # S3 may answer 200 and still have failed: the error is in the body.
        if ElementTree.fromstring(answer).tag.endswith("Error"):
            raise self.core.unavailable("complete multipart upload", answer[:200])

    async def remove(self) -> None:
        if self.single is not None:
            await self.single.remove()
            return
        await self.window.settle()
        if self.upload_id is not None:
            await self.core.remove(f"multipart upload {self.key}", self._abort(self.upload_id))
        with suppress(Exception):
            await self.store.delete_object(self.key)

    async def _abort(self, upload_id: str) -> None:
        response = await self.store.request("DELETE", self.key, self._query(upload_id))
        await self.core.expect(response, (200, 204, 404), "abort multipart upload")


__all__ = ["MAX_PARTS", "MIN_PART", "S3BlobStore", "Signer"]
