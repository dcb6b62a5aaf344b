"""
The Glance v2 HTTP API as a Klein application over an ``IImageService``: the routes.

``ImagesAPI`` holds the one route table (Klein's map); each handler decodes the request with
``wire``, calls the service, and encodes the result.  Handlers raise errors and never set error
status codes: every failure goes through ``errors.render_failure``.  What every request gets
(request id, version negotiation) is ``routing.APIResource``; streamed bodies and downloads are
``data``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from io import BytesIO
from typing import Any, ClassVar
from urllib.parse import urlencode

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer, IRequest
from twisted.web.resource import IResource

from ..context import RequestContext
from ..errors import NotFound
from ..interfaces import IImageService, IMetadefService
from ..logcontext import run_for_request
from ..model import Image, Link, Version
from ..quotas import Limits
from ..schemas import DEFAULT_SCHEMAS, ImageSchemas
from . import listing, metadefs, wire
from .auth import Authenticator, FromNetworks, HeaderIdentity
from .data import (
    BodyReceiver,
    requested_range,
    spooled_body,
    stream_download,
    streamed,
    upload_size,
)
from .errors import render_failure
from .responses import json_response, no_content, read_body, reject_body
from .routing import (
    VERSIONS,
    APIResource,
    RoutedKlein,
    Router,
    answers_head,
    request_id,
    streams_body,
)
from .routing import versions as advertised_versions
from .wire import header

API_PORT = 9292


@attrs.frozen
class APIConfig:
    """
    What the HTTP API needs (the seed's ``APIConfig``).

    ``public_base_url`` is the URL clients reach this API at (behind a proxy, say); without it
    links are built from the request's ``Host``.  ``auth`` turns requests into identities
    (``imaged.web.auth``; by default identity headers, believed from loopback only).
    ``show_locations`` shows where each image's bytes are stored, as Glance's
    ``show_multiple_locations``.
    """

    image_service: IImageService
    port: int = API_PORT
    public_base_url: str | None = None
    limits: Limits = Limits()
    show_locations: bool = False
    auth: Authenticator = FromNetworks(HeaderIdentity())
    #: While this file exists ``/healthcheck`` answers 503, so a load balancer drains the node
    #: before maintenance (oslo.middleware's ``disable_by_file_path``).
    healthcheck_disable_file: str | None = None
    #: The image schema's optional properties and the validator made from them.
    schemas: ImageSchemas = DEFAULT_SCHEMAS
    #: The metadata definitions catalog (``/v2/metadefs``); without one its routes are 404.
    metadefs: IMetadefService | None = None


def _begin_upload(
    api: ImagesAPI, request: IRequest, stream: IBodyProducer, image_id: str
) -> Deferred[Image]:
    """Start an upload when its headers are in (``routing.streams_body``): identity, image
    state and declared size are checked before any body byte is stored."""
    return Deferred.fromCoroutine(api.take_data(request, image_id, stream, api.upload_to(request)))


def _begin_stage(
    api: ImagesAPI, request: IRequest, stream: IBodyProducer, image_id: str
) -> Deferred[Image]:
    """Start staging (``PUT /stage``) when its headers are in, as ``_begin_upload``."""
    return Deferred.fromCoroutine(api.take_data(request, image_id, stream, api.service.stage))


#: The service's ``upload`` or ``stage``: data for an image, from a stream.
TakeData = Callable[[RequestContext, str, IBodyProducer, "int | None"], Deferred[Image]]


class ImagesAPI:
    """Routes of the Image API v2 (and version discovery) over one ``IImageService``."""

    app = RoutedKlein()
    #: Asks ``app``'s map where a request goes; set once, below the class.
    router: ClassVar[Router]

    def __init__(self, config: APIConfig) -> None:
        self.config = config
        self.service = config.image_service
        #: The site's ``body_router``: streams upload bodies to their routes as they arrive.
        self.bodies = BodyReceiver(self, self.router, bool(self.service.store_info))

    def resource(self) -> IResource:
        return APIResource(self.app.resource(), multi_store=bool(self.service.store_info))

    def drain(self, clock: IReactorTime, timeout: float) -> Deferred[None]:
        """Fires when the uploads in progress are answered (see ``BodyReceiver.drain``)."""
        return self.bodies.drain(clock, timeout)

    # -- helpers ------------------------------------------------------------------------

    @property
    def metadefs(self) -> IMetadefService:
        """The catalog the ``/v2/metadefs`` routes (``imaged.web.metadefs``) serve."""
        if self.config.metadefs is None:
            raise NotFound("The metadata definitions catalog is not served here.")
        return self.config.metadefs

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def base_url(self, request: IRequest) -> str:
        """Where clients reach this API (for ``Location`` headers)."""
        return self._base_url(request)

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
            for v, s in reversed(advertised_versions(bool(self.service.store_info)))
        ]
        return [
            {
                "id": v.id,
                "status": v.status.value,
                "links": [{"rel": link.rel, "href": link.href} for link in v.links],
            }
            for v in versions
        ]

    async def context(self, request: IRequest) -> RequestContext:
        """Who the request acts as (the keystone strategy asks Keystone first)."""
        identity = self.config.auth.context(request)
        if isinstance(identity, Deferred):
            return await identity
        return identity

    def _image(self, image: Image) -> dict[str, Any]:
        named = (
            self.service.named_locations(image.locations) if self.service.store_info else None
        )
        return wire.image_document(image, self.config.show_locations, named)

    @app.handle_errors(Exception)
    def _failed(self, request: IRequest, failure: Failure) -> bytes:
        # Klein renders failures in the reactor's context, not the request's: bind it again,
        # so what render_failure logs carries the request id like every other event.
        return run_for_request(request_id(request), lambda: render_failure(request, failure))

    # -- versions -----------------------------------------------------------------------

    @app.route("/", methods=None)
    def versions_multiple_choices(self, request: IRequest) -> bytes:
        """The root, and every unknown version (``routing.negotiate``): 300, any method."""
        return json_response(request, {"versions": self._versions(request)}, 300)

    @app.route("/versions", methods=["GET"], strict_slashes=False)
    @app.route("/versions/<path:_rest>", methods=["GET"])
    def versions(self, request: IRequest, _rest: str = "") -> bytes:
        return json_response(request, {"versions": self._versions(request)})

    @app.route("/v2", methods=["GET"], strict_slashes=False)
    def current_version(self, request: IRequest) -> bytes:
        return json_response(request, {"version": self._versions(request)[0]})

    # -- health -------------------------------------------------------------------------

    @app.route("/healthcheck", methods=["GET", "HEAD"], strict_slashes=False)
    @answers_head
    async def healthcheck(self, request: IRequest) -> bytes:
        """
        oslo.middleware's healthcheck as Glance mounts it (no auth, outside ``/v2``), with
        the database's and the identity service's answers as further checks: 503 while the
        disable file exists, the database does not answer, or requests cannot be
        authenticated (``--auth keystone`` with credentials Keystone refuses, say).
        """
        disable = self.config.healthcheck_disable_file
        notes: tuple[str, ...] = ()
        if disable and os.path.exists(disable):
            problem: str | None = "DISABLED BY FILE"
        else:
            health = await self.service.health()
            problem, notes = health.problem, health.notes
            identity = self.config.auth.health()
            if problem is None and identity is not None:
                problem = f"identity: {identity}"
        # A store down among several degrades the node without failing it: the reasons say.
        degraded = list(notes) if problem is None else []
        reason = problem or "OK"
        code = 200 if problem is None else 503
        if request.method == b"HEAD":
            request.setResponseCode(204 if problem is None else 503)
            return b""
        if "application/json" in (header(request, b"accept") or ""):
            return json_response(
                request, {"detailed": False, "reasons": [reason, *degraded]}, code
            )
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
        return reason.encode()

    # -- images -------------------------------------------------------------------------

    # Strict, as Glance's: ``/v2/images/`` is no route (404), not the list (tempest's
    # test_get_image_null_id and test_delete_image_null_id).
    @app.route("/v2/images", methods=["POST"])
    async def create_image(self, request: IRequest) -> bytes:
        context = await self.context(request)
        create = wire.decode_create(wire.decode_json(read_body(request)), self.config.schemas)
        image = await self.service.create(context, create)
        location = f"{self._base_url(request)}/v2/images/{image.id}"
        request.setHeader(b"location", location.encode("ascii"))
        # openstacksdk's use_import looks for this header before it stages and imports.
        methods = ",".join(self.service.import_methods)
        if methods:
            request.setHeader(b"openstack-image-import-methods", methods.encode("ascii"))
        stores = ",".join(store.id for store in self.service.store_info)
        if stores:
            request.setHeader(b"openstack-image-store-ids", stores.encode("utf-8"))
        return json_response(request, self._image(image), 201)

    @app.route("/v2/images", methods=["GET"])
    async def list_images(self, request: IRequest) -> bytes:
        context = await self.context(request)
        reject_body(request)
        params = listing.decode_params(request.args)
        limits = self.config.limits
        query = listing.decode_query(params, limits.list_limit_default, limits.list_limit_max)
        page = await self.service.list(context, query)
        last = page.images[-1].id if page.images else None
        document: dict[str, Any] = {"images": [self._image(i) for i in page.images]}
        document.update(listing.page_links(params, last, page.full))
        document["schema"] = "/v2/schemas/images"
        return json_response(request, document)

    @app.route("/v2/images/<image_id>", methods=["GET"], strict_slashes=False)
    async def show_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        return json_response(request, self._image(await self.service.get(context, image_id)))

    @app.route("/v2/images/<image_id>", methods=["PATCH"], strict_slashes=False)
    async def update_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        content_type = header(request, b"content-type")
        changes = wire.decode_patch(
            content_type, wire.decode_json(read_body(request)), self.config.schemas
        )
        image = await self.service.update(context, image_id, changes)
        return json_response(request, self._image(image))

    @app.route("/v2/images/<image_id>", methods=["DELETE"], strict_slashes=False)
    async def delete_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        await self.service.delete(context, image_id)
        return no_content(request)

    @app.route("/v2/images/<image_id>/actions/<action>", methods=["POST"])
    async def image_action(self, request: IRequest, image_id: str, action: str) -> bytes:
        context = await self.context(request)
        if action not in ("deactivate", "reactivate"):
            raise NotFound(f"The resource could not be found: action {action}.")
        reject_body(request)
        if action == "deactivate":
            await self.service.deactivate(context, image_id)
        else:
            await self.service.reactivate(context, image_id)
        return no_content(request)

    # -- tags ---------------------------------------------------------------------------

    @app.route("/v2/images/<image_id>/tags/<tag>", methods=["PUT"])
    async def add_tag(self, request: IRequest, image_id: str, tag: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        await self.service.add_tag(context, image_id, wire.decode_tag(tag))
        return no_content(request)

    @app.route("/v2/images/<image_id>/tags/<tag>", methods=["DELETE"])
    async def remove_tag(self, request: IRequest, image_id: str, tag: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        await self.service.remove_tag(context, image_id, tag)
        return no_content(request)

    # -- members ------------------------------------------------------------------------

    @app.route("/v2/images/<image_id>/members", methods=["POST"], strict_slashes=False)
    async def add_member(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        member_id = wire.decode_new_member(wire.decode_json(read_body(request)))
        member = await self.service.add_member(context, image_id, member_id)
        return json_response(request, wire.member_document(member))

    @app.route("/v2/images/<image_id>/members", methods=["GET"], strict_slashes=False)
    async def list_members(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        members = await self.service.list_members(context, image_id)
        document = {
            "members": [wire.member_document(m) for m in members],
            "schema": "/v2/schemas/members",
        }
        return json_response(request, document)

    @app.route("/v2/images/<image_id>/members/<member_id>", methods=["GET"])
    async def show_member(self, request: IRequest, image_id: str, member_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        member = await self.service.get_member(context, image_id, member_id)
        return json_response(request, wire.member_document(member))

    @app.route("/v2/images/<image_id>/members/<member_id>", methods=["PUT"])
    async def update_member(self, request: IRequest, image_id: str, member_id: str) -> bytes:
        context = await self.context(request)
        status = wire.decode_member_status(wire.decode_json(read_body(request)))
        member = await self.service.update_member(context, image_id, member_id, status)
        return json_response(request, wire.member_document(member))

    @app.route("/v2/images/<image_id>/members/<member_id>", methods=["DELETE"])
    async def delete_member(self, request: IRequest, image_id: str, member_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        await self.service.delete_member(context, image_id, member_id)
        return no_content(request)

    # -- data ---------------------------------------------------------------------------

    async def take_data(
        self, request: IRequest, image_id: str, stream: IBodyProducer, take: TakeData
    ) -> Image:
        """``take`` (the service's upload or stage) the data of ``request`` from ``stream``.
        One coroutine: it keeps the request's logging context however long identity takes.
        Identity first: a caller without one gets 401 whatever it sent, as in Glance."""
        context = await self.context(request)
        image: Image = await take(context, image_id, stream, upload_size(request))
        return image

    async def _data_route(self, request: IRequest, image_id: str, take: TakeData) -> bytes:
        """Answer an upload or staging route once its body is in."""
        started = streamed(request)
        if started is not None:
            await started
            return no_content(request)
        # Mounted on a site that does not stream bodies: the body is already spooled.  Take
        # it away from the request: Twisted closes request.content when the connection goes,
        # and the producer may still be reading it then.
        content, request.content = request.content, BytesIO()
        try:
            await self.take_data(request, image_id, spooled_body(content), take)
        finally:
            content.close()
        return no_content(request)

    @app.route("/v2/images/<image_id>/file", methods=["PUT"])
    @streams_body(_begin_upload)
    async def upload_data(self, request: IRequest, image_id: str) -> bytes:
        return await self._data_route(request, image_id, self.upload_to(request))

    def upload_to(self, request: IRequest) -> TakeData:
        """The service's upload into the store ``X-Image-Meta-Store`` names (multi-store;
        ignored elsewhere, as Glance)."""
        store = header(request, b"x-image-meta-store") if self.service.store_info else None

        def upload(
            context: RequestContext, image_id: str, stream: IBodyProducer, size: int | None
        ) -> Deferred[Image]:
            return self.service.upload(context, image_id, stream, size, store)

        return upload

    @app.route("/v2/images/<image_id>/stage", methods=["PUT"])
    @streams_body(_begin_stage)
    async def stage_data(self, request: IRequest, image_id: str) -> bytes:
        return await self._data_route(request, image_id, self.service.stage)

    @app.route("/v2/images/<image_id>/import", methods=["POST"])
    async def import_image(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        store = header(request, b"x-image-meta-store") if self.service.store_info else None
        body = wire.decode_import(wire.decode_json(read_body(request)), store)
        await self.service.import_image(context, image_id, body)
        request.setResponseCode(202)
        return b""

    @app.route("/v2/images/<image_id>/tasks", methods=["GET"])
    async def image_tasks(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        tasks = await self.service.image_tasks(context, image_id)
        return json_response(request, {"tasks": [wire.image_task_document(t) for t in tasks]})

    # -- tasks --------------------------------------------------------------------------

    @app.route("/v2/tasks", methods=["GET"])
    async def list_tasks(self, request: IRequest) -> bytes:
        context = await self.context(request)
        reject_body(request)
        query = wire.decode_task_query(request.args, self.config.limits)
        tasks = await self.service.list_tasks(context, *query)
        document: dict[str, Any] = {
            "tasks": [wire.task_document(t, listed=True) for t in tasks],
            "schema": "/v2/schemas/tasks",
            "first": "/v2/tasks",
        }
        if tasks and len(tasks) == query[2]:
            # The next page keeps the query (filters, limit, direction), as Glance's link.
            params = {
                key.decode("utf-8", "replace"): values[-1].decode("utf-8", "replace")
                for key, values in request.args.items() if key != b"marker" and values
            }
            params["marker"] = tasks[-1].id
            document["next"] = "/v2/tasks?" + urlencode(params)
        return json_response(request, document)

    @app.route("/v2/tasks", methods=["POST"])
    async def create_task(self, request: IRequest) -> bytes:
        context = await self.context(request)
        uri, image, task_input = wire.decode_task_create(
            wire.decode_json(read_body(request)), self.config.schemas
        )
        task = await self.service.create_task(context, uri, image, task_input)
        location = f"{self._base_url(request)}/v2/tasks/{task.id}"
        request.setHeader(b"location", location.encode("ascii"))
        return json_response(request, wire.task_document(task), 201)

    @app.route("/v2/tasks/<task_id>", methods=["GET"])
    async def show_task(self, request: IRequest, task_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        return json_response(request, wire.task_document(
            await self.service.get_task(context, task_id)))

    @app.route("/v2/images/<image_id>/file", methods=["GET"])
    async def download_data(self, request: IRequest, image_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        value, exact = requested_range(request)
        byte_range = wire.decode_range(value, exact)
        prefer = tuple(
            name.strip()
            for value in request.args.get(b"prefer", ())
            for name in value.decode("utf-8", "replace").split(",")
            if name.strip()
        )
        download = await self.service.download(context, image_id, byte_range, prefer)
        if download.producer is None:
            return no_content(request)
        await stream_download(request, download)
        return b""

    # -- discovery ----------------------------------------------------------------------

    @app.route("/v2/info/usage", methods=["GET"], strict_slashes=False)
    async def usage(self, request: IRequest) -> bytes:
        context = await self.context(request)
        reject_body(request)
        return json_response(request, wire.usage_document(await self.service.usage(context)))

    @app.route("/v2/info/import", methods=["GET"], strict_slashes=False)
    async def import_methods(self, request: IRequest) -> bytes:
        await self.context(request)
        reject_body(request)
        methods = {
            "description": "Import methods available.",
            "type": "array",
            "value": list(self.service.import_methods),
        }
        return json_response(request, {"import-methods": methods})

    @app.route("/v2/info/stores", methods=["GET"], strict_slashes=False)
    async def stores(self, request: IRequest) -> bytes:
        context = await self.context(request)
        reject_body(request)
        stores = self.service.describe_stores(context, detail=False)
        return json_response(request, wire.stores_document(stores, detail=False))

    @app.route("/v2/info/stores/detail", methods=["GET"])
    async def stores_detail(self, request: IRequest) -> bytes:
        context = await self.context(request)
        reject_body(request)
        stores = self.service.describe_stores(context, detail=True)
        return json_response(request, wire.stores_document(stores, detail=True))

    @app.route("/v2/stores/<store_id>/<image_id>", methods=["DELETE"])
    async def delete_from_store(self, request: IRequest, store_id: str, image_id: str) -> bytes:
        context = await self.context(request)
        reject_body(request)
        await self.service.delete_from_store(context, store_id, image_id)
        return no_content(request)

    @app.route("/v2/schemas/<name>", methods=["GET"])
    async def schema(self, request: IRequest, name: str) -> bytes:
        await self.context(request)  # behind authentication, as in Glance's pipeline
        reject_body(request)
        if name not in self.config.schemas:
            raise NotFound(f"Schema {name} not found.")
        return json_response(request, self.config.schemas.document(name))


# The catalog's routes join the same map; then it is complete: seal it (HEAD, slashes) and
# ask it, once.
metadefs.mount(ImagesAPI.app)
ImagesAPI.router = Router(ImagesAPI.app)


def routes(config: APIConfig) -> ImagesAPI:
    """
    The API for ``config`` (the seed's ``Routes``): call ``.resource()`` to mount it in any
    Twisted web site, over any ``IImageService``; ``.bodies`` is the ``body_router`` of a
    ``imaged.web.site.make_site`` that streams uploads.
    """
    return ImagesAPI(config)


__all__ = ["API_PORT", "VERSIONS", "APIConfig", "ImagesAPI", "routes"]
