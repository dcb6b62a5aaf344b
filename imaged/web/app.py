"""
The Glance v2 HTTP API as a Klein application over an ``IImageService``.

``ImagesAPI`` holds the routes; each handler decodes the request with ``wire``, calls the
service, and encodes the result.  Handlers raise errors and never set error status codes: every
failure goes through ``errors.render_failure``.  ``APIResource`` wraps the Klein resource with
what applies to every response: the request id and Glance's version negotiation.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from io import BytesIO
from typing import Any
from urllib.parse import unquote

import attrs
from klein import Klein
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from .. import metrics
from ..context import RequestContext
from ..errors import BadRequest, NotFound, UnsupportedMediaType
from ..interfaces import IImageService
from ..model import Download, Link, Version, VersionStatus
from ..schemas import SCHEMAS, schema_document
from ..service import Limits
from ..streams import ChunkProducer
from . import wire
from .auth import Authenticator, HeaderIdentity
from .errors import render_failure
from .streaming import BodyStream, tune_for_bulk
from .wire import header

API_PORT = 9292

#: What a plain server (no cache API, no multi-store) advertises, oldest first.
VERSIONS: Sequence[tuple[str, VersionStatus]] = tuple(
    (f"v2.{minor}", VersionStatus.SUPPORTED) for minor in (0, 1, 2, 3, 4, 5, 6, 7, 9, 15)
) + (("v2.17", VersionStatus.CURRENT),)

#: Version prefixes that mean "/v2" (Glance's version negotiation).
_VERSION_PREFIX = re.compile(rb"^v2(\.(0|1|2|3|4|5|6|7|9|15|17))?$")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@attrs.frozen
class APIConfig:
    """
    What the HTTP API needs (the seed's ``APIConfig``).

    ``public_base_url`` is the URL clients reach this API at (behind a proxy, say); without it
    links are built from the request's ``Host``.  ``auth`` turns requests into identities
    (``imaged.web.auth``).  ``show_locations`` shows where each image's
    bytes are stored, as Glance's ``show_multiple_locations``.
    """

    image_service: IImageService
    port: int = API_PORT
    public_base_url: str | None = None
    limits: Limits = Limits()
    show_locations: bool = False
    auth: Authenticator = HeaderIdentity()
    #: While this file exists ``/healthcheck`` answers 503, so a load balancer drains the node
    #: before maintenance (oslo.middleware's ``disable_by_file_path``).
    healthcheck_disable_file: str | None = None




def _has_body(request: IRequest) -> bool:
    """Glance's ``has_body``: a positive Content-Length or any Transfer-Encoding."""
    if request.getHeader(b"transfer-encoding") is not None:
        return True
    length = request.getHeader(b"content-length")
    try:
        return length is not None and int(length) > 0
    except ValueError:
        return True


def _reject_body(request: IRequest) -> None:
    if _has_body(request):
        raise BadRequest("A body is not expected with this request.")


def _read_body(request: IRequest) -> bytes:
    request.content.seek(0)
    return request.content.read()


def _json(request: IRequest, document: Any, code: int = 200) -> bytes:
    body = wire.encode_json(document)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    # A length rather than chunked framing: one write, and simpler for every client.
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _no_content(request: IRequest) -> bytes:
    """204 with no Content-Type: glanceclient parses any JSON-labelled body."""
    request.setResponseCode(204)
    request.responseHeaders.removeHeader(b"content-type")
    return b""


class ImagesAPI:
    """Routes of the Image API v2 (and version discovery) over one ``IImageService``."""

    app = Klein()
    log = Logger()

    def __init__(self, config: APIConfig) -> None:
        self.config = config
        self.service = config.image_service
        #: Requests whose upload is being received, each with a Deferred that fires when its
        #: response has gone out (for a graceful shutdown).
        self.uploads: dict[Any, Deferred[None]] = {}

    def resource(self) -> IResource:
        return APIResource(self.app.resource())

    def drain(self, reactor: Any, timeout: float) -> Deferred[None]:
        """
        Fires when every upload in progress has been answered.  Uploads still running after
        ``timeout`` seconds have their connections aborted, which fails them the way a client
        going away does: the image goes back to ``queued`` and nothing is kept.
        """
        pending = list(self.uploads.values())
        if not pending:
            return succeed(None)
        self.log.info("waiting for {count} upload(s) to finish", count=len(pending))

        def abort() -> None:
            for request in list(self.uploads):
                self.log.warn("aborting an unfinished upload at shutdown")
                request.transport.abortConnection()

        timer = reactor.callLater(timeout, abort)
        done: Deferred[Any] = gatherResults(pending)

        def answered(_: Any) -> Deferred[None]:
            if timer.active():
                timer.cancel()
            # The last responses are in the transports' buffers; the reactor sends them on its
            # next turns, before shutting connections.
            return deferLater(reactor, 0.2, lambda: None)

        return done.addCallback(answered)

    # -- helpers ------------------------------------------------------------------------

    def _base_url(self, request: IRequest) -> str:
        if self.config.public_base_url:
            return self.config.public_base_url.rstrip("/")
        scheme = "https" if request.isSecure() else "http"
        host = header(request, b"host")
        if not host:
            address = request.getHost()
            host = f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 0)}"
        return f"{scheme}://{host}"

    def _versions(self, request: IRequest) -> list[dict[str, Any]]:
        href = self._base_url(request) + "/v2/"
        versions = [
            Version(id=v, status=s, links=(Link(href=href, rel="self"),))
            for v, s in reversed(VERSIONS)
        ]
        return [
            {
                "id": v.id,
                "status": v.status.value,
                "links": [{"rel": link.rel, "href": link.href} for link in v.links],
            }
            for v in versions
        ]

    async def _context(self, request: IRequest) -> RequestContext:
        identity = self.config.auth.context(request)
        if isinstance(identity, Deferred):
            return await identity  # the keystone strategy asks Keystone
        return identity

    def _image(self, image: Any) -> dict[str, Any]:
        return wire.image_document(image, self.config.show_locations)

    @app.handle_errors(Exception)
    def _failed(self, request: IRequest, failure: Any) -> bytes:
        return render_failure(request, failure)

    # -- versions -----------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def versions_multiple_choices(self, request: IRequest) -> bytes:
        return _json(request, {"versions": self._versions(request)}, 300)

    @app.route("/versions", methods=["GET"], strict_slashes=False)
    @app.route("/versions/<path:_rest>", methods=["GET"])
    def versions(self, request: IRequest, _rest: str = "") -> bytes:
        return _json(request, {"versions": self._versions(request)})

    @app.route("/v2", methods=["GET"], strict_slashes=False)
    def current_version(self, request: IRequest) -> bytes:
        return _json(request, {"version": self._versions(request)[0]})

    # -- health -------------------------------------------------------------------------

    @app.route("/healthcheck", methods=["GET", "HEAD"], strict_slashes=False)
    async def healthcheck(self, request: IRequest) -> bytes:
        """
        oslo.middleware's healthcheck as Glance mounts it (no auth, outside ``/v2``), with
        the database's answer as a second check: 503 while the disable file exists or the
        database does not answer.
        """
        disable = self.config.healthcheck_disable_file
        if disable and os.path.exists(disable):
            problem: str | None = "DISABLED BY FILE"
        else:
            problem = await self.service.health()
        healthy = problem is None
        reason = problem or "OK"
        code = 200 if healthy else 503
        if request.method == b"HEAD":
            request.setResponseCode(204 if healthy else 503)
            return b""
        if "application/json" in (header(request, b"accept") or ""):
            return _json(request, {"detailed": False, "reasons": [reason]}, code)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
        return reason.encode()

    # -- images -------------------------------------------------------------------------

    @app.route("/v2/images", methods=["POST"], strict_slashes=False)
    async def create_image(self, request: IRequest) -> bytes:
        context = await self._context(request)
        create = wire.decode_create(wire.decode_json(_read_body(request)))
        image = await self.service.create(context, create)
        request.setHeader(
            b"location", f"{self._base_url(request)}/v2/images/{image.id}".encode("ascii")
        )
        return _json(request, self._image(image), 201)

    @app.route("/v2/images", methods=["GET"], strict_slashes=False)
    async def list_images(self, request: IRequest) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        params = wire.decode_params(request.args)
        limits = self.config.limits
        query = wire.decode_query(params, limits.list_limit_default, limits.list_limit_max)
        page = await self.service.list(context, query)
        last = page.images[-1].id if page.images else None
        document: dict[str, Any] = {"images": [self._image(i) for i in page.images]}
        document.update(wire.page_links(params, last, page.full))
        document["schema"] = "/v2/schemas/images"
        return _json(request, document)

    @app.route("/v2/images/<image_id>", methods=["GET"], strict_slashes=False)
    async def show_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        image = await self.service.get(context, image_id)
        return _json(request, self._image(image))

    @app.route("/v2/images/<image_id>", methods=["PATCH"], strict_slashes=False)
    async def update_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        content_type = header(request, b"content-type")
        changes = wire.decode_patch(content_type, wire.decode_json(_read_body(request)))
        image = await self.service.update(context, image_id, changes)
        return _json(request, self._image(image))

    @app.route("/v2/images/<image_id>", methods=["DELETE"], strict_slashes=False)
    async def delete_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        await self.service.delete(context, image_id)
        return _no_content(request)

    @app.route("/v2/images/<image_id>/actions/deactivate", methods=["POST"])
    async def deactivate_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        await self.service.deactivate(context, image_id)
        return _no_content(request)

    @app.route("/v2/images/<image_id>/actions/reactivate", methods=["POST"])
    async def reactivate_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        await self.service.reactivate(context, image_id)
        return _no_content(request)

    # -- tags ---------------------------------------------------------------------------

    @app.route("/v2/images/<image_id>/tags/<tag>", methods=["PUT"])
    async def add_tag(self, request: IRequest, image_id: str, tag: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        await self.service.add_tag(context, image_id, wire.decode_tag(tag))
        return _no_content(request)

    @app.route("/v2/images/<image_id>/tags/<tag>", methods=["DELETE"])
    async def remove_tag(self, request: IRequest, image_id: str, tag: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        await self.service.remove_tag(context, image_id, tag)
        return _no_content(request)

    # -- members ------------------------------------------------------------------------

    @app.route("/v2/images/<image_id>/members", methods=["POST"], strict_slashes=False)
    async def add_member(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        member_id = wire.decode_new_member(wire.decode_json(_read_body(request)))
        member = await self.service.add_member(context, image_id, member_id)
        return _json(request, wire.member_document(member))

    @app.route("/v2/images/<image_id>/members", methods=["GET"], strict_slashes=False)
    async def list_members(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        members = await self.service.list_members(context, image_id)
        return _json(
            request,
            {
                "members": [wire.member_document(m) for m in members],
                "schema": "/v2/schemas/members",
            },
        )

    @app.route("/v2/images/<image_id>/members/<member_id>", methods=["GET"])
    async def show_member(self, request: IRequest, image_id: str, member_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        member = await self.service.get_member(context, image_id, member_id)
        return _json(request, wire.member_document(member))

    @app.route("/v2/images/<image_id>/members/<member_id>", methods=["PUT"])
    async def update_member(self, request: IRequest, image_id: str, member_id: str) -> bytes:
        context = await self._context(request)
        status = wire.decode_member_status(wire.decode_json(_read_body(request)))
        member = await self.service.update_member(
            context, image_id, member_id, status
        )
        return _json(request, wire.member_document(member))

    @app.route("/v2/images/<image_id>/members/<member_id>", methods=["DELETE"])
    async def delete_member(self, request: IRequest, image_id: str, member_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        await self.service.delete_member(context, image_id, member_id)
        return _no_content(request)

    # -- data ---------------------------------------------------------------------------

    def stream_upload(
        self, request: Any, method: bytes, path: bytes, length: int | None
    ) -> BodyStream | None:
        """
        The site's ``body_router``: called when an upload's headers are complete, before any
        body byte is stored.  Starts the upload at once (identity, image state and size checks
        happen now), feeding it the body as it arrives; ``upload_data`` answers when it ends.
        """
        match = _UPLOAD_PATH.match(path) if method == b"PUT" else None
        if match is None:
            return None
        image_id = unquote(match.group(1).decode("utf-8", "replace"))
        stream = BodyStream(request.transport, length)
        try:
            size = _upload_size(request)
            upload = Deferred.fromCoroutine(self._context(request)).addCallback(
                lambda context: self.service.upload(context, image_id, stream, size)
            )
        except Exception:
            upload = fail()

        def abandon(failure: Failure) -> Failure:
            stream.stopProducing()  # nothing more is stored; the body is read and dropped
            return failure

        upload.addErrback(abandon)
        answered: Deferred[None] = Deferred()
        self.uploads[request] = answered
        metrics.UPLOADS.inc()

        def forget(result: Any) -> None:
            self.uploads.pop(request, None)
            metrics.UPLOADS.dec()
            if not answered.called:
                answered.callback(None)

        request.notifyFinish().addBoth(forget)
        # If the client goes before upload_data runs, nobody else will look at the outcome.
        request.notifyFinish().addErrback(lambda _: upload.addErrback(lambda _: None))
        request.imaged_upload = upload  # type: ignore[attr-defined]
        return stream

    @app.route("/v2/images/<image_id>/file", methods=["PUT"])
    async def upload_data(self, request: IRequest, image_id: str) -> bytes:
        streamed = getattr(request, "imaged_upload", None)
        if streamed is not None:
            await streamed
            return _no_content(request)
        # Mounted on a site that does not stream bodies: the body is already spooled.
        context = await self._context(request)
        size = _upload_size(request)
        # Take the body away from the request: Twisted closes request.content when the
        # connection goes, and the producer may still be reading it then.
        content, request.content = request.content, BytesIO()
        try:
            await self.service.upload(context, image_id, _spooled_body(content), size)
        finally:
            content.close()
        return _no_content(request)

    @app.route("/v2/images/<image_id>/file", methods=["GET"])
    async def download_data(self, request: IRequest, image_id: str) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        byte_range = wire.decode_range(
            header(request, b"range") or _content_range_as_range(request)
        )
        download = await self.service.download(context, image_id, byte_range)
        if download.producer is None:
            return _no_content(request)
        await _stream(request, download)
        return b""

    # -- schemas ------------------------------------------------------------------------

    # -- discovery ----------------------------------------------------------------------

    @app.route("/v2/info/usage", methods=["GET"], strict_slashes=False)
    async def usage(self, request: IRequest) -> bytes:
        context = await self._context(request)
        _reject_body(request)
        return _json(request, wire.usage_document(await self.service.usage(context)))

    @app.route("/v2/info/import", methods=["GET"], strict_slashes=False)
    async def import_methods(self, request: IRequest) -> bytes:
        await self._context(request)
        _reject_body(request)
        # imaged takes data by upload only; clients read the (empty) list to learn that.
        return _json(
            request,
            {
                "import-methods": {
                    "description": "Import methods available.",
                    "type": "array",
                    "value": [],
                }
            },
        )

    @app.route("/v2/info/stores", methods=["GET"], strict_slashes=False)
    @app.route("/v2/info/stores/detail", methods=["GET"])
    async def stores(self, request: IRequest) -> bytes:
        await self._context(request)
        raise NotFound("Multi backend is not supported at this site.")

    @app.route("/v2/schemas/<name>", methods=["GET"])
    async def schema(self, request: IRequest, name: str) -> bytes:
        await self._context(request)  # behind authentication, as in Glance's pipeline
        _reject_body(request)
        if name not in SCHEMAS:
            raise NotFound(f"Schema {name} not found.")
        return _json(request, schema_document(name))


_UPLOAD_PATH = re.compile(rb"^/v2(?:\.\d+)?/images/([^/?]+)/file/?(?:\?.*)?$")


def _upload_size(request: IRequest) -> int | None:
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


def _spooled_body(content: Any) -> ChunkProducer:
    """
    The request body Twisted has already received, as an ``IBodyProducer``.

    Reads are sequential and synchronous (the body is in memory or in Twisted's spool file);
    the blob store's back-pressure pauses the producer between chunks.
    """
    content.seek(0, 2)
    length = content.tell()
    content.seek(0)
    return ChunkProducer(lambda _position, size: succeed(content.read(size)), 0, length)


def _content_range_as_range(request: IRequest) -> str | None:
    """Glance honours a request ``Content-Range: bytes a-b/*`` as a range, for old clients."""
    value = header(request, b"content-range")
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    return f"{unit}={spec.split('/')[0]}"


def _stream(request: IRequest, download: Download) -> Deferred[None]:
    """Write a download's producer to the response, honouring back-pressure."""
    image = download.image
    request.setHeader(b"content-type", b"application/octet-stream")
    request.setHeader(b"content-length", str(download.length).encode("ascii"))
    if image.checksum:
        request.setHeader(b"content-md5", image.checksum.encode("ascii"))
    if download.ranged:
        last = download.offset + download.length - 1
        request.setResponseCode(206)
        request.setHeader(
            b"content-range",
            f"bytes {download.offset}-{last}/{image.size}".encode("ascii"),
        )
    producer: Any = download.producer
    tune_for_bulk(getattr(request, "transport", None))
    consumer: Any = request  # twisted.web's Request is an IConsumer; IRequest does not say so
    consumer.registerProducer(producer, True)

    def stop(_: Any) -> None:
        producer.stopProducing()

    done: Deferred[None] = Deferred(stop)
    producer.startProducing(request).chainDeferred(done)

    def unregister(result: Any) -> Any:
        consumer.unregisterProducer()
        return result

    return done.addBoth(unregister)


@implementer(IResource)
class APIResource(Resource):
    """
    The Klein resource plus what every response needs.

    - ``x-openstack-request-id`` on every response (the caller's, if it sent a sane one).
    - Glance's version negotiation: ``/v2.N/...`` is ``/v2/...``; any other first segment
      (``/v1``, ``/v3``, ``/foo``) gets the 300 versions document.
    """

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: IRequest) -> Any:
        offered = header(request, b"x-openstack-request-id")
        if offered and _REQUEST_ID.match(offered):
            request_id = offered if offered.startswith("req-") else f"req-{offered}"
        else:
            request_id = f"req-{uuid.uuid4()}"
        request.setHeader(b"x-openstack-request-id", request_id.encode("ascii"))
        request.requestHeaders.setRawHeaders(b"x-openstack-request-id", [request_id.encode()])
        postpath = request.postpath
        if postpath and postpath[0] not in (b"", b"versions", b"v2", b"healthcheck"):
            if _VERSION_PREFIX.match(postpath[0]):
                request.postpath = [b"v2"] + postpath[1:]
            else:
                request.postpath = [b""]
        return self._inner.render(request)


def routes(config: APIConfig) -> ImagesAPI:
    """
    The API for ``config`` (the seed's ``Routes``): call ``.resource()`` to mount it in any
    Twisted web site, over any ``IImageService``.
    """
    return ImagesAPI(config)
