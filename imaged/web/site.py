"""The Twisted web ``Site`` imaged serves its API with."""

from __future__ import annotations

import inspect
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from .access import request_finished
from .streaming import BodyRouter, HTTPLimits, StreamingSite


def make_site(
    resource: IResource,
    body_router: BodyRouter | None = None,
    limits: HTTPLimits | None = None,
    reactor: IReactorTime | None = None,
) -> Site:
    """
    A ``Site`` that streams the request bodies ``body_router`` claims (image uploads), never
    shows tracebacks to clients and, where Twisted allows it, never parses request bodies as
    forms (imaged has no form endpoints; parsing a large upload as one would read it into
    memory).  Each finished request is one structured access-log event and feeds the
    request metrics (``imaged.web.access``).

    ``limits`` bound what a client may cost before it is served: the body of a request that
    is not streamed, how long its headers and body may take, how many connections are open
    (``HTTPLimits()``, Glance's and nginx's defaults, when not given).  ``reactor`` is the
    clock of those deadlines (the global reactor when not given; a ``Clock`` in tests).
    """
    kwargs: dict[str, Any] = {}
    if "parsePOSTFormSubmission" in inspect.signature(Site.__init__).parameters:
        kwargs["parsePOSTFormSubmission"] = False
    if reactor is not None:
        kwargs["reactor"] = reactor
    site = StreamingSite(
        resource, body_router, on_finished=request_finished, limits=limits, **kwargs
    )
    site.displayTracebacks = False
    return site
