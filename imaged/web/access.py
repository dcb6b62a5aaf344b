"""
One access-log event per request, carrying its request id, and the request metrics.

Twisted's own access log (a combined-format line through the legacy logging API) is replaced
by a structured ``twisted.logger`` event in the ``imaged.access`` namespace: its fields
(``method``, ``path``, ``code``, ``request_id``, ``duration_ms``, ...) come out as keys when
the daemon logs JSON lines (``twistd --logger imaged.logs.json_observer``).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from .. import metrics
from .routing import UNMATCHED

log = Logger(namespace="imaged.access")


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_finished(request: Any) -> None:  # a twisted.web Request: IRequest lacks .code
    """The site's hook: a response has been sent completely (or the client went away)."""
    now = time.monotonic()
    duration = now - getattr(request, "began", now)
    method = request.method.decode("ascii", "replace")
    path = request.path.decode("utf-8", "replace")
    code = int(request.code)
    request_id = request.responseHeaders.getRawHeaders(b"x-openstack-request-id", [b"-"])[0]
    body = getattr(request, "body_stream", None)
    # What arrived, not what was declared: a refused body declares whatever it likes.
    received = body.received if body is not None else int(getattr(request, "body_received", 0))
    sent = int(getattr(request, "sentLength", 0) or 0)
    client = request.getClientAddress()
    route = getattr(request, "imaged_route", UNMATCHED)
    # A client chooses its method: only known ones become label values, or any client could
    # mint new metric series without end.
    label = method if method in _METHODS else "OTHER"
    metrics.REQUESTS.labels(route, label, str(code)).inc()
    metrics.LATENCY.labels(route, label).observe(duration)
    metrics.RECEIVED.inc(received)
    metrics.SENT.inc(sent)
    log.info(
        "{client} {method} {path} {code} {sent} bytes in {duration_ms:.1f} ms {request_id}",
        client=getattr(client, "host", str(client)),
        method=method,
        path=path,
        query=request.uri.decode("utf-8", "replace").partition("?")[2],
        code=code,
        received=received,
        sent=sent,
        duration_ms=duration * 1000,
        request_id=request_id.decode("ascii", "replace"),
        user_agent=(request.getHeader(b"user-agent") or b"").decode("latin-1"),
    )
