"""
Streaming HTTP pieces shared by the object-store blob stores (Swift, S3).

Twisted's ``Agent`` does the HTTP; these adapt it to imaged's streams: an upload's chunks
become a request body with the transport's back-pressure (``Pipe``), a response body becomes
an ``IBodyProducer`` that pauses the connection with its consumer (``ResponseProducer``).
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as Interface

import treq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from ..hashing import Digests, HashingLanes
from ..model import StoredBlob
from ..streams import consume

#: What a request to an object store can fail with when the store is not there.
NETWORK_ERRORS = (ConnectError, DNSLookupError, TimeoutError, ResponseFailed, ConnectionLost)


@implementer(IBodyProducer)
class Pipe:
    """
    The body of an outgoing PUT, fed chunk by chunk by an upload.

    ``send(data)`` fires when the transport has taken the chunk and is not asking us to
    pause, which is how Swift's pace reaches ``consume`` and from there the client.
    """

    def __init__(self, length: int | None) -> None:
        self.length = UNKNOWN_LENGTH if length is None else length
        self._consumer: IConsumer | None = None
        self._started: Deferred[None] = Deferred()
        self._finished: Deferred[None] = Deferred()
        self._paused = False
        self._resumed: Deferred[None] | None = None
        self._stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._started.callback(None)
        return self._finished

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._resumed is not None:
            resumed, self._resumed = self._resumed, None
            resumed.callback(None)

    def stopProducing(self) -> None:
        self._stopped = True
        self.resumeProducing()

    async def send(self, data: bytes) -> None:
        if self._consumer is None:
            await self._started
        if self._stopped:
            raise ConnectionLost("Swift stopped reading the upload")
        assert self._consumer is not None
        self._consumer.write(data)
        if self._paused and not self._stopped:
            self._resumed = Deferred()
            await self._resumed

    def finish(self) -> None:
        if not self._finished.called:
            self._finished.callback(None)

    def abort(self, failure: Failure) -> None:
        if not self._finished.called:
            self._finished.errback(failure)


class _Body(Protocol):
    """
    Delivers a response body to a consumer, pausing Swift's connection with it.  What
    arrives while paused (a response's first bytes can come before anyone asked) is held
    until resumed.
    """

    def __init__(self, consumer: IConsumer, done: Deferred[None]) -> None:
        self._consumer = consumer
        self._done = done
        self._held: list[bytes] = []
        self._ended: Failure | None = None
        self.paused = False
        self.stopped = False

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        if self.paused:
            self._held.append(data)
            transport: Any = self.transport
            if transport is not None:
                transport.pauseProducing()
            return
        self._consumer.write(data)

    def resume(self) -> None:
        self.paused = False
        while self._held and not self.paused and not self.stopped:
            self._consumer.write(self._held.pop(0))
        if not self._held and self._ended is not None:
            ended, self._ended = self._ended, None
            self._end(ended)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._held:
            self._ended = reason  # finish once what is held has been delivered
            return
        self._end(reason)

    def _end(self, reason: Failure) -> None:
        if self.stopped or self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(None)
        else:
            self._done.errback(reason)


@implementer(IBodyProducer, IPushProducer)
class ResponseProducer:
    """A GET's body as an ``IBodyProducer`` with back-pressure onto Swift's connection."""

    def __init__(self, response: Any, length: int) -> None:
        self.length = length
        self._response = response
        self._protocol: _Body | None = None
        self._paused = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self._protocol = _Body(consumer, done)
        self._protocol.paused = self._paused
        self._response.deliverBody(self._protocol)
        if self._paused:
            self.pauseProducing()
        return done

    def _transport(self) -> Any:
        return getattr(self._protocol, "transport", None)

    def pauseProducing(self) -> None:
        self._paused = True
        if self._protocol is not None:
            self._protocol.paused = True
        transport = self._transport()
        if transport is not None:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        transport = self._transport()
        if transport is not None:
            transport.resumeProducing()
        if self._protocol is not None:
            self._protocol.resume()

    def stopProducing(self) -> None:
        if self._protocol is not None:
            self._protocol.stopped = True
        transport = self._transport()
        if transport is not None:
            transport.stopProducing()


@implementer(IBodyProducer)
class Bytes:
    """
    A request body held in memory (a manifest, an S3 part), written in slices.

    Handing a transport one 16 MiB write makes it keep a copy until the socket has taken it
    all; slices written as the transport asks keep that at a slice.
    """

    SLICE = 256 * 1024

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.length = len(data)
        self._position = 0
        self._paused = False
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] = Deferred()

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._write()
        return self._done

    def _write(self) -> None:
        while not self._paused and self._position < self.length and self._consumer:
            end = self._position + self.SLICE
            self._consumer.write(bytes(self._view[self._position:end]))
            self._position = end
        if self._position >= self.length and not self._done.called:
            self._view.release()
            self._done.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._write()

    def stopProducing(self) -> None:
        self._paused = True
        self._consumer = None


class FailedRequest:
    """A request that failed, kept as a value until someone asks."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure


async def read_all(response: Any) -> bytes:
    try:
        body: bytes = await treq.content(response)
    except PotentialDataLoss:
        return b""
    except NETWORK_ERRORS:
        raise
    return body


async def drain(response: Any) -> None:
    await read_all(response)




class Upload(Interface):
    """One image being written to an object store (a Swift or an S3 upload)."""

    def write(self, data: bytes) -> Deferred[Any]: ...

    async def finish(self) -> None: ...

    async def remove(self) -> None: ...


class ObjectStoreClient:
    """
    What the object stores share: pooled HTTP connections to the store, the hashing lanes, and
    the shape of an upload: stream it, finish it, or remove what it wrote.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.agent = Agent(reactor, pool=self.pool)
        self.hashing = HashingLanes(reactor, name)

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
            failure = Failure()
            await upload.remove()
            failure.raiseException()
        return StoredBlob(
            size=digests.size,
            checksum=digests.checksum,
            hash_algo=digests.hash_algo,
            hash_value=digests.hash_value,
            location=location,
        )

    def close(self) -> Deferred[None]:
        self.hashing.stop()
        closed: Deferred[None] = self.pool.closeCachedConnections()
        return closed


__all__ = [
    "NETWORK_ERRORS", "Bytes", "FailedRequest", "ObjectStoreClient", "Pipe", "ResponseProducer",
    "Upload", "drain",
    "read_all",
]
