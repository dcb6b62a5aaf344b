"""
How handlers read bodies and write answers: JSON with a length, empty 204s, bodies refused.

Shared by every route so that each Glance convention (no Content-Type on empty answers,
"has a body" as Glance decides it) is written once.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from ..errors import BadRequest
from . import wire


def has_body(request: IRequest) -> bool:
    """Glance's ``has_body``: a positive Content-Length or any Transfer-Encoding."""
    if request.getHeader(b"transfer-encoding") is not None:
        return True
    length = request.getHeader(b"content-length")
    try:
        return length is not None and int(length) > 0
    except ValueError:
        return True


def reject_body(request: IRequest) -> None:
    """Glance's ``body_reject`` routes: a body is a 400."""
    if has_body(request):
        raise BadRequest("A body is not expected with this request.")


def read_body(request: IRequest) -> bytes:
    request.content.seek(0)
    body: bytes = request.content.read()
    return body


def json_response(request: IRequest, document: Any, code: int = 200) -> bytes:
    body = wire.encode_json(document)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    # A length rather than chunked framing: one write, and simpler for every client.
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def no_content(request: IRequest) -> bytes:
    """204 with no Content-Type: glanceclient parses any JSON-labelled body."""
    request.setResponseCode(204)
    request.responseHeaders.removeHeader(b"content-type")
    return b""


__all__ = ["has_body", "json_response", "no_content", "read_body", "reject_body"]
