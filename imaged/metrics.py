"""
What imaged counts, for Prometheus (``--metrics-listen``), in one place.

The metric objects live in prometheus_client's default registry; the web layer, the stores
and the SQL store record into them, and ``metrics_site`` serves them on a listener of their
own, so that scraping never competes with (or is exposed like) the Image API.  Routes are the
templates of the rules Klein matched (``/v2/images/{image_id}/file``, noted on the request by
``imaged.web.routing``), never raw paths, to keep label counts bounded.
"""

from __future__ import annotations

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
    "imaged_store_errors",
    "Store operations that failed: by store (a blob store's name, 'metadata' for the "
    "database, 'any' for a request's failure not traced to one) and kind (read, write, "
    "delete, ping, or the error's class)",
    ["store", "kind"],
)
DB_LATENCY = Histogram(
    "imaged_db_transaction_seconds",
    "Metadata database transactions by name (create_image, list_images, ...), queueing included",
    ["transaction"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)


def metrics_site() -> Site:
    """A ``Site`` serving the metrics at ``/metrics``."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource())
    site = Site(root)
    site.displayTracebacks = False
    return site
