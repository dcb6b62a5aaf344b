"""
The Image API's URL space: the versions table, Glance's version negotiation, and Klein's map.

Klein's URL map (werkzeug's) is the only owner of paths and methods.  Whoever else needs to
know where a request goes asks it through ``Router``, after the same negotiation ordinary
requests get: the streaming pre-router (is this body an upload?), the metrics (which route
served it?).  ``VERSIONS`` is the one table of API versions: the versions document and the
negotiation both read it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

# twisted.web.http's ``unquote``, with which Request.process decodes path segments.
from urllib.parse import unquote_to_bytes as unquote

import attrs
from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule, UnicodeConverter, ValidationError
from zope.interface import implementer

from ..logcontext import Logger, run_for_request
from ..model import VersionStatus
from .errors import write_error
from .wire import header

_log = Logger(namespace="imaged.web.routing")

F = TypeVar("F", bound=Callable[..., Any])

#: What a plain server (no cache API, no multi-store) advertises, oldest first.
VERSIONS: Sequence[tuple[str, VersionStatus]] = tuple(
    (f"v2.{minor}", VersionStatus.SUPPORTED) for minor in (0, 1, 2, 3, 4, 5, 6, 7, 9, 15)
) + (("v2.17", VersionStatus.CURRENT),)
#: What a multi-store server advertises as well (Glance's ``enabled_backends``): 2.8 the
#: stores, 2.10 per-store delete, 2.11 copy-image, 2.12 an image's tasks, 2.13 ``stores``.
MULTI_STORE_VERSIONS: Sequence[tuple[str, VersionStatus]] = tuple(
    (f"v2.{minor}", VersionStatus.SUPPORTED) for minor in (8, 10, 11, 12, 13)
)


def versions(multi_store: bool) -> Sequence[tuple[str, VersionStatus]]:
    """The versions a server advertises, oldest first."""
    if not multi_store:
        return VERSIONS
    return sorted(
        (*VERSIONS, *MULTI_STORE_VERSIONS), key=lambda v: int(v[0].partition(".")[2])
    )


#: First path segments that mean "/v2" (Glance's version negotiation), from the versions
#: advertised without and with multi-store.
_V2_PREFIXES = {
    multi: frozenset([b"v2", *(v.encode("ascii") for v, _ in versions(multi_store=multi))])
    for multi in (False, True)
}

#: First path segments routed as they are, not negotiated.
_UNVERSIONED = frozenset([b"", b"versions", b"healthcheck"])

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

#: A label for requests no route served (404, 405, 400 before routing).
UNMATCHED = "unmatched"


def streams_body(starter: Callable[..., Any]) -> Callable[[F], F]:
    """
    Mark a route whose request body is handed on while it arrives (an upload).  When such a
    request's headers are complete, ``starter(api, request, stream, **route_arguments)``
    starts the operation with the body as ``stream`` (``imaged.web.data.BodyReceiver``); the
    route's handler, run once the body is in, answers with its outcome.
    """

    def mark(handler: F) -> F:
        handler.imaged_body_starter = starter  # type: ignore[attr-defined]
        return handler

    return mark


def answers_head(handler: F) -> F:
    """Mark a route that answers HEAD.  Glance answers HEAD nowhere but the health check,
    so werkzeug's implicit HEAD on GET routes is taken away from every other route."""
    handler.imaged_answers_head = True  # type: ignore[attr-defined]
    return handler


def negotiate(segments: list[bytes], multi_store: bool = False) -> list[bytes]:
    """
    Glance's version negotiation on a path's segments: ``/v2.N/...`` is ``/v2/...`` for every
    advertised version; any other first segment (``/v1``, ``/v2.99``, ``/foo``) is ``/``, the
    versions document (300).
    """
    if not segments or segments[0] in _UNVERSIONED:
        return segments
    if segments[0] in _V2_PREFIXES[multi_store]:
        return [b"v2", *segments[1:]]
    return [b""]


def segments_of(uri: bytes) -> list[bytes]:
    """
    The path segments twisted.web hands the root resource for ``uri`` (``Request.process``:
    the query dropped, split on ``/``, each segment percent-decoded).  For ``Router.match``,
    which routes a request before Twisted has; ``tests/test_routes.py`` compares the two.
    """
    path = uri.split(b"?", 1)[0]
    return [unquote(segment) for segment in path[1:].split(b"/")]


