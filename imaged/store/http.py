"""
Streaming HTTP pieces of the object stores (Swift, S3): request and response bodies, answers.

Twisted's ``Agent`` does the HTTP; these adapt it to imaged's streams: an upload's chunks
become a request body with the transport's back-pressure (``Pipe``), a response body becomes
an ``IBodyProducer`` that pauses the connection with its consumer (``ResponseProducer``);
``Shared`` keeps a request's answer until someone asks, ``Gather`` cuts chunks into parts.  They
know nothing of any store, so ``imaged.store.objstore`` and the dialects share them as they are.
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

import treq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

T = TypeVar("T")

#: What a request to an object store can fail with when the store is not there.
NETWORK_ERRORS = (ConnectError, DNSLookupError, TimeoutError, ResponseFailed, ConnectionLost)


def _push_producer(protocol: Protocol | None) -> IPushProducer | None:
    """The transport a response body is delivered over: what pauses the connection."""
    transport = getattr(protocol, "transport", None)
    return None if transport is None else IPushProducer(transport, None)


@implementer(IBodyProducer)
class Pipe:
    """
    The body of an outgoing PUT, fed chunk by chunk by an upload.

    ``send(data)`` fires when the transport has taken the chunk and is not asking us to
    pause, which is how the store's pace reaches ``consume`` and from there the client.
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
            raise ConnectionLost("the store stopped reading the upload")
        assert self._consumer is not None
        self._consumer.write(data)
        if self._paused and not self._stopped:
            self._resumed = Deferred()
            await self._resumed

    def finish(self) -> None:
        if not self._finished.called:
            self._finished.callback(None)

    def abort(self, reason: Exception) -> None:
        """Fail the request; a ``send`` waiting for the transport gives up too."""
        if not self._finished.called:
            self._finished.errback(reason)
        self.stopProducing()


class _Body(Protocol):
    """
    Delivers a response body to a consumer, pausing the store's connection with it.  What
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
            transport = _push_producer(self)
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

    # Protocol declares ``reason: Failure = connectionDone``; a response body always gets one.
    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._held:
            self._ended = reason  # finish once what is held has been delivered
            return
        self._end(reason)

    def _end(self, reason: Failure) -> None:
        if self.stopped or self._done.called:
            return
        if isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self._done.callback(None)
        else:
            self._done.errback(reason)


@implementer(IBodyProducer, IPushProducer)
class ResponseProducer:
    """A GET's body as an ``IBodyProducer`` with back-pressure onto the store's connection."""

    def __init__(self, response: IResponse, length: int) -> None:
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

    def _transport(self) -> IPushProducer | None:
        return _push_producer(self._protocol)

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




class Shared(Generic[T]):
    """
    One ``Deferred``'s outcome (a request's answer, say) for any number of awaiters.

    A ``Deferred`` hands its result to its first awaiter only (the next one sees what that
    awaiter's callback returned), and a failure nobody awaits yet would be logged as an
    unhandled error when collected.  Here the outcome is kept as a value until someone asks.
    """

    def __init__(self, work: Deferred[T]) -> None:
        self.called = False
        self._outcome: T | Failure | None = None
        self._waiters: list[Deferred[T]] = []
        work.addBoth(self._settle)

    def _settle(self, outcome: T | Failure) -> None:
        self.called, self._outcome = True, outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._fire(waiter)

    def _fire(self, waiter: Deferred[T]) -> None:
        if isinstance(self._outcome, Failure):
            waiter.errback(self._outcome)
        else:
            waiter.callback(cast(T, self._outcome))

    def get(self) -> Deferred[T]:
        waiter: Deferred[T] = Deferred()
        if self.called:
            self._fire(waiter)
        else:
            self._waiters.append(waiter)
        return waiter


class Gather:
    """
    Chunks gathered into pieces of a set size (S3 parts, whose length S3 needs up front).
    A piece is joined once; only the chunk that straddles its end is split: one copy a piece.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self.size += len(data)

    def take(self, size: int | None = None) -> bytes:
        """The first ``size`` bytes gathered (all of them, for ``None``)."""
        needed = self.size if size is None else min(size, self.size)
        self.size -= needed
        chunks: list[bytes] = []
        while needed:
            chunk = self._chunks.pop(0)
            if len(chunk) > needed:
                self._chunks.insert(0, chunk[needed:])
                chunk = chunk[:needed]
            chunks.append(chunk)
            needed -= len(chunk)
        return b"".join(chunks)


def header(response: IResponse, name: bytes) -> str:
    """The first value of a response header, ``""`` when it is absent."""
    headers: Headers = response.headers  # an Attribute of IResponse: untyped there
    return headers.getRawHeaders(name, [b""])[0].decode()


async def read_all(response: IResponse) -> bytes:
    """A response's whole body (a body cut short without a length counts as empty)."""
    try:
        return await treq.content(response)
    except PotentialDataLoss:
        return b""


__all__ = [
    "NETWORK_ERRORS", "Bytes", "Gather", "Pipe", "ResponseProducer", "Shared", "header",
    "read_all",
]
