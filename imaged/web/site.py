"""The Twisted web ``Site`` imaged serves its API with."""

from __future__ import annotations

import inspect

from twisted.web.resource import IResource
from twisted.web.server import Site


def make_site(resource: IResource) -> Site:
    """
    A ``Site`` that never shows tracebacks to clients and, where Twisted allows it, never
    parses request bodies as forms (imaged has no form endpoints; parsing a large upload as
    one would read it into memory).
    """
    kwargs = {}
    if "parsePOSTFormSubmission" in inspect.signature(Site.__init__).parameters:
        kwargs["parsePOSTFormSubmission"] = False
    site = Site(resource, **kwargs)
    site.displayTracebacks = False
    return site
