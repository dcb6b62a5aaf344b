"""
What imaged counts, for Prometheus (``--metrics-listen``), in one place.

The metric objects live in prometheus_client's default registry; the web layer, the stores
and the SQL store record into them, and ``metrics_site`` serves them on a listener of their
own, so that scraping never competes with (or is exposed like) the Image API.  Routes are
templates (``/v2/images/{image_id}/file``), never raw paths, to keep label counts bounded.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Site

REQUESTS = Counter(
    "imaged_http_requests", "HTTP requests answered", ["route", "method", "code"]
)
LATENCY = Histogram(
    "imaged_http_request_duration_seconds",
    "Time from a request's headers to its last response byte",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600),
)
RECEIVED = Counter("imaged_http_received_bytes", "Request body bytes received")
SENT = Counter("imaged_http_sent_bytes", "Response body bytes sent")
UPLOADS = Gauge("imaged_uploads_in_progress", "Image uploads being received")
STORE_ERRORS = Counter(
    "imaged_store_errors", "Requests failed because a store could not do its part", ["kind"]
)
DB_LATENCY = Histogram(
    "imaged_db_transaction_seconds",
    "Metadata database transactions, from queueing to result",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)

_ROUTES = [
    (re.compile(pattern), template)
    for pattern, template in (
        (r"^/v2(?:\.\d+)?/images/?$", "/v2/images"),
        (r"^/v2(?:\.\d+)?/images/[^/]+/?$", "/v2/images/{image_id}"),
        (r"^/v2(?:\.\d+)?/images/[^/]+/file/?$", "/v2/images/{image_id}/file"),
        (r"^/v2(?:\.\d+)?/images/[^/]+/tags/[^/]+$", "/v2/images/{image_id}/tags/{tag}"),
        (r"^/v2(?:\.\d+)?/images/[^/]+/members/?$", "/v2/images/{image_id}/members"),
        (
            r"^/v2(?:\.\d+)?/images/[^/]+/members/[^/]+$",
            "/v2/images/{image_id}/members/{member_id}",
        ),
        (
            r"^/v2(?:\.\d+)?/images/[^/]+/actions/(deactivate|reactivate)$",
            "/v2/images/{image_id}/actions/{action}",
        ),
        (r"^/v2(?:\.\d+)?/schemas/.+$", "/v2/schemas/{name}"),
        (r"^/v2(?:\.\d+)?/info/.+$", "/v2/info/{name}"),
        (r"^/v2(?:\.\d+)?/?$", "/v2"),
        (r"^/versions(/.*)?$", "/versions"),
        (r"^/healthcheck/?$", "/healthcheck"),
        (r"^/$", "/"),
    )
]


def route_of(path: str) -> str:
    """The route template a path belongs to (``other`` for anything unknown)."""
    path = path.split("?", 1)[0]
    for pattern, template in _ROUTES:
        if pattern.match(path):
            return template
    return "other"


def metrics_site() -> Site:
    """A ``Site`` serving the metrics at ``/metrics``."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource())
    site = Site(root)
    site.displayTracebacks = False
    return site
