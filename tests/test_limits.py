"""
What one client may cost before it is served: the request-body limit (413 at the headers, the
body dropped, never parsed), header and body deadlines on an injected clock, and the connection
limit.  Wire tests drive the real site over ``StringTransport`` with a ``Clock`` as its reactor
(no test sleeps); one real-socket test sends a 256 MiB JSON body to a listening server.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from imaged import tap
from imaged.api import APIConfig, ImageService, routes
from imaged.settings import Settings
from imaged.store.sql import SQLMetadataStore
from imaged.testing import LOCAL_PEER, MemoryBlobStore
from imaged.web.errors import error_body
from imaged.web.site import make_site
from imaged.web.streaming import (
    MAX_REQUEST_BODY,
    BodyStream,
    HTTPLimits,
    default_max_connections,
)

from .test_streaming_wire import OWNER, HeldBlobStore, chunked, upload_headers

LIMIT = MAX_REQUEST_BODY  # Glance's 114,688 bytes: the default is what is tested
TOO_LARGE = f"Request is too large. Larger than max_request_body_size ({LIMIT})."
TOO_LARGE_CHUNKED = f"Request is too large. Larger than {LIMIT}."
LATE = "The server has waited too long for the request to be sent by the client."
CREATE = {"disk_format": "raw", "container_format": "bare"}


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the one (final) response in ``raw``."""
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


