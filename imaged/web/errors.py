"""
The one place where failures become HTTP responses.

Domain errors (``imaged.errors``) map to status codes by kind; werkzeug's routing errors (404,
405 with ``Allow``) keep their codes; anything else is a 500 whose details go to the log, not to
the client.  The body format follows WebOb's negotiation exactly as Glance's clients expect it
(contract §1.4): HTML unless the client asks for ``application/json`` (then WebOb's flat JSON),
``text/plain`` when it accepts neither.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from http import HTTPStatus

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from .. import errors, metrics
from ..logcontext import Logger

log = Logger()

#: Domain error kind -> HTTP status.  Order matters: subclasses first.
STATUS_BY_ERROR: tuple[tuple[type[errors.ImageServiceError], int], ...] = (
    (errors.Duplicate, 409),
    (errors.BadRequest, 400),
    (errors.NotFound, 404),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.Conflict, 409),
    (errors.Gone, 410),
    (errors.TooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.InvalidImageData, 415),
    (errors.RangeNotSatisfiable, 416),
    (errors.StoreFailure, 503),
    (errors.IdentityUnavailable, 503),
)


class HTTPError(errors.ImageServiceError):
    """An error that only exists at the HTTP level (431, 415 with ``Accept-Patch``, ...)."""

    def __init__(
        self, code: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.headers = dict(headers or {})


def _parse_accept(value: str) -> list[tuple[str, float]]:
    ranges = []
    for part in value.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media or "/" not in media:
            continue
        q = 1.0
        for param in pieces[1:]:
            name, _, val = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        ranges.append((media, q))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """The q of the most specific range matching ``offer`` (RFC 7231 §5.3.2)."""
    kind = offer.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for media, q in ranges:
        if media == offer:
            specificity = 2
        elif media == f"{kind}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return best[1]


def error_format(accept: str | None) -> str:
    """Which of ``html``, ``json``, ``plain`` WebOb would pick for this ``Accept`` header."""
    if not accept:
        return "html"
    ranges = _parse_accept(accept)
    if not ranges:
        return "html"
    html_q = _quality("text/html", ranges)
    json_q = _quality("application/json", ranges)
    if html_q <= 0 and json_q <= 0:
        return "plain"
    return "json" if json_q > html_q else "html"


def error_body(code: int, message: str, accept: str | None) -> tuple[bytes, bytes]:
    """The body and content type WebOb would produce for ``code`` with ``message``."""
    title = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error"
    status = f"{code} {title}"
    fmt = error_format(accept)
    if fmt == "json":
        body = json.dumps(
            {"message": f"{message}<br /><br />\n\n\n", "code": status, "title": title}
        )
        return body.encode("utf-8"), b"application/json"
    if fmt == "plain":
        return f"{status}\n\n{message}\n\n".encode(), b"text/plain; charset=UTF-8"
    escaped = html.escape(message, quote=False)
    page = (
        f"<html>\n <head>\n  <title>{status}</title>\n </head>\n <body>\n"
        f"  <h1>{status}</h1>\n  {escaped}<br /><br />\n\n\n\n </body>\n</html>"
    )
    return page.encode("utf-8"), b"text/html; charset=UTF-8"


def _accept(request: IRequest) -> str | None:
    value = request.getHeader(b"accept")
    return value.decode("latin-1") if value is not None else None


def write_error(
    request: IRequest,
    code: int,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    request.setResponseCode(code)
    for name, value in (headers or {}).items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))
    body, content_type = error_body(code, message, _accept(request))
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def render_failure(request: IRequest, failure: Failure) -> bytes:
    """Turn any failure of a handler into an error response (Klein's ``handle_errors``)."""
    error = failure.value
    if getattr(request, "startedWriting", False):
        # The status line and part of the body are out (a download whose store failed midway):
        # an error page now would reach the client as the rest of the body.  Cut the
        # connection instead, so the client sees a body shorter than its Content-Length.
        log.warn(
            "{method} {uri} failed after its response had begun ({error}); connection cut",
            method=request.method, uri=request.uri, error=failure.getErrorMessage(),
        )
        transport = getattr(request, "transport", None)
        if transport is not None:
            transport.abortConnection()
        return b""
    if isinstance(error, HTTPError):
        return write_error(request, error.code, error.message, error.headers)
    if isinstance(error, errors.ImageServiceError):
        code = next(code for kind, code in STATUS_BY_ERROR if isinstance(error, kind))
        headers = {}
        if isinstance(error, errors.RangeNotSatisfiable) and error.size is not None:
            headers["Content-Range"] = f"bytes */{error.size}"
        if isinstance(error, errors.Unauthorized) and error.challenge:
            headers["WWW-Authenticate"] = error.challenge
        if isinstance(error, errors.MetadataUnavailable):
            headers["Retry-After"] = str(error.retry_after)
        if code >= 500:
            log.error("request failed: {message}", message=error.message)
            store = "metadata" if isinstance(error, errors.MetadataUnavailable) else "any"
            metrics.STORE_ERRORS.labels(store, type(error).__name__).inc()
        return write_error(request, code, error.message, headers)
    if isinstance(error, HTTPException):
        headers = {}
        for name, value in error.get_headers():
            if name.lower() == "allow":
                headers["Allow"] = value
        code = error.code or 500
        description = error.description or HTTPStatus(code).phrase
        return write_error(request, code, description, headers)
    log.failure("unexpected error serving {method} {uri}", failure,
                method=request.method, uri=request.uri)
    return write_error(request, 500, "The server has either erred or is incapable of "
                       "performing the requested operation.")
