"""
Image bytes in any S3-compatible store (AWS S3, Ceph RGW, MinIO, Swift's s3api), streamed.

Requests are signed with botocore's SigV4 signer (``S3SigV4Auth``); botocore only computes
headers, the bodies go through Twisted's ``Agent`` as producers.  Uploads:

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

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from twisted.internet.defer import Deferred, DeferredSemaphore
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

#: S3's smallest part (but the last) and largest part count.
MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000
_UNSIGNED = Config(s3={"payload_signing_enabled": False})
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _unavailable(what: str, detail: object) -> StoreFailure:
    return StoreFailure(f"The S3 image store is unavailable ({what}: {detail}).")


def _find(element: ElementTree.Element, name: str) -> str | None:
    """A child's text, with or without S3's XML namespace."""
    found = element.find(_S3 + name)
    if found is None:
        found = element.find(name)
    return None if found is None else found.text


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

    log = Logger()

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        reactor: Any,
        region: str = "us-east-1",
        addressing: str = "path",
        part_size: int = 16 * 1024 * 1024,
        parts_in_flight: int = 2,
        timeout: float = 60.0,
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
        self._reactor = reactor
        self._client = ObjectStoreClient(reactor, "s3")
        self._agent = self._client.agent
        self._bucket_ready = False

    def close(self) -> Deferred[None]:
        return self._client.close()

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

    async def _request(
        self,
        method: str,
        key: str = "",
        query: str = "",
        body: IBodyProducer | None = None,
        signed_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One signed request.  ``signed_body``: a small body, signed with its sha256."""
        url = self.url(key, query)
        signed = self.signer.headers(method, url, dict(headers or {}), signed_body)
        if signed_body is not None:
            body = Bytes(signed_body)
        raw = Headers({k.encode(): [v.encode()] for k, v in signed.items()
                       if k.lower() != "content-length"})
        try:
            request = self._agent.request(method.encode(), url.encode(), raw, body)
            # Only requests without a body get a deadline for their answer: a part upload or
            # a multipart completion of a large image may legitimately take minutes.
            timer = None if body is not None else self._reactor.callLater(
                self.timeout, request.cancel
            )
            try:
                return await request
            finally:
                if timer is not None and timer.active():
                    timer.cancel()
        except NETWORK_ERRORS as e:
            raise _unavailable(method, e) from None

    async def _body(self, response: Any) -> bytes:
        try:
            return await read_all(response)
        except NETWORK_ERRORS as e:
            raise _unavailable("read", e) from None

    async def _expect(self, response: Any, codes: tuple[int, ...], what: str) -> bytes:
        body = await self._body(response)
        if response.code not in codes:
            code = None
            try:
                code = _find(ElementTree.fromstring(body), "Code")
            except ElementTree.ParseError:
                pass
            raise _unavailable(what, f"HTTP {response.code} {code or ''}".strip())
        return body

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        head = await self._request("HEAD")
        await self._body(head)
        if head.code == 404:
            body = b""
            if self.signer.region != "us-east-1":
                body = (
                    "<CreateBucketConfiguration><LocationConstraint>"
                    f"{self.signer.region}</LocationConstraint></CreateBucketConfiguration>"
                ).encode()
            created = await self._request("PUT", signed_body=body)
            await self._expect(created, (200,), "create bucket")
        elif head.code != 200:
            raise _unavailable("bucket", f"HTTP {head.code}")
        self._bucket_ready = True

    def _key(self, location: str) -> str:
        prefix = f"s3://{self.bucket}/"
        key = location[len(prefix):] if location.startswith(prefix) else ""
        if not key or "/" in key or key.startswith("."):
            raise NotFound(f"Location {location!r} is not in this store")
        return key

    def _hash(self, digests: Digests, data: bytes) -> Deferred[None]:
        return self._client.hashing.update(digests, data)

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
        await self._ensure_bucket()
        key = f"{image_id}.{uuid.uuid4().hex}"
        length = None if producer.length is UNKNOWN_LENGTH else int(producer.length)
        digests = Digests(hash_algo)
        upload: _SinglePut | _Multipart
        if length is not None and length <= self.part_size:
            upload = _SinglePut(self, key, length, digests)
        else:
            upload = _Multipart(self, key, digests, length)
        location = f"s3://{self.bucket}/{key}"
        return await self._client.upload(upload, producer, size_cap, digests, location)

    def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> Deferred[IBodyProducer]:
        return Deferred.fromCoroutine(self._read(location, offset, length))

    async def _read(self, location: str, offset: int, length: int | None) -> IBodyProducer:
        key = self._key(location)
        if length == 0:
            head = await self._request("HEAD", key)
            await self._body(head)
            if head.code == 404:
                raise NotFound(f"Image data at {location} is missing")
            return Bytes(b"")
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        response = await self._request("GET", key, headers=headers)
        if response.code == 404:
            await self._body(response)
            raise NotFound(f"Image data at {location} is missing")
        if response.code == 416:
            await self._body(response)
            return Bytes(b"")
        if response.code not in (200, 206):
            await self._expect(response, (200, 206), "GET")
        if response.length is UNKNOWN_LENGTH:
            raise _unavailable("GET", "no Content-Length")
        return ResponseProducer(response, int(response.length))

    def delete(self, location: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._delete(self._key(location)))

    async def _delete(self, key: str) -> None:
        response = await self._request("DELETE", key)
        await self._expect(response, (200, 204, 404), "DELETE")

    def stored_before(self, timestamp: float) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._stored_before(timestamp))

    async def _stored_before(self, timestamp: float) -> list[str]:
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
            response = await self._request("GET", query=query)
            body = await self._expect(response, (200,), "list")
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
        self.store, self.key, self.digests = store, key, digests
        self.pipe = Pipe(length)
        body: IBodyProducer = self.pipe if length else Bytes(b"")
        self.response = Deferred.fromCoroutine(
            store._request("PUT", key, body=body)
        ).addErrback(FailedRequest)
        self.stored = False

    def write(self, data: bytes) -> Deferred[Any]:
        hashed = self.store._hash(self.digests, data)
        sent = Deferred.fromCoroutine(self._send(data))
        return all_done([hashed, sent])

    async def _send(self, data: bytes) -> None:
        if self.response.called:
            await self._settle()
            raise _unavailable("PUT", "answered before the body was sent")
        await self.pipe.send(data)

    async def _settle(self) -> Any:
        response = await self.response
        if isinstance(response, FailedRequest):
            response.failure.raiseException()
        return response

    async def finish(self) -> None:
        self.pipe.finish()
        response = await self._settle()
        await self.store._expect(response, (200,), "PUT")
        self.stored = True
        etag = response.headers.getRawHeaders(b"etag", [b""])[0].decode().strip('"')
        if etag and etag != self.digests.checksum:
            raise _unavailable("PUT", "the stored object's ETag is not the data's md5")

    async def remove(self) -> None:
        self.pipe.abort(Failure(StoreFailure("upload abandoned")))
        try:
            await self._settle()
        except Exception:
            pass
        try:
            await self.store._delete(self.key)
        except Exception as e:
            self.store.log.warn("could not remove {key} from S3: {e}", key=self.key, e=e)


