"""
Image data over HTTP: request bodies streamed to their route as they arrive, and downloads.

``BodyReceiver`` is the site's ``body_router``: when a request's headers are complete it asks
the route map whether the route streams its body (``routing.streams_body``) and, if so, starts
the operation at once with the body as an ``IBodyProducer``; the route's handler answers with
the outcome once the body is in.  It also knows which uploads are in progress, so that a
stopping daemon lets them finish (``drain``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer, IRequest
from twisted.web.server import Request

from .. import metrics
from ..errors import UnsupportedMediaType
from ..logcontext import Logger, run_for_request
from ..model import Download
from ..streams import ChunkProducer
from . import wire
from .routing import Router, request_id
from .streaming import BodyStream, tune_for_bulk
from .wire import header


class BodyReceiver:
    """Starts streamed operations (uploads) when their headers arrive; see the module."""

    log = Logger()

    def __init__(self, api: object, router: Router, multi_store: bool = False) -> None:
        self._api = api
        self._router = router
        self._multi_store = multi_store
        #: Requests whose body is being received, each with a Deferred that fires when its
        #: response has gone out (for a graceful shutdown).
        self.in_progress: dict[Request, Deferred[None]] = {}

    def __call__(
        self, request: Request, method: bytes, uri: bytes, length: int | None
    ) -> BodyStream | None:
        if method not in self._router.streamed_methods:
            return None  # the common case (GET, POST, ...), decided without matching
        match = self._router.match(method, uri, self._multi_store)
        starter = match.body_starter if match is not None else None
        if match is None or starter is None:
            return None
        stream = BodyStream(request.transport, length)
        arguments = dict(match.arguments)

        def start() -> Deferred[Any]:
            try:
                started: Deferred[Any] = starter(self._api, request, stream, **arguments)
            except Exception:
                return fail()
            return started

        operation = run_for_request(request_id(request), start)

        def abandon(failure: Failure) -> Failure:
            stream.stopProducing()  # nothing more is stored; the body is read and dropped
            return failure

        operation.addErrback(abandon)
        self._track(request)
        # If the client goes before the handler runs, nobody else will look at the outcome.
        request.notifyFinish().addErrback(lambda _: operation.addErrback(lambda _: None))
        request.imaged_streamed = operation  # type: ignore[attr-defined]
        return stream

    def _track(self, request: Request) -> None:
        answered: Deferred[None] = Deferred()
        self.in_progress[request] = answered
        metrics.UPLOADS.inc()

        def forget(_: object) -> None:
            self.in_progress.pop(request, None)
            metrics.UPLOADS.dec()
            if not answered.called:
                answered.callback(None)

        request.notifyFinish().addBoth(forget)

    def drain(self, clock: IReactorTime, timeout: float) -> Deferred[None]:
        """
        Fires when every upload in progress has been answered.  Uploads still running after
        ``timeout`` seconds have their connections aborted, which fails them the way a client
        going away does: the image goes back to ``queued`` and nothing is kept.
        """
        pending = list(self.in_progress.values())
        if not pending:
            return succeed(None)
        self.log.info("waiting for {count} upload(s) to finish", count=len(pending))

        def abort() -> None:
            for request in list(self.in_progress):
                self.log.warn("aborting an unfinished upload at shutdown")
                request.transport.abortConnection()  # type: ignore[union-attr]

        timer = clock.callLater(timeout, abort)

        def answered(_: object) -> Deferred[None]:
            if timer.active():
                timer.cancel()
            # The last responses are in the transports' buffers; the reactor sends them on its
            # next turns, before shutting connections.
            return deferLater(clock, 0.2, lambda: None)

        return gatherResults(pending).addCallback(answered)


def streamed(request: IRequest) -> Deferred[Any] | None:
    """The operation ``BodyReceiver`` started for this request, if it did."""
    operation: Deferred[Any] | None = getattr(request, "imaged_streamed", None)
    return operation


def upload_size(request: IRequest) -> int | None:
    """Check an upload's headers; return the size it declares, if any."""
    content_type = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{content_type}': image data must be sent as "
            "application/octet-stream."
        )
    return wire.declared_size(
        header(request, b"x-openstack-image-size"), header(request, b"content-length")
    )


def spooled_body(content: Any) -> IBodyProducer:
    """
    A request body Twisted has already received (on a site that does not stream), as an
    ``IBodyProducer``.  Reads are sequential and synchronous (the body is in memory or in
    Twisted's spool file); the blob store's back-pressure pauses the producer between chunks.
    """
    content.seek(0, 2)
    length = content.tell()
    content.seek(0)

    def read(_position: int, size: int) -> Deferred[bytes]:
        return succeed(content.read(size))

    return ChunkProducer(read, 0, length)


def requested_range(request: IRequest) -> tuple[str | None, bool]:
    """
    ``Range``, or a request ``Content-Range: bytes a-b/*`` as one (Glance honours it, for
    old clients), and whether it is the latter: Glance refuses (416) a ``Content-Range``
    reaching past the image where it clamps a ``Range``.
    """
    value = header(request, b"range")
    if value is not None:
        return value, False
    value = header(request, b"content-range")
    if value is None:
        return None, False
    unit, _, spec = value.strip().partition(" ")
    return f"{unit}={spec.split('/')[0]}", True


def stream_download(request: IRequest, download: Download) -> Deferred[None]:
    """Write a download's producer to the response, honouring back-pressure."""
    image = download.image
    producer = download.producer
    assert producer is not None
    request.setHeader(b"content-type", b"application/octet-stream")
    request.setHeader(b"content-length", str(download.length).encode("ascii"))
    if image.checksum:
        request.setHeader(b"content-md5", image.checksum.encode("ascii"))
    if download.ranged:
        last = download.offset + download.length - 1
        request.setResponseCode(206)
        request.setHeader(
            b"content-range", f"bytes {download.offset}-{last}/{image.size}".encode("ascii")
        )
    tune_for_bulk(getattr(request, "transport", None))
    consumer: Any = request  # twisted.web's Request is an IConsumer; IRequest does not say so
    consumer.registerProducer(producer, True)
    done: Deferred[None] = Deferred(lambda _: producer.stopProducing())
    producer.startProducing(consumer).chainDeferred(done)

    def unregister(result: object) -> object:
        consumer.unregisterProducer()
        return result

    return done.addBoth(unregister)

__all__ = [
    "BodyReceiver",
    "requested_range",
    "spooled_body",
    "stream_download",
    "streamed",
    "upload_size",
]