class Connection:
    """One client connection to the site, driven byte by byte."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = StringTransport(peerAddress=LOCAL_PEER)
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: imaged.test"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def request(self, method: str, path: str, headers: dict[str, str],
                body: bytes = b"") -> None:
        self.send(self.head(method, path, headers) + body)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        return parse(self.transport.value())

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lost(self) -> None:
        """The connection is gone (what the reactor reports once a close is done)."""
        self.protocol.connectionLost(Failure(ConnectionDone("closed")))


class Site:
    """The real imaged site over in-memory stores, with a ``Clock`` for its deadlines."""

    def __init__(self, limits: HTTPLimits | None = None) -> None:
        self.clock = Clock()
        self.blobs = HeldBlobStore()
        self.blobs.hold = False
        self.service = ImageService(SQLMetadataStore.in_memory(), self.blobs)
        api = routes(APIConfig(image_service=self.service))
        self.site = make_site(api.resource(), body_router=api.bodies,
                              limits=limits or HTTPLimits(max_connections=100),
                              reactor=self.clock)
        #: Requests that reached the application (twisted.web resolving their resource).
        self.routed: list[tuple[bytes, bytes]] = []
        resolve = self.site.getResourceFor

        def spy(request: Any) -> Any:
            self.routed.append((request.method, request.uri))
            return resolve(request)

        self.site.getResourceFor = spy  # type: ignore[method-assign]

    def connect(self) -> Connection:
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        connection = Connection(protocol)
        assert not connection.transport.disconnected  # not refused
        return connection

    def images(self) -> list[str]:
        """The ids of every image, asked on a connection of its own."""
        connection = self.connect()
        connection.request("GET", "/v2/images", OWNER)
        status, _, body = connection.response()
        assert status == 200, body
        return sorted(image["id"] for image in json.loads(body)["images"])

    def create(self, body: bytes | None = None) -> tuple[int, bytes]:
        connection = self.connect()
        data = body if body is not None else json.dumps(CREATE).encode()
        connection.request("POST", "/v2/images", {**OWNER, "Content-Length": str(len(data))},
                           data)
        status, _, reply = connection.response()
        return status, reply


def json_body_of(size: int) -> bytes:
    """A valid image-create document of exactly ``size`` bytes (padded with whitespace)."""
    document = json.dumps({**CREATE, "name": "padded"}).encode()
    return document + b" " * (size - len(document))


def ours(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "imaged.web.streaming"]


@pytest.mark.parametrize("accept", [None, "application/json"], ids=["html", "json"])
def test_a_declared_body_over_the_limit_is_413_before_any_of_it_arrives(
    accept: str | None,
) -> None:
    site = Site()
    before = site.images()
    connection = site.connect()
    headers = {**OWNER, "Content-Type": "application/json", "Content-Length": str(LIMIT + 1)}
    if accept:
        headers["Accept"] = accept
    with capturedLogs() as events:
        connection.request("POST", "/v2/images?x=1", headers)
    # Answered on the headers alone: not one body byte has been sent.
    status, response_headers, body = connection.response()
    assert status == 413
    expected, content_type = error_body(413, TOO_LARGE, accept)
    assert body == expected and response_headers["content-type"] == content_type.decode()
    assert response_headers["connection"] == "close"
    assert response_headers["content-length"] == str(len(expected))
    assert response_headers["x-openstack-request-id"].startswith("req-")
    answer = connection.transport.value()
    # The client keeps sending: read and dropped, the connection stays open meanwhile ...
    for _ in range(LIMIT // 16384):
        connection.send(b"{" * 16384)
    assert not connection.closing
    connection.send(b"{" * (LIMIT + 1 - (LIMIT // 16384) * 16384))
    # ... and closes once the declared body is in, with nothing written after the 413.
    assert connection.closing and connection.transport.value() == answer
    assert site.routed == [(b"GET", b"/v2/images")]  # only images() reached the application
    assert site.images() == before
    [line] = ours(events)  # one line, no traceback
    assert line["log_level"].name == "warn" and "log_failure" not in line
    assert (line["method"], line["path"], line["declared"], line["limit"]) == (
        "POST", "/v2/images", LIMIT + 1, LIMIT)
    assert not [e for e in events if "log_failure" in e]
    [access] = [e for e in events if e.get("log_namespace") == "imaged.access"]
    assert access["code"] == 413  # counted in the access log and metrics like any answer


@pytest.mark.parametrize("declared", ["1" + "0" * 400, "9" * 5000, "99999999999999999999"])
def test_absurd_content_lengths_are_refused_without_a_traceback(declared: str) -> None:
    site = Site()
    before = site.images()
    connection = site.connect()
    with capturedLogs() as events:
        connection.request("POST", "/v2/images", {**OWNER, "Content-Length": declared},
                           b"{}")
    assert connection.transport.value().startswith(b"HTTP/1.1 4")
    assert connection.closing
    assert not [e for e in events if "log_failure" in e or e.get("isError")]
    assert site.images() == before


def test_the_access_log_counts_bytes_received_not_declared() -> None:
    site = Site()
    connection = site.connect()
    with capturedLogs() as events:
        connection.request("POST", "/v2/images", {**OWNER, "Content-Length": str(LIMIT * 4)},
                           b"{" * 10)
    [access] = [e for e in events if e.get("log_namespace") == "imaged.access"]
    assert access["code"] == 413 and access["received"] <= 10


def test_a_chunked_body_is_refused_when_it_goes_over() -> None:
    site = Site()
    before = site.images()
    connection = site.connect()
    with capturedLogs() as events:
        connection.request("POST", "/v2/images", {
            **OWNER, "Transfer-Encoding": "chunked", "Accept": "application/json"})
        connection.send(chunked(b" " * (LIMIT - 10)))
        assert connection.transport.value() == b""  # within the limit: still reading
        connection.send(chunked(b" " * 11))  # one byte over
        status, headers, body = connection.response()
        assert status == 413 and headers["connection"] == "close"
        assert body == error_body(413, TOO_LARGE_CHUNKED, "application/json")[0]
        answer = connection.transport.value()
        for _ in range(20):
            connection.send(chunked(b"x" * 65536))  # dropped as it arrives
        assert not connection.closing
        connection.send(b"0\r\n\r\n")
    assert connection.closing and connection.transport.value() == answer
    assert site.images() == before
    [line] = ours(events)
    assert line["declared"] is None and line["received"] == LIMIT + 1
    assert not [e for e in events if "log_failure" in e]


def test_expect_100_continue_over_the_limit_gets_the_413_and_no_invitation() -> None:
    site = Site()
    connection = site.connect()
    connection.request("POST", "/v2/images", {
        **OWNER, "Content-Length": str(10 * LIMIT), "Expect": "100-continue"})
    assert connection.transport.value().startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in connection.transport.value()


def test_bodies_at_the_limit_are_accepted() -> None:
    site = Site()
    status, body = site.create(json_body_of(LIMIT))
    assert status == 201, body
    assert json.loads(body)["name"] == "padded"
    connection = site.connect()
    document = json_body_of(LIMIT)
    connection.request("POST", "/v2/images", {**OWNER, "Transfer-Encoding": "chunked"},
                       chunked(document[:50_000]) + chunked(document[50_000:]) + b"0\r\n\r\n")
    status, _, body = connection.response()
    assert status == 201, body
    assert len(site.images()) == 2


def test_uploads_are_not_held_to_the_limit() -> None:
    site = Site()
    data = os.urandom(4 * LIMIT)
    for length in (len(data), None):  # declared, then chunked
        status, body = site.create()
        image_id = json.loads(body)["id"]
        connection = site.connect()
        connection.request("PUT", f"/v2/images/{image_id}/file", upload_headers(length))
        for start in range(0, len(data), 65536):
            piece = data[start:start + 65536]
            connection.send(piece if length is not None else chunked(piece))
        if length is None:
            connection.send(b"0\r\n\r\n")
        status, _, reply = connection.response()
        assert status == 204, reply
        assert site.blobs.blobs[f"held://{image_id}"] == data


def test_the_header_deadline_closes_a_slowloris_connection() -> None:
    site = Site()
    connection = site.connect()
    trickle = connection.head("GET", "/v2/images", {**OWNER, "X-Padding": "p" * 100})
    with capturedLogs() as events:
        for second in range(0, 60, 2):  # a byte every 2 s: Twisted's idle timeout never fires
            assert not connection.closing, second
            connection.send(trickle[second // 2:second // 2 + 1])
            site.clock.advance(2)
    assert connection.closing
    status, headers, body = connection.response()
    assert status == 408 and headers["connection"] == "close"
    assert body == error_body(408, LATE, None)[0]
    assert site.routed == []
    [line] = ours(events)
    assert line["phase"] == "headers" and "log_failure" not in line
    connection.lost()
    assert site.clock.getDelayedCalls() == []  # no timer outlives its connection


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    site = Site()
    connection = site.connect()
    site.clock.advance(59)
    assert not connection.closing
    site.clock.advance(1)
    assert connection.closing and connection.transport.value() == b""


def test_idle_keep_alive_connections_keep_twisted_timeout_and_each_request_its_deadline(
) -> None:
    site = Site()
    site.site.timeOut = 3600  # Twisted's idle timeout, for this test's connections
    connection = site.connect()
    connection.request("GET", "/v2/images", OWNER)
    assert connection.response()[0] == 200
    connection.transport.clear()
    site.clock.advance(3000)  # idle between requests: not the header deadline's business
    assert not connection.closing
    connection.request("GET", "/v2/images", OWNER)
    assert connection.response()[0] == 200
    connection.transport.clear()
    # A new request's first bytes start its own header deadline.
    connection.send(b"GET /v2/images HTTP/1.1\r\nHost: x\r\n")
    site.clock.advance(59.5)
    assert not connection.closing
    site.clock.advance(0.5)
    assert connection.closing and connection.response()[0] == 408
    connection.lost()
    # And an idle connection is closed by Twisted's own timeout.
    idle = site.connect()
    idle.request("GET", "/v2/images", OWNER)
    assert idle.response()[0] == 200
    site.clock.advance(3599)
    assert not idle.closing
    site.clock.advance(1)
    assert idle.closing


def test_a_body_without_progress_is_closed() -> None:
    site = Site()
    before = site.images()
    connection = site.connect()
    document = json.dumps(CREATE).encode()
    with capturedLogs() as events:
        connection.request("POST", "/v2/images", {
            **OWNER, "Content-Length": str(len(document)), "Accept": "application/json"},
            document[:10])
        for piece in (document[10:20], document[20:30]):
            site.clock.advance(59)  # slow, but moving: fine
            assert not connection.closing
            connection.send(piece)
        site.clock.advance(59.9)
        assert not connection.closing
        site.clock.advance(0.1)
    assert connection.closing
    status, _, body = connection.response()
    assert status == 408 and body == error_body(408, LATE, "application/json")[0]
    [line] = ours(events)
    assert (line["phase"], line["method"], line["path"]) == ("body", "POST", "/v2/images")
    connection.lost()
    assert site.images() == before
    assert [method for method, _ in site.routed] == [b"GET", b"GET"]  # never the POST


def test_an_upload_without_progress_is_closed_and_keeps_nothing() -> None:
    site = Site()
    image_id = json.loads(site.create()[1])["id"]
    connection = site.connect()
    connection.request("PUT", f"/v2/images/{image_id}/file", upload_headers(1024 * 1024),
                       b"u" * 100_000)
    site.clock.advance(60)
    assert connection.closing and connection.response()[0] == 408
    connection.lost()
    assert site.blobs.blobs == {}
    status_connection = site.connect()
    status_connection.request("GET", f"/v2/images/{image_id}", OWNER)
    assert json.loads(status_connection.response()[2])["status"] == "queued"


def test_an_upload_paused_by_a_slow_store_is_not_timed_out() -> None:
    site = Site()
    image_id = json.loads(site.create()[1])["id"]
    site.blobs.hold = True
    data = os.urandom(12 * 1024 * 1024)
    connection = site.connect()
    connection.request("PUT", f"/v2/images/{image_id}/file", upload_headers(len(data)))
    sent = 0
    while connection.transport.producerState == "producing" and sent < len(data):
        connection.send(data[sent:sent + 65536])
        sent += 65536
    assert connection.transport.producerState == "paused" and sent < len(data)
    [request] = connection.protocol._channel.requests
    assert isinstance(request.body_stream, BodyStream) and request.body_stream.reading_paused
    site.clock.advance(600)  # imaged is the one not reading: the client is not late
    assert not connection.closing
    site.blobs.hold = False
    site.blobs.release()
    connection.send(data[sent:])
    status, _, body = connection.response()
    assert status == 204, body
    assert site.blobs.blobs[f"held://{image_id}"] == data


def test_a_refused_body_is_drained_only_while_it_keeps_coming() -> None:
    site = Site()
    stalled = site.connect()
    stalled.request("POST", "/v2/images", {**OWNER, "Content-Length": str(100 * LIMIT)})
    assert stalled.response()[0] == 413
    for _ in range(3):
        site.clock.advance(4.9)  # a piece every 4.9 s keeps it open
        stalled.send(b"x" * 1000)
        assert not stalled.closing
    site.clock.advance(5)  # then 5 s without a byte: closed
    assert stalled.closing
    # A client that keeps sending is let go after 30 s whatever it does.
    steady = site.connect()
    steady.request("POST", "/v2/images", {**OWNER, "Content-Length": str(100 * LIMIT)})
    for _ in range(29):
        site.clock.advance(1)
        assert not steady.closing
        steady.send(b"x" * 1000)
    site.clock.advance(1)
    assert steady.closing
    # The client that never reads its answer is aborted after Twisted's abortTimeout.
    assert not steady.transport.disconnected
    site.clock.advance(15)
    assert steady.transport.disconnected


def test_the_connection_limit_refuses_past_it_and_says_so_once_per_burst() -> None:
    site = Site(HTTPLimits(max_connections=3))
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    open_ = [site.connect() for _ in range(3)]

    def refused() -> bool:
        """Whether a new connection is closed as soon as it is made."""
        transport = StringTransport(peerAddress=LOCAL_PEER)
        site.site.buildProtocol(address).makeConnection(transport)
        return bool(transport.disconnected) and transport.value() == b""

    with capturedLogs() as events:
        assert [refused() for _ in range(5)] == [True] * 5
        # Behind a wrapping factory (as TLS listeners are) the refusal closes the same way.
        wrapped = StringTransport()
        WrappingFactory(site.site).buildProtocol(address).makeConnection(wrapped)
        assert wrapped.disconnected
        [reached] = ours(events)
        assert reached["log_level"].name == "warn" and reached["open"] == 3
        open_.pop().lost()
        recovered = ours(events)[1:]
        assert [e["refused"] for e in recovered] == [6]  # "accepting again, 6 refused"
        open_.append(site.connect())  # admitted again
        # A second burst within a minute is counted, not reported again ...
        assert refused()
        open_.pop().lost()
        assert len(ours(events)) == 2
        open_.append(site.connect())
        # The connections still open are served.
        open_[0].request("GET", "/v2/images", OWNER)
        assert open_[0].response()[0] == 200
        # ... a burst a minute later is.
        site.clock.advance(60)
        assert refused()
    reports = [e for e in ours(events) if e["log_level"].name != "debug"]
    assert len(reports) == 3 and reports[2]["log_level"].name == "warn"
    assert not [e for e in events if "log_failure" in e]


def test_the_default_connection_limit_fits_the_open_files_limit() -> None:
    assert default_max_connections(65536) == 4096
    assert default_max_connections(1024) == 480  # systemd's default soft limit
    assert default_max_connections(70) == 3
    assert default_max_connections(10) == 1
    assert 1 <= HTTPLimits().max_connections <= 4096  # type: ignore[operator]


def test_options_become_the_sites_limits(tmp_path: Any) -> None:
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path)])
    assert options.settings.http == HTTPLimits()
    assert options.settings.http.max_request_body == 114_688
    assert options.settings.http.header_timeout == options.settings.http.body_timeout == 60.0
    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--max-request-body", "2048",
                          "--header-timeout", "10", "--body-timeout", "0",
                          "--max-connections", "100"])
    assert options.settings.http == HTTPLimits(
        max_request_body=2048, header_timeout=10.0, body_timeout=None, max_connections=100)
    config = tmp_path / "imaged.conf"
    config.write_text('max-request-body = 4096\nheader-timeout = 2.5\nmax-connections = 7\n')
    options = tap.Options()
    options.parseOptions(["--config", str(config), "--data-dir", str(tmp_path)])
    assert attrs.astuple(options.settings.http)[:4] == (4096, 2.5, 60.0, 7)
    for bad in (["--max-request-body", "0"], ["--header-timeout", "-1"],
                ["--body-timeout", "soon"], ["--body-timeout", "inf"],
                ["--max-connections", "-5"]):
        with pytest.raises(UsageError):
            tap.Options().parseOptions(bad)


def test_the_daemon_serves_with_the_configured_limits(tmp_path: Any) -> None:
    from twisted.application.internet import StreamServerEndpointService

    from .test_tap import ThreadedMemoryReactor

    options = tap.Options()
    options.parseOptions(["--data-dir", str(tmp_path), "--max-request-body", "1000",
                          "--max-connections", "7"])
    memory_reactor = ThreadedMemoryReactor()
    service = tap.makeService(options, memory_reactor)
    [listener] = [s for s in service if isinstance(s, StreamServerEndpointService)]
    site: Any = listener.factory
    assert site.limits == options.settings.http and site.gate.limit == 7
    assert site.reactor is memory_reactor  # the deadlines' clock
    assert Settings.from_options(options).http == options.settings.http


# -- over a real socket --------------------------------------------------------------------------

#: What the large request declares, and the most this test ever sends of it.
DECLARED = 256 * 1024 * 1024
SENT_AT_MOST = 16 * 1024 * 1024


class LargeBodySender(Protocol):
    """Declares a 256 MiB JSON body and keeps sending it, a MiB per reactor turn, until told
    to stop; ``answered`` fires with the raw response once it is complete."""

    def __init__(self) -> None:
        self.answered: Deferred[bytes] = Deferred()
        self.received = b""
        self.sent = 0
        self.sent_when_answered: int | None = None
        self.lost = False
        self.sending = True

    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"POST /v2/images HTTP/1.1\r\nHost: imaged.test\r\nX-Project-Id: p1\r\n"
            b"X-Roles: member\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{\"name\": \"" % DECLARED)
        self.pump()

    def pump(self) -> None:
        if not self.sending or self.lost or self.sent >= SENT_AT_MOST:
            return
        self.transport.write(b"a" * (1024 * 1024))  # type: ignore[union-attr]
        self.sent += 1024 * 1024
        reactor.callLater(0, self.pump)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        head, separator, body = self.received.partition(b"\r\n\r\n")
        if not separator or self.answered.called:
            return
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        if len(body) >= length:
            self.sent_when_answered = self.sent
            self.answered.callback(self.received)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        if not self.answered.called:
            self.answered.errback(reason)


@pytest_twisted.ensureDeferred
async def test_a_256_mib_json_body_is_refused_at_once_while_others_are_served() -> None:
    service = ImageService(SQLMetadataStore.in_memory(), MemoryBlobStore())
    api = routes(APIConfig(image_service=service))
    site = make_site(api.resource(), body_router=api.bodies)  # the defaults, as embedded
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        before = await (await treq.get(f"{base}/v2/images", headers=OWNER)).json()
        sender = LargeBodySender()
        started = time.monotonic()
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), sender)
        # (Before the limit no answer came until all 256 MiB had been read: bounded here.)
        raw = await sender.answered.addTimeout(30, reactor)
        elapsed = time.monotonic() - started
        status, headers, body = parse(raw)
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["message"].startswith("Request is too large.")
        # Answered while the client had sent a sliver of what it declared, and promptly
        # (reading and parsing all of it took about 65 s before).
        assert sender.sent_when_answered is not None
        assert sender.sent_when_answered < DECLARED // 16
        assert elapsed < 10, elapsed
        # Meanwhile the server still drains that connection and serves everyone else.
        assert not sender.lost
        listing = await treq.get(f"{base}/v2/images", headers=OWNER)
        assert listing.code == 200
        assert await listing.json() == before
        assert not sender.lost
        sender.sending = False
        sender.transport.loseConnection()  # type: ignore[union-attr]
    finally:
        await port.stopListening()


def test_unknown_methods_share_one_metrics_label() -> None:
    from imaged import metrics

    site = Site()
    for method in ("FROB", "XYZZY"):
        connection = site.connect()
        connection.request(method, "/v2/images", OWNER)
        assert connection.response()[0] in (400, 405, 501)
    labels = {
        sample.labels.get("method")
        for family in metrics.REQUESTS.collect() for sample in family.samples
    }
    assert "OTHER" in labels and not {"FROB", "XYZZY"} & labels
