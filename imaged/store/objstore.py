"""
The core of the object-store blob stores: one HTTP client, deadlines, hashing, uploads, reads.

Swift and S3 differ in how they log in or sign, how they name objects and how they cut a large
image (segments and a manifest; parts and a completion).  What is left is the same for both and
lives here once: the HTTP client (an injected ``IAgent``, so that tests can put a fake store
behind it, or by default a pooled ``Agent``), the deadline on requests that carry no body, the
translation of network errors into ``StoreFailure``, the ordered hashing threads, the shape of
an upload (stream it, finish it, or remove all it wrote) and the ranged read of one object.

The dialects (``imaged.store.swift``, ``imaged.store.s3``) hold an ``ObjectStore`` and call
only its public methods; their upload objects do the same with their store.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse

from ..errors import NotFound, StoreFailure
from ..hashing import Digests, HashingLanes
from ..logcontext import Logger
from ..model import StoredBlob
from ..streams import consume
from ..threads import all_done
from .http import NETWORK_ERRORS, Bytes, Pipe, ResponseProducer, Shared, read_all

#: How a dialect fetches the object being read: (method, extra headers) -> the response.
Fetch = Callable[[str, dict[str, str]], Awaitable[IResponse]]

#: How a dialect starts a request whose body is streamed: body -> the response.
Start = Callable[[IBodyProducer], Coroutine[Any, Any, IResponse]]


@attrs.frozen
class NewObject:
    """An object about to be written: a fresh name (never reused, so a retry never meets a
    half-written predecessor), the length the client declared, if any, and its digests."""

    name: str
    length: int | None
    digests: Digests


class Upload(Protocol):
    """One image being written to an object store (a Swift or an S3 upload)."""

    def write(self, data: bytes) -> Deferred[None]:
        """Take the next chunk (hash it, send or buffer it); fires when another may come."""

    async def finish(self) -> None:
        """Everything was written: make the object whole and visible."""

    async def remove(self) -> None:
        """Best effort: take away everything this upload wrote."""


class ObjectStore:
    """
    What the object stores share; see the module's docstring.

    ``reactor`` is the clock of the deadlines; it also runs the hashing threads' results
    (``callFromThread``) and, without ``agent``, the default pooled ``Agent``.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        name: str,
        timeout: float,
        agent: IAgent | None = None,
        error_detail: Callable[[bytes], str | None] | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.clock = reactor
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 16
            agent = Agent(reactor, pool=self._pool)
        self.agent: IAgent = agent
        self.hashing = HashingLanes(reactor, name.lower())
        self._error_detail = error_detail

    def close(self) -> Deferred[None]:
        self.hashing.stop()
        if self._pool is None:
            return succeed(None)
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed

    # -- requests ---------------------------------------------------------------------------

    def unavailable(self, what: str, detail: object) -> StoreFailure:
        return StoreFailure(f"The {self.name} image store is unavailable ({what}: {detail}).")

    def refusal(self, what: str, response: IResponse, body: bytes) -> StoreFailure:
        """The store said no: its status, and what its error body names, if anything."""
        detail = self._error_detail(body) if self._error_detail is not None else None
        return self.unavailable(what, f"HTTP {response.code} {detail or ''}".strip())

    async def send(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: IBodyProducer | None = None,
        what: str | None = None,
    ) -> IResponse:
        """
        One request; the store not answering is ``StoreFailure`` (named ``what``, else the
        method).

        Only a request without a body has a deadline (``timeout`` seconds for its answer): the
        answer to a part or segment upload, or to the completion of a large image, may
        legitimately take minutes.
        """
        what = what or method
        timer: IDelayedCall | None = None
        try:
            answer = self.agent.request(method.encode(), url.encode(), headers, body)
            if body is None:
                timer = self.clock.callLater(self.timeout, answer.cancel)
            return await answer
        except Exception as e:
            if timer is not None and not timer.active():
                # The deadline cancelled the request (whatever the agent made of that).
                raise self.unavailable(what, f"no answer in {self.timeout:g} s") from None
            if isinstance(e, NETWORK_ERRORS):
                raise self.unavailable(what, e) from None
            raise
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    async def content(self, response: IResponse) -> bytes:
        """A response's whole body; the connection failing meanwhile is ``StoreFailure``."""
        try:
            return await read_all(response)
        except NETWORK_ERRORS as e:
            raise self.unavailable("read", e) from None

    async def drain(self, response: IResponse) -> None:
        """Read and drop a body, so that the connection can serve the next request."""
        await self.content(response)

    async def expect(self, response: IResponse, codes: tuple[int, ...], what: str) -> bytes:
        """The body of an answer with one of ``codes``; any other answer is a refusal."""
        body = await self.content(response)
        if response.code not in codes:
            raise self.refusal(what, response, body)
        return body

    async def remove(self, what: str, removal: Awaitable[object]) -> None:
        """Best effort: a removal that fails is logged, not raised (a failure is reported)."""
        try:
            await removal
        except Exception as e:
            self.log.warn(
                "could not remove {what} from {store}: {error}", what=what, store=self.name,
                error=e,
            )

    # -- uploads and reads ------------------------------------------------------------------

    @staticmethod
    def new_object(image_id: str, producer: IBodyProducer, hash_algo: str) -> NewObject:
        length = None if producer.length is UNKNOWN_LENGTH else int(producer.length)
        return NewObject(f"{image_id}.{uuid.uuid4().hex}", length, Digests(hash_algo))

    def hash(self, digests: Digests, data: bytes) -> Deferred[None]:
        """Feed ``data`` to the upload's digests in the hashing threads, in call order."""
        return self.hashing.update(digests, data)

    async def upload(
        self,
        upload: Upload,
        producer: IBodyProducer,
        size_cap: int | None,
        digests: Digests,
        location: str,
    ) -> StoredBlob:
        """Feed ``producer`` to ``upload``; on any failure nothing it wrote is left."""
        try:
            await consume(producer, upload.write, size_cap)
            await upload.finish()
        except Exception:  # not GeneratorExit: a coroutine being closed must not await
            await upload.remove()
            raise
        return StoredBlob(
            size=digests.size,
            checksum=digests.checksum,
            hash_algo=digests.hash_algo,
            hash_value=digests.hash_value,
            location=location,
        )

    async def read(
        self, location: str, fetch: Fetch, offset: int = 0, length: int | None = None
    ) -> IBodyProducer:
        """
        ``length`` bytes of the object from ``offset`` (all that follows, for ``None``), as a
        producer with back-pressure onto the connection.
        """
        if length == 0:
            # Nothing to fetch; still say whether the object exists.
            head = await fetch("HEAD", {})
            await self.drain(head)
            if head.code == 404:
                raise NotFound(f"Image data at {location} is missing")
            return Bytes(b"")
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        response = await fetch("GET", headers)
        if response.code in (404, 416):
            await self.drain(response)
            if response.code == 404:
                raise NotFound(f"Image data at {location} is missing")
            return Bytes(b"")  # the range starts past the end: nothing in it
        if response.code not in (200, 206):
            raise self.refusal("GET", response, await self.content(response))
        if response.length is UNKNOWN_LENGTH:
            raise self.unavailable("GET", "no Content-Length")
        return ResponseProducer(response, int(response.length))


