"""
The one module that touches Twisted's internals: streamed request bodies, and per-client limits.

twisted.web routes a request only after its whole body has been received (and spooled to a
temporary file).  For image uploads that means a second full write, hashing after the fact, and
accepting gigabytes before anyone checked who sent them.  Here a ``Request`` subclass looks at
the pending request line when the headers are complete (``gotLength``), asks the site's
``body_router`` whether this body should be streamed, and if so replaces ``request.content``
with a ``BodyStream``: an ``IBodyProducer`` that the image service consumes as bytes arrive,
with back-pressure on the TCP transport.

Every other body is held to ``HTTPLimits.max_request_body`` (Glance's
``max_request_body_size``): decided at the headers from ``Content-Length``, counted while a
chunked body arrives.  Past it the client gets its 413 at once, in Glance's error format, and the
rest of the body is read and dropped, never spooled or parsed, until it is in or the client
stalls (a bounded "lingering close", as nginx does, so that a client still sending can read the
answer before the connection closes).  Such a request never reaches the application.

Twisted's idle timeout restarts with every byte, so a client trickling a byte every few seconds
holds its connection for ever.  ``LimitedChannel`` adds deadlines on the connection's own clock
(``callLater``, which tests replace with a ``Clock``): a request's headers must be complete
within ``header_timeout`` of their first byte (of the connection's opening, for its first
request); a body must not go ``body_timeout`` without a byte, unless imaged itself stopped
reading it (a slow store pausing an upload).  Either is answered 408 and closed.  Idle
keep-alive connections keep Twisted's own timeout.  ``StreamingSite`` refuses connections past
``max_connections`` on accept, reporting each burst of refusals once (``ConnectionGate``).

Twisted internals used (all read here, nowhere else; ``tests/test_streaming_wire.py`` and
``tests/test_limits.py`` fail loudly if an upgrade changes them):

- ``HTTPChannel._command``, ``HTTPChannel._path`` and ``HTTPChannel._version``: the request
  line, which ``Request.method``/``uri``/``clientproto`` only receive once the body is complete;
- ``Request.gotLength`` being called after all headers and before any body byte, and before the
  channel looks at ``Expect: 100-continue`` (a refused request's is removed, so no ``100
  Continue`` invites the body); ``Request.handleContentChunk`` receiving each body chunk (and
  writing it to ``Request.content``);
- ``HTTPChannel.headerReceived`` (each header line, returning whether it was valid) and
  ``HTTPChannel._respondToBadRequestAndDisconnect`` (Twisted's bare 400);
- ``HTTPChannel``'s parsing hooks: ``dataReceived`` (every byte), ``rawDataReceived`` (body
  bytes while ``allHeadersReceived`` has been called and ``allContentReceived`` has not),
  ``allHeadersReceived``, ``allContentReceived`` (which hands the request to the application),
  ``requestDone`` (a response is complete; buffered pipelined bytes are replayed through
  ``dataReceived``), ``loseConnection`` and ``connectionLost``;
- ``_GenericHTTPChannelProtocol``, the ``IProtocol`` a ``Site`` builds around its
  ``HTTPChannel`` (``Site.protocol``), wrapped here around a ``LimitedChannel``; on HTTP/2 it
  replaces its ``_channel``;
- ``HTTPChannel.length`` (of the body about to be received), ``HTTPChannel.requests`` (the one
  being received is the last), ``HTTPChannel.persistent`` and ``HTTPChannel.abortTimeout``;
  ``TimeoutMixin``'s ``timeoutConnection`` (overridden: a request's own deadline outranks the
  idle timeout), ``setTimeout`` and ``timeOut``;
- ``HTTPFactory.buildProtocol`` setting the channel's ``callLater`` from the site's ``reactor``;
- ``Request.transport`` being the connection's ``IPushProducer`` (HTTP/1.1);
- ``tcp.Connection.bufferSize`` and ``SEND_LIMIT``, the bytes read per ``recv`` and written
  per ``send`` (64 KiB and 128 KiB by default), raised for connections that carry image data
  (``tune_for_bulk``): per-call Python work, not the kernel, bounds bulk transfers here.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import (
    HTTPChannel,
    _GenericHTTPChannelProtocol,
    datetimeToString,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.server import Request, Site
from twisted.web.server import version as server_version
from zope.interface import implementer

from ..logcontext import Logger
from .errors import error_body
from .routing import request_id

log = Logger(namespace="imaged.web.streaming")

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

    @property
    def reading_paused(self) -> bool:
        """Whether this stream has stopped the socket (its consumer is slow): the client is
        waiting on imaged, not the other way round."""
        return self._socket_paused

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



#: Glance's (oslo.middleware's) ``max_request_body_size``: 112 KiB.
MAX_REQUEST_BODY = 114_688
#: nginx's ``client_header_timeout`` and ``client_body_timeout``.
HEADER_TIMEOUT = 60.0
BODY_TIMEOUT = 60.0
#: Connections served at once when the open-files limit allows it.
MAX_CONNECTIONS = 4096
#: File descriptors kept for everything but client connections (database, listeners, logs,
#: thread pools); each connection is counted twice, for the file or store connection an upload
#: or download opens besides its socket.
FD_RESERVE = 64


def default_max_connections(limit: int | None = None) -> int:
    """
    ``MAX_CONNECTIONS``, or fewer when the process may not open that many files:
    ``(RLIMIT_NOFILE - FD_RESERVE) / 2``.  Past the file limit ``accept`` fails with EMFILE,
    Twisted retries it on every reactor turn, and file and store operations fail too; refusing
    connections below it keeps the process working.  ``limit`` (the soft ``RLIMIT_NOFILE``) is
    read from the process when not given.
    """
    if limit is None:
        try:
            import resource

            limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            if limit == resource.RLIM_INFINITY:
                return MAX_CONNECTIONS
        except (ImportError, OSError, ValueError):  # no resource module (Windows)
            return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (limit - FD_RESERVE) // 2))


@attrs.frozen
class HTTPLimits:
    """
    What one client may make the server hold before it is served; ``None`` is no limit.  The
    defaults are Glance's and nginx's: a daemon started without options gets them, and so does
    a program that embeds ``make_site``.
    """

    #: Largest request body read for a request whose route does not stream it (every request
    #: but image uploads), in bytes.
    max_request_body: int | None = MAX_REQUEST_BODY
    #: Seconds from a request's first byte (from the connection's opening, for its first
    #: request) to the end of its headers.
    header_timeout: float | None = HEADER_TIMEOUT
    #: Seconds a request body may go without a byte (while imaged is reading it).
    body_timeout: float | None = BODY_TIMEOUT
    #: Connections served at once; more are closed on accept.
    max_connections: int | None = attrs.field(factory=default_max_connections)
    #: After a 413, the rest of the body is read and dropped while it keeps coming (at most
    #: this many seconds between two reads) and for at most ``linger_time`` seconds in all:
    #: nginx's ``lingering_timeout`` and ``lingering_time``.
    linger_timeout: float = 5.0
    linger_time: float = 30.0


class ConnectionGate:
    """
    Counts a site's open connections and refuses new ones past its limit.  A burst of refusals
    is reported once, when it starts (at most every ``REPORT_INTERVAL`` seconds), and once when
    the site is below ``RECOVERED_AT`` of its limit again, with the number refused: an overload
    must not also flood the log.
    """

    REPORT_INTERVAL = 60.0
    RECOVERED_AT = 0.9

    def __init__(self, limit: int | None, clock: IReactorTime) -> None:
        self.limit = limit
        self.clock = clock
        self.open = 0
        #: Connections refused since the last report.
        self.refused = 0
        self._refusing = False
        self._reported = False
        self._reported_at: float | None = None

    def admit(self) -> bool:
        """Whether a new connection may be served."""
        if self.limit is None or self.open < self.limit:
            return True
        self.refused += 1
        if not self._refusing:
            self._refusing = True
            now = self.clock.seconds()
            if self._reported_at is None or now - self._reported_at >= self.REPORT_INTERVAL:
                self._reported_at = now
                self._reported = True
                log.warn(
                    "{open} connections open, the limit (--max-connections): refusing new "
                    "connections until some close",
                    open=self.open, limit=self.limit,
                )
        return False

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1
        if (
            self._refusing
            and self.limit is not None
            and self.open <= min(self.limit - 1, int(self.limit * self.RECOVERED_AT))
        ):
            self._refusing = False
            if self._reported:
                self._reported = False
                log.info(
                    "accepting connections again ({open} open); {refused} refused meanwhile",
                    open=self.open, limit=self.limit, refused=self.refused,
                )
                self.refused = 0


#: ``body_router(request, method, path, length)`` returns a ``BodyStream`` to stream this
#: request's body, or ``None`` to let Twisted spool it as usual.
BodyRouter = Callable[[Request, bytes, bytes, "int | None"], "BodyStream | None"]


#: For a ``StreamingRequest`` on a site that has no ``limits`` (Twisted's own, in tests).
NO_LIMITS = HTTPLimits(
    max_request_body=None, header_timeout=None, body_timeout=None, max_connections=None
)


def _limits_of(site: object) -> HTTPLimits:
    limits: HTTPLimits | None = getattr(site, "limits", None)
    return limits if limits is not None else NO_LIMITS


def _peer(transport: Any) -> str:
    try:
        address = transport.getPeer()
    except Exception:  # a transport in a test, or one that is gone
        return "-"
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None else str(address)


class _Phase(enum.Enum):
    """Where a connection is in its current request, for the deadlines."""

    IDLE = "idle"  # between requests: Twisted's idle timeout only
    HEADERS = "headers"  # receiving a request line and headers: header_timeout
    BODY = "body"  # receiving a body: body_timeout without progress
    LINGERING = "lingering"  # reading and dropping a refused body: linger bounds
    HANDLING = "handling"  # the application has the request
    CLOSING = "closing"  # closed or closing: nothing more is read


#: The phases in which a request is being received, under one of the channel's deadlines.
_RECEIVING = frozenset({_Phase.HEADERS, _Phase.BODY, _Phase.LINGERING})


class LimitedChannel(HTTPChannel):
    """
    An ``HTTPChannel`` with deadlines for headers and bodies, and the bounded lingering close
    after a refused body (see the module docstring).  Its site's ``limits`` say how long.
    """

    _phase = _Phase.IDLE
    #: Whether a byte of the request being received has arrived (no byte: no 408 is owed).
    _request_started = False
    _deadline: IDelayedCall | None = None
    _deadline_period: float | None = None
    _linger_end: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None

    @property
    def limits(self) -> HTTPLimits:
        return _limits_of(getattr(self, "site", None))

    # -- Twisted's hooks -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        # A new connection owes its first request's headers from now on, as in nginx: a client
        # that connects and sends nothing is held to --header-timeout, not the idle timeout.
        self._phase = _Phase.HEADERS
        self._request_started = False
        self._arm(self.limits.header_timeout, self._headers_late)

    def dataReceived(self, data: bytes) -> None:
        if self._phase is _Phase.CLOSING:
            return  # nothing read after a close decision (a refused body's tail, a slow client)
        if data and self._phase is _Phase.IDLE:
            # The first byte of a request on a kept-alive connection (or of one that was
            # pipelined behind the last, replayed by requestDone).
            self._phase = _Phase.HEADERS
            self._arm(self.limits.header_timeout, self._headers_late)
        if data and self._phase is _Phase.HEADERS:
            self._request_started = True
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        period = self._deadline_period
        if self._deadline is not None and period is not None and self._phase in (
            _Phase.BODY, _Phase.LINGERING
        ):
            self._deadline.reset(period)  # progress (the headers' deadline is not reset)
        super().rawDataReceived(data)

    def headerReceived(self, line: bytes) -> bool:
        """
        A ``Content-Length`` no body can have (more than 18 digits: over an exabyte) is a 400
        here: Twisted's ``int()`` of thousands of digits raises out of its parser, which logs a
        traceback for one small request.
        """
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and len(value.strip(b" \t")) > 18:
            self._respondToBadRequestAndDisconnect()
            return False
        accepted: bool = super().headerReceived(line)
        return accepted

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        self._phase = _Phase.BODY
        super().allHeadersReceived()  # the request's gotLength may refuse the body (LINGERING)
        if self._phase is _Phase.BODY and self.length != 0:
            self._arm(self.limits.body_timeout, self._body_late)

    def allContentReceived(self) -> None:
        if self._phase is _Phase.LINGERING:
            # A refused body is all in: its 413 has gone out, close (the client reads no RST).
            self._close()
            return
        self._cancel_deadline()
        self._phase = _Phase.HANDLING
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if self.persistent:
            # Before Twisted replays pipelined bytes (through dataReceived) and resumes reading.
            self._phase = _Phase.IDLE
        super().requestDone(request)

    def timeoutConnection(self) -> None:
        """
        Twisted's idle timeout.  While a request is being received and one of this channel's
        deadlines covers it, that deadline decides: Twisted's would close an upload that imaged
        itself paused, and would close without the 408 when both expire together.
        """
        if self._deadline is not None and self._phase in _RECEIVING:
            self.setTimeout(self.timeOut)  # keep it running for when the request is done
            return
        super().timeoutConnection()

    def loseConnection(self) -> None:
        if self._phase is _Phase.CLOSING:
            return  # already closing (Twisted's transports differ on a second close)
        self._cancel_deadline()
        self._phase = _Phase.CLOSING
        super().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        self._phase = _Phase.CLOSING
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        super().connectionLost(reason)

    # -- a refused body --------------------------------------------------------------------------

    def linger(self) -> None:
        """
        The current request's body was refused and its answer written: read and drop what is
        still coming, so that a client busy sending can read the answer, but only while the
        body keeps coming (``linger_timeout``) and for ``linger_time`` at most.
        """
        self._cancel_deadline()
        self._phase = _Phase.LINGERING
        limits = self.limits
        self._arm(limits.linger_timeout, self._linger_over)
        self._linger_end = self.callLater(limits.linger_time, self._linger_over)

    def abandon(self) -> None:
        """Another channel took over this connection (HTTP/2): forget the deadlines."""
        self._cancel_deadline()
        self._phase = _Phase.CLOSING

    # -- deadlines -------------------------------------------------------------------------------

    def _arm(self, period: float | None, expired: Callable[[], None]) -> None:
        self._cancel_deadline()
        if period is not None:
            self._deadline_period = period
            self._deadline = self.callLater(period, expired)

    def _cancel_deadline(self) -> None:
        for call in (self._deadline, self._linger_end):
            if call is not None and call.active():
                call.cancel()
        self._deadline = self._linger_end = None

    def _headers_late(self) -> None:
        self._deadline = None
        timeout = self.limits.header_timeout
        if not self._request_started:
            log.debug("closing {client}: no request within {timeout} s of connecting",
                      client=_peer(self.transport), timeout=timeout)
            self._close()
            return
        log.info(
            "closing {client}: request headers not complete {timeout} s after they began",
            client=_peer(self.transport), timeout=timeout, phase="headers",
        )
        request = self.requests[-1] if self.requests else None
        self._answer(408, "The server has waited too long for the request to be sent by "
                     "the client.", request)
        self._close()

    def _body_late(self) -> None:
        self._deadline = None
        timeout = self.limits.body_timeout
        request = self.requests[-1] if self.requests else None
        stream: BodyStream | None = getattr(request, "body_stream", None)
        if stream is not None and stream.reading_paused:
            # imaged stopped reading this upload (its store is slow): not the client's delay.
            self._arm(timeout, self._body_late)
            return
        log.info(
            "closing {client}: no request body received for {timeout} s ({method} {path})",
            client=_peer(self.transport), timeout=timeout, phase="body",
            method=_text(getattr(self, "_command", b"-")),
            path=_text(getattr(self, "_path", b"-")).partition("?")[0],
        )
        self._answer(408, "The server has waited too long for the request to be sent by "
                     "the client.", request)
        self._close()

    def _linger_over(self) -> None:
        log.debug("closing {client}: a refused body still coming", client=_peer(self.transport))
        self._close()

    def _answer(self, code: int, message: str, request: Any) -> None:
        """Write an error response in Glance's format, if no response has begun."""
        if request is not None and getattr(request, "startedWriting", False):
            return
        accept = None
        if request is not None:
            values = request.requestHeaders.getRawHeaders(b"accept")
            accept = values[0].decode("latin-1") if values else None
        body, content_type = error_body(code, message, accept)
        headers = Headers({
            b"Content-Type": [content_type],
            b"Content-Length": [b"%d" % len(body)],
            b"Connection": [b"close"],
            b"Date": [datetimeToString()],
            b"Server": [server_version],
        })
        reason = HTTPStatus(code).phrase.encode("ascii")  # as the body says it
        self.writeHeaders(b"HTTP/1.1", b"%d" % code, reason, headers)
        self.write(body)

    def _close(self) -> None:
        """Close after what is written has gone out, or abort if the client does not read it."""
        self.setTimeout(None)  # the abort below bounds the close; no idle timeout after it
        if self._abort_call is None and self.abortTimeout is not None:
            self._abort_call = self.callLater(self.abortTimeout, self._abort)
        self.loseConnection()

    def _abort(self) -> None:
        self._abort_call = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class StreamingRequest(Request):
    """A ``Request`` whose body may be streamed or refused (see the module docstring)."""

    body_stream: BodyStream | None = None
    #: Bytes of a body not streamed received so far (a refused one's included).
    body_received = 0
    #: Whether the body was refused (413 answered): the rest of it is dropped as it comes.
    body_refused = False
    #: The most this request's body may hold (None: streamed, or no limit).
    _body_limit: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: When the request began (its headers arrived), for the access log's duration.
        self.began = time.monotonic()

    def gotLength(self, length: int | None) -> None:
        site = getattr(self.channel, "site", None)
        router: BodyRouter | None = getattr(site, "body_router", None)
        method = getattr(self.channel, "_command", None)
        path = getattr(self.channel, "_path", None)
        if router is not None and method is not None and path is not None:
            stream = router(self, method, path, length)
            if stream is not None:
                tune_for_bulk(self.transport)
                self.body_stream = stream
                self.content = stream
                return
        self._body_limit = _limits_of(site).max_request_body
        if self._body_limit is not None and length is not None and length > self._body_limit:
            self._refuse_body(declared=length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_stream is None:
            self.body_received += len(data)
            if self.body_refused:
                return
            if self._body_limit is not None and self.body_received > self._body_limit:
                self._refuse_body(declared=None)
                return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body_refused:
            return  # answered already; never handed to the application
        if self.body_stream is not None:
            self.body_stream.body_complete()
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        if self.body_stream is not None:
            self.body_stream.connection_lost(reason)
        super().connectionLost(reason)

    def _refuse_body(self, declared: int | None) -> None:
        """Answer 413 now, drop the body, and never hand this request to the application."""
        limit = self._body_limit
        self.body_refused = True
        if self.content is not None:
            self.content.close()  # a chunked body's first bytes: dropped, never parsed
            self.content = None
        channel = self.channel
        self.method = getattr(channel, "_command", b"-")
        self.uri = getattr(channel, "_path", b"-")
        self.clientproto = getattr(channel, "_version", b"HTTP/1.1")
        self.path = self.uri.split(b"?", 1)[0]
        # Twisted answers "Expect: 100-continue" after gotLength: it must not invite this body.
        self.requestHeaders.removeHeader(b"expect")
        if declared is not None:
            message = f"Request is too large. Larger than max_request_body_size ({limit})."
        else:
            message = f"Request is too large. Larger than {limit}."
        accept = self.getHeader(b"accept")
        body, content_type = error_body(
            413, message, accept.decode("latin-1") if accept is not None else None
        )
        rid = request_id(self)
        self.setResponseCode(413)
        self.setHeader(b"Content-Type", content_type)
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.setHeader(b"Connection", b"close")
        self.setHeader(b"x-openstack-request-id", rid.encode("ascii"))
        self.setHeader(b"Date", datetimeToString())
        self.setHeader(b"Server", server_version)
        self.write(body)
        log.warn(
            "{method} {path} from {client}: request body too large ({size}; "
            "--max-request-body is {limit}): answered 413, the rest is dropped unread",
            method=_text(self.method), path=_text(self.path), client=_peer(self.transport),
            size=f"Content-Length {declared}" if declared is not None
            else f"chunked, {self.body_received} bytes so far",
            declared=declared, received=self.body_received, limit=limit, request_id=rid,
        )
        site = getattr(channel, "site", None)
        if site is not None:
            site.log(self)  # the access log and request metrics, as for any answered request
        linger: Callable[[], None] | None = getattr(channel, "linger", None)
        if linger is not None:
            linger()
        else:
            channel.loseConnection()


class RefusedConnection(Protocol):
    """
    A connection over the limit: closed as soon as it is made.  (Not ``None`` from
    ``buildProtocol``: a TCP port closes the socket then, but TLS wraps whatever the factory
    returns, and would fail on ``None``.)
    """

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


class _CountedHTTPProtocol(_GenericHTTPChannelProtocol):
    """Twisted's HTTP protocol (HTTP/1.1, or HTTP/2 after ALPN), counted by its site's gate."""

    gate: ConnectionGate | None = None

    def makeConnection(self, transport: Any) -> None:
        if self.gate is not None:
            self.gate.opened()
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        channel = self._channel
        super().dataReceived(data)
        if self._channel is not channel and isinstance(channel, LimitedChannel):
            channel.abandon()  # HTTP/2 negotiated: the HTTP/1.1 channel's deadlines are void

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            gate, self.gate = self.gate, None
            if gate is not None:
                gate.closed()


def _limited_protocol(site: StreamingSite) -> _CountedHTTPProtocol:
    """``Site.protocol``: a ``LimitedChannel`` in Twisted's protocol, counted by the gate."""
    protocol = _CountedHTTPProtocol(LimitedChannel())
    protocol.gate = site.gate
    return protocol


class StreamingSite(Site):
    """
    A ``Site`` whose requests can stream their bodies to ``body_router``'s consumers, held to
    ``limits`` (see the module docstring).  ``reactor`` is the clock of its deadlines.
    """

    requestFactory = StreamingRequest
    protocol = _limited_protocol

    def __init__(
        self,
        resource: Any,
        body_router: BodyRouter | None = None,
        on_finished: Callable[[Request], None] | None = None,
        limits: HTTPLimits | None = None,
        **kwargs: Any,
    ):
        super().__init__(resource, **kwargs)
        self.body_router = body_router
        self.on_finished = on_finished
        self.limits = limits if limits is not None else HTTPLimits()
        self.gate = ConnectionGate(self.limits.max_connections, self.reactor)

    def buildProtocol(self, addr: Any) -> Any:
        """Past ``limits.max_connections``, a protocol that closes its connection at once."""
        if not self.gate.admit():
            return RefusedConnection()
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        """Twisted's hook when a response is complete: imaged's own access log instead."""
        if self.on_finished is not None:
            self.on_finished(request)