def _label(rule: Rule) -> str:
    """``/v2/images/<image_id>/file`` as the metrics label ``/v2/images/{image_id}/file``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


class SegmentConverter(UnicodeConverter):
    """
    A path segment (``<image_id>``, ``<tag>``, ...) that a database can store: one holding a
    NUL (``%00``) matches no route (404), so no handler ever passes one to a store.  (Bytes
    that are not UTF-8, lone surrogates among them, never get this far: Klein refuses them.)
    """

    def to_python(self, value: str) -> str:
        if "\x00" in value:
            raise ValidationError()
        return value


class RoutedKlein(Klein):
    """
    A Klein app that notes on each request which route served it (``imaged_route``): every
    rule gets an endpoint of its own (the handler's name and the rule), so the endpoint Klein
    executes names the rule it matched.  Its path arguments are ``SegmentConverter``s.
    """

    _labels: dict[str, str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.url_map.converters["default"] = SegmentConverter

    def route(self, url: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        def register(handler: F) -> F:
            kwargs.setdefault("endpoint", f"{handler.__name__} {url}")
            registered: F = Klein.route(self, url, *args, **kwargs)(handler)
            return registered

        return register

    def labels(self) -> Mapping[str, str]:
        """Each endpoint's route template."""
        if self._labels is None:
            self._labels = {str(r.endpoint): _label(r) for r in self.url_map.iter_rules()}
        return self._labels

    def execute_endpoint(
        self, endpoint: str, request: IRequest, *args: Any, **kwargs: Any
    ) -> Any:
        request.imaged_route = self.labels().get(endpoint, UNMATCHED)  # type: ignore[attr-defined]
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


@attrs.frozen
class Match:
    """A route a request goes to: its handler and the arguments taken from the path."""

    handler: Callable[..., Any]
    arguments: Mapping[str, Any]

    @property
    def body_starter(self) -> Callable[..., Any] | None:
        """The starter of a route that streams its body (``streams_body``), else ``None``."""
        starter: Callable[..., Any] | None = getattr(self.handler, "imaged_body_starter", None)
        return starter


class Router:
    """
    Klein's URL map, asked as Klein itself would be asked for a request's route.  Made once
    per map, when its routes are declared: it also seals the map (HEAD only where declared,
    no merged slashes), which every request then meets.
    """

    def __init__(self, app: Klein) -> None:
        self._app = app
        # Glance's router neither merges slashes nor redirects: ``/v2//images`` is a path no
        # route has (404), not a 308 to another.
        app.url_map.merge_slashes = False
        streamed: set[bytes] = set()
        for rule in app.url_map.iter_rules():
            handler = app.endpoints.get(str(rule.endpoint))
            if rule.methods is not None and not getattr(handler, "imaged_answers_head", False):
                rule.methods.discard("HEAD")
            if getattr(handler, "imaged_body_starter", None) is not None:
                streamed.update(m.encode("ascii") for m in rule.methods or ())
        #: The methods of the routes that stream their bodies (taken from the map): no other
        #: request needs to be matched before its body is in.
        self.streamed_methods = frozenset(streamed)

    def match(self, method: bytes, uri: bytes, multi_store: bool = False) -> Match | None:
        """The route that will serve ``method uri``, after negotiation, if any."""
        # As klein's extractURLparts turns the resource's postpath into werkzeug's PATH_INFO.
        joined = b"/".join(negotiate(segments_of(uri), multi_store))
        if not joined.startswith(b"/"):
            joined = b"/" + joined
        try:
            adapter = self._app.url_map.bind(
                "localhost", path_info=joined.decode("utf-8"), default_method=method.decode()
            )
            rule, arguments = adapter.match(return_rule=True)
        except (HTTPException, UnicodeDecodeError):
            return None  # Klein answers it (404, 405, redirect); nothing is streamed
        return Match(self._app.endpoints[str(rule.endpoint)], arguments)


def request_id(request: IRequest) -> str:
    """
    The request's id: the caller's ``x-openstack-request-id`` if it is sane (``req-``
    prefixed as Glance does), else a new ``req-<uuid>``.  Decided once per request.
    """
    known: str | None = getattr(request, "imaged_request_id", None)
    if known is not None:
        return known
    offered = header(request, b"x-openstack-request-id")
    if offered and _REQUEST_ID.match(offered):
        chosen = offered if offered.startswith("req-") else f"req-{offered}"
    else:
        chosen = f"req-{uuid.uuid4()}"
    request.imaged_request_id = chosen  # type: ignore[attr-defined]
    # Handlers read the (normalised) id from the request headers, as callers set it.
    request.requestHeaders.setRawHeaders(b"x-openstack-request-id", [chosen.encode()])
    return chosen


@implementer(IResource)
class APIResource(Resource):
    """
    The Klein resource plus what every request gets: its request id (on the response, and
    bound to the log events of everything that serves it) and Glance's version negotiation.
    """

    isLeaf = True

    def __init__(self, inner: Resource, multi_store: bool = False) -> None:
        super().__init__()
        self._inner = inner
        self._multi_store = multi_store

    def render(self, request: IRequest) -> Any:
        chosen = request_id(request)
        request.setHeader(b"x-openstack-request-id", chosen.encode("ascii"))
        if not _utf8(request):
            # Klein would answer this too, but log a traceback per request: one line here.
            _log.info("{method} {uri}: not UTF-8, answered 400", method=request.method,
                      uri=request.uri, request_id=chosen)
            return write_error(request, 400, "The URL is not valid UTF-8.")
        request.postpath = negotiate(request.postpath, self._multi_store)
        return run_for_request(chosen, lambda: self._inner.render(request))


def _utf8(request: IRequest) -> bool:
    """Whether the path and the host name are UTF-8, as Klein needs them to be."""
    try:
        for segment in (*request.prepath, *request.postpath):
            segment.decode("utf-8")
        request.getRequestHostname().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


__all__ = [
    "MULTI_STORE_VERSIONS",
    "UNMATCHED",
    "VERSIONS",
    "APIResource",
    "Match",
    "RoutedKlein",
    "Router",
    "answers_head",
    "negotiate",
    "request_id",
    "segments_of",
    "streams_body",
    "versions",
]
