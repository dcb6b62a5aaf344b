"""
Request bodies handed on while they arrive: the one module that touches Twisted's internals.

twisted.web routes a request only after its whole body has been received (and spooled to a
temporary file).  For image uploads that means a second full write, hashing after the fact, and
accepting gigabytes before anyone checked who sent them.  Here a ``Request`` subclass looks at
the pending request line when the headers are complete (``gotLength``), asks the site's
``body_router`` whether this body should be streamed, and if so replaces ``request.content``
with a ``BodyStream``: an ``IBodyProducer`` that the image service consumes as bytes arrive,
with back-pressure on the TCP transport.

Twisted internals used (all read here, nowhere else; ``tests/test_streaming_wire.py`` fails
loudly if an upgrade changes them):

- ``HTTPChannel._command`` and ``HTTPChannel._path``: the request line, which
  ``Request.method``/``uri`` only receive once the body is complete;
- ``Request.gotLength`` being called after all headers and before any body byte, and
  ``Request.content.write`` receiving each body chunk (``handleContentChunk``);
- ``Request.transport`` being the connection's ``IPushProducer`` (HTTP/1.1);
- ``tcp.Connection.bufferSize`` and ``SEND_LIMIT``, the bytes read per ``recv`` and written
  per ``send`` (64 KiB and 128 KiB by default), raised for connections that carry image data
  (``tune_for_bulk``): per-call Python work, not the kernel, bounds bulk transfers here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.server import Request, Site
from zope.interface import implementer

#: Bytes per socket read and per socket write on connections moving image data.
BULK_IO = 1024 * 1024


def tune_for_bulk(transport: Any) -> None:
    """Read and write in large pieces on a connection that carries image data."""
    if hasattr(transport, "bufferSize") and hasattr(transport, "SEND_LIMIT"):
        transport.bufferSize = max(transport.bufferSize, BULK_IO)
        transport.SEND_LIMIT = max(transport.SEND_LIMIT, BULK_IO)


#: Bytes a stream keeps while its consumer has not started or has paused it; past this the
#: socket is paused (it is paused again on every chunk, as the channel may resume it).
BUFFER_LIMIT = 256 * 1024


@implementer(IBodyProducer)
class BodyStream:
    """
    A request body as an ``IBodyProducer``, fed by the connection as it arrives.

    Also file-like enough to stand in for ``request.content`` (``write``, ``seek``, ``tell``,
    ``read``, ``close``), which is how Twisted hands it the body.  After ``stopProducing`` (the
    consumer gave up: size cap, store error, rejected upload) the rest of the body is read and
    dropped, so the connection can carry the error response.
    """

    def __init__(self, transport: Any, length: int | None) -> None:
        self.length = UNKNOWN_LENGTH if length is None else length
        self._transport = transport
        self._consumer: Any = None
        self._done: Deferred[None] = Deferred()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._discarding = False
        self._complete = False
        self._socket_paused = False
        self.received = 0

    # -- IBodyProducer ------------------------------------------------------------------------

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self._consumer = consumer
        self._flush()
        return self._done

    def pauseProducing(self) -> None:
        self._paused = True
        self._pause_socket()

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        """The consumer is done with us: drop what is buffered and what is still to come."""
        self._discarding = True
        self._buffer, self._buffered = [], 0
        self._resume_socket()

    # -- fed by the connection -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self._discarding:
            return
        if self._consumer is None or self._paused or self._buffer:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered >= BUFFER_LIMIT or self._paused:
                self._pause_socket()
            return
        self._consumer.write(data)

    def body_complete(self) -> None:
        """The last body byte has arrived."""
        self._complete = True
        self._flush()

    def connection_lost(self, reason: Failure | None = None) -> None:
        """The client went away before the body was complete."""
        if self._complete or self._discarding:
            return
        self._discarding = True
        self._buffer, self._buffered = [], 0
        # Only a started stream has someone waiting on its Deferred.
        if self._consumer is not None and not self._done.called:
            self._done.errback(reason or Failure(ConnectionLost("client disconnected")))

    # -- file-like stand-in for request.content ------------------------------------------------

    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.received

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass

    # -- internals -------------------------------------------------------------------------------

    def _flush(self) -> None:
        while self._buffer and not self._paused and self._consumer is not None:
            data = self._buffer.pop(0)
            self._buffered -= len(data)
            self._consumer.write(data)
        if self._buffer or self._paused:
            return
        if self._complete:
            if not self._done.called and not self._discarding and self._consumer is not None:
                self._done.callback(None)
        else:
            self._resume_socket()

    def _pause_socket(self) -> None:
        # Re-done on every chunk: the channel resumes reading whenever its output drains.
        if not self._complete and self._transport is not None:
            self._socket_paused = True
            self._transport.pauseProducing()

    def _resume_socket(self) -> None:
        if self._socket_paused and not self._complete and self._transport is not None:
            self._socket_paused = False
            self._transport.resumeProducing()


#: ``body_router(request, method, path, length)`` returns a ``BodyStream`` to stream this
#: request's body, or ``None`` to let Twisted spool it as usual.
BodyRouter = Callable[[Request, bytes, bytes, "int | None"], "BodyStream | None"]


class StreamingRequest(Request):
    """A ``Request`` whose body may be streamed (see the module docstring)."""

    body_stream: BodyStream | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: When the request began (its headers arrived), for the access log's duration.
        self.began = time.monotonic()

    def gotLength(self, length: int | None) -> None:
        router: BodyRouter | None = getattr(
            getattr(self.channel, "site", None), "body_router", None
        )
        method = getattr(self.channel, "_command", None)
        path = getattr(self.channel, "_path", None)
        if router is not None and method is not None and path is not None:
            stream = router(self, method, path, length)
            if stream is not None:
                tune_for_bulk(self.transport)
                self.body_stream = stream
                self.content = stream
                return
        super().gotLength(length)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body_stream is not None:
            self.body_stream.body_complete()
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        if self.body_stream is not None:
            self.body_stream.connection_lost(reason)
        super().connectionLost(reason)


class StreamingSite(Site):
    """A ``Site`` whose requests can stream their bodies to ``body_router``'s consumers."""

    requestFactory = StreamingRequest

    def __init__(
        self,
        resource: Any,
        body_router: BodyRouter | None = None,
        on_finished: Callable[[Request], None] | None = None,
        **kwargs: Any,
    ):
        super().__init__(resource, **kwargs)
        self.body_router = body_router
        self.on_finished = on_finished

    def log(self, request: Any) -> None:
        """Twisted's hook when a response is complete: imaged's own access log instead."""
        if self.on_finished is not None:
            self.on_finished(request)