class StreamedRequest:
    """
    A request whose body is streamed as the upload arrives: its ``Pipe`` and its answer.

    The answer is kept (``Shared``) until someone asks: a request failing while nobody waits
    is reported by the next ``send`` or by ``close``, never logged as unhandled.  An empty body
    goes as ``Bytes(b"")``: a ``Pipe`` of length 0 would never be finished by a write.
    """

    def __init__(self, core: ObjectStore, length: int | None, start: Start) -> None:
        self.core = core
        self.pipe = Pipe(length)
        body: IBodyProducer = Bytes(b"") if length == 0 else self.pipe
        self.answer: Shared[IResponse] = Shared(Deferred.fromCoroutine(start(body)))

    async def send(self, data: bytes) -> None:
        if self.answer.called:
            # The store answered before the body was complete: that is a refusal.
            response = await self.answer.get()
            raise self.core.refusal("PUT", response, await self.core.content(response))
        await self.pipe.send(data)

    async def close(self) -> IResponse:
        """The body is complete: the store's answer."""
        self.pipe.finish()
        return await self.answer.get()

    async def abandon(self) -> None:
        """Cut the body short, so that the store drops the request; wait for its end."""
        self.pipe.abort(ConnectionLost("upload abandoned"))
        try:
            await self.answer.get()
        except Exception:
            pass  # the failure we caused, or an earlier one already reported


class Window:
    """
    At most ``size`` requests in flight (the parts of an upload).  ``start`` fires when the
    next may follow, so the caller, and through ``consume`` the client, waits while the window
    is full.  The first failure is kept: the next ``start`` or ``wait`` reports it, and no
    request starts after it.
    """

    def __init__(self, size: int) -> None:
        self._slots = DeferredSemaphore(size)
        self._sending: list[Deferred[None]] = []
        self.failure: Failure | None = None

    def start(self, send: Callable[[], Coroutine[Any, Any, None]]) -> Deferred[None]:
        if self.failure is not None:
            return fail(self.failure)
        started: Deferred[None] = Deferred()

        def go(_: object) -> None:
            if self.failure is not None:  # failed while this one waited for its slot
                self._slots.release()
                started.errback(self.failure)
                return
            sent = Deferred.fromCoroutine(send())
            self._sending.append(sent.addBoth(self._release))
            started.callback(None)

        self._slots.acquire().addCallback(go)
        return started

    def _release(self, result: Failure | None) -> None:
        self._slots.release()
        if isinstance(result, Failure):
            self.failure = self.failure or result

    async def settle(self) -> None:
        """Every request started has ended, however."""
        await all_done(list(self._sending))

    async def wait(self) -> None:
        """Every request started has ended: fails with the first failure, if any."""
        await self.settle()
        if self.failure is not None:
            self.failure.raiseException()


__all__ = ["Fetch", "NewObject", "ObjectStore", "Start", "StreamedRequest", "Upload", "Window"]