class _Multipart:
    """
    An image of unknown or large length: parts buffered and sent a window at a time.
    Becomes a single ``PUT`` if it ends before filling one part.
    """

    def __init__(
        self, store: S3BlobStore, key: str, digests: Digests, length: int | None
    ) -> None:
        self.store, self.key, self.digests = store, key, digests
        self.part_size = store.part_size
        if length is not None:
            # Enough room for the whole image in S3's 10,000 parts.
            self.part_size = max(self.part_size, -(-length // MAX_PARTS))
        # Chunks of the part being gathered (joined once, when full: one copy per part).
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.upload_id: str | None = None
        self.began: Deferred[Any] | None = None
        self.etags: dict[int, str] = {}
        self.window = DeferredSemaphore(store.parts_in_flight)
        self.sending: list[Deferred[Any]] = []
        self.queued = 0
        self.failure: Failure | None = None
        self.single: _SinglePut | None = None

    def write(self, data: bytes) -> Deferred[Any]:
        hashed = self.store._hash(self.digests, data)
        self.buffer.append(data)
        self.buffered += len(data)
        pending: list[Deferred[Any]] = [hashed]
        while self.buffered >= self.part_size:
            pending.append(self._queue(self._take_part()))
        return all_done(pending)

    def _take_part(self) -> bytes:
        """The first ``part_size`` buffered bytes, joined once (only the chunk that straddles
        the boundary is split)."""
        chunks: list[bytes] = []
        needed = self.part_size
        while needed:
            chunk = self.buffer.pop(0)
            if len(chunk) > needed:
                self.buffer.insert(0, chunk[needed:])
                chunk = chunk[:needed]
            chunks.append(chunk)
            needed -= len(chunk)
        self.buffered -= self.part_size
        return b"".join(chunks)

    def _queue(self, part: bytes) -> Deferred[Any]:
        """Start sending a part; fires when it may be followed (the window has room)."""
        self.queued += 1
        number = self.queued
        admitted: Deferred[Any] = self.window.acquire()
        started: Deferred[Any] = Deferred()

        def go(_: Any) -> None:
            sent = Deferred.fromCoroutine(self._send_part(number, part))
            sent.addBoth(self._release)
            self.sending.append(sent)
            started.callback(None)

        admitted.addCallback(go)
        if self.failure is not None:
            return Deferred.fromCoroutine(self._raise())
        return started

    async def _raise(self) -> None:
        assert self.failure is not None
        self.failure.raiseException()

    def _release(self, result: Any) -> Any:
        self.window.release()
        if isinstance(result, Failure):
            self.failure = self.failure or result
            return None  # reported by finish()
        return result

    async def _begin(self) -> str:
        """The upload's id; created once, however many parts ask at the same time."""
        if self.began is None:
            self.began = Deferred.fromCoroutine(self._create()).addErrback(FailedRequest)
        waiter: Deferred[Any] = Deferred()

        def share(result: Any) -> Any:
            waiter.callback(result)
            return result  # unchanged for the next part that asks

        self.began.addCallback(share)
        outcome = await waiter
        if isinstance(outcome, FailedRequest):
            outcome.failure.raiseException()
        return str(outcome)

    async def _create(self) -> str:
        response = await self.store._request("POST", self.key, "uploads", signed_body=b"")
        body = await self.store._expect(response, (200,), "create multipart upload")
        upload_id = _find(ElementTree.fromstring(body), "UploadId")
        if not upload_id:
            raise _unavailable("create multipart upload", "no UploadId")
        self.upload_id = upload_id
        return upload_id

    async def _send_part(self, number: int, part: bytes) -> None:
        upload_id = await self._begin()
        query = f"partNumber={number}&uploadId={quote(upload_id, safe='')}"
        response = await self.store._request("PUT", self.key, query, body=Bytes(part))
        await self.store._expect(response, (200,), f"upload part {number}")
        etag = response.headers.getRawHeaders(b"etag", [b""])[0].decode()
        self.etags[number] = etag

    async def finish(self) -> None:
        if not self.queued:
            # Shorter than one part: one PUT of what was buffered.
            data = b"".join(self.buffer)
            self.buffer, self.buffered = [], 0
            self.single = _SinglePut(self.store, self.key, len(data), self.digests)
            if data:
                await self.single.pipe.send(data)
            await self.single.finish()
            return
        if self.buffer:
            tail = b"".join(self.buffer)
            self.buffer, self.buffered = [], 0
            await self._queue(tail)
        await all_done(list(self.sending))
        if self.failure is not None:
            self.failure.raiseException()
        upload_id = await self._begin()
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{self.etags[n]}</ETag></Part>"
            for n in sorted(self.etags)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        response = await self.store._request(
            "POST", self.key, f"uploadId={quote(upload_id, safe='')}", signed_body=body
        )
        answer = await self.store._expect(response, (200,), "complete multipart upload")
        # S3 may answer 200 and still have failed: the error is in the body.
        if ElementTree.fromstring(answer).tag.endswith("Error"):
            raise _unavailable("complete multipart upload", answer[:200])

    async def remove(self) -> None:
        if self.single is not None:
            await self.single.remove()
            return
        for sending in self.sending:
            try:
                await sending
            except Exception:
                pass
        if self.upload_id is not None:
            try:
                query = f"uploadId={quote(self.upload_id, safe='')}"
                response = await self.store._request("DELETE", self.key, query)
                await self.store._expect(response, (200, 204, 404), "abort multipart upload")
            except Exception as e:
                self.store.log.warn("could not abort {key}: {e}", key=self.key, e=e)
        try:
            await self.store._delete(self.key)
        except Exception:
            pass


__all__ = ["MAX_PARTS", "MIN_PART", "S3BlobStore", "Signer"]
