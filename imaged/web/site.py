"""The Twisted web ``Site`` imaged serves its API with."""

from __future__ import annotations

import inspect
from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import Site

from .access import request_finished
from .streaming import BodyRouter, StreamingSite


def make_site(resource: IResource, body_router: BodyRouter | None = None) -> Site:
    """
    A ``Site`` that streams the request bodies ``body_router`` claims (image uploads), never
    shows tracebacks to clients and, where Twisted allows it, never parses request bodies as
    forms (imaged has no form endpoints; parsing a large upload as one would read it into
    memory).  Each finished request is one structured access-log event and feeds the
    request metrics (``imaged.web.access``).
    """
    kwargs: dict[str, Any] = {}
    if "parsePOSTFormSubmission" in inspect.signature(Site.__init__).parameters:
        kwargs["parsePOSTFormSubmission"] = False
    site = StreamingSite(resource, body_router, on_finished=request_finished, **kwargs)
    site.displayTracebacks = False
    return site
