"""
The web-download fetcher (``imaged.fetch``): its rules, its pinned connections, its deadlines.

``check_uri`` is checked as a table.  Resolution, address pinning and the deadlines run on a
``MemoryReactorClock``: the fetcher's TCP connections are recorded there, the test plays the
server over a ``StringTransport`` and moves time by hand.  The rest talks to real twisted.web
servers on 127.0.0.1 (port 0) with the real reactor: streaming with back-pressure, redirects,
refusals, errors, and TLS verified against the URI's host name while connecting to the address
that was checked.  Nothing here touches the internet or resolves any real name but
``localhost``.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IConsumer, IOpenSSLContextFactory, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from imaged.errors import BadRequest
from imaged.fetch import Fetched, Fetcher, FetchFailed, FetchRefused, ImportFilter

from .conftest import fired

T = TypeVar("T")
MiB = 1024 * 1024
PUBLIC = "93.184.216.34"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
#: What the loopback servers need: their address, and whatever port they got.
LOCAL = ImportFilter(allowed_ports=(), allowed_networks=(LOOPBACK,))


# -- check_uri ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", [
    "http://images.example.com/cirros.qcow2",
    "https://images.example.com/a/b.img?token=x&y=%2F",
    "HTTP://IMAGES.Example.COM/x",
    "http://images.example.com:80/x",
    "https://images.example.com:443/x",
    "http://images.example.com./x",
    "http://bücher.example/x",
    f"http://{PUBLIC}/x",
    "http://[2606:2800:220:1::1]/x",
    f"http://[::ffff:{PUBLIC}]/x",  # IPv4-mapped: judged as the IPv4 address it carries
    "http://[64:ff9b::5db8:d822]/x",  # NAT64 of 93.184.216.34
    "http://[2002:5db8:d822::1]/x",  # 6to4 of 93.184.216.34
])
def test_default_rules_allow_public_http_and_https(uri: str) -> None:
    ImportFilter().check_uri(uri)


@pytest.mark.parametrize(("uri", "why"), [
    ("ftp://images.example.com/x", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://images.example.com/x", "scheme 'gopher' is not allowed"),
    ("//images.example.com/x", "no scheme"),
    ("http://images.example.com:8080/x", "port 8080 is not allowed"),
    ("http://images.example.com:0/x", "port 0"),
    ("http://images.example.com:99999/x", "not a valid URI"),
    ("http://images.example.com:http/x", "not a valid URI"),
    ("http://user:secret@images.example.com/x", "credentials"),
    ("http://user@images.example.com/x", "credentials"),
    ("http://@images.example.com/x", "credentials"),
    ("http:///x", "no host"),
    ("http://images example.com/x", "not a valid URI"),
    ("http://images.example.com/a b", "not a valid URI"),
    ("http://evil.example\\@images.example.com/", "not a valid URI"),
    ("http://a..b/x", "not a valid host name"),
    ("http://[127.0.0.1]/x", "not a valid URI"),
    ("http://[fe80::1%25eth0]/x", "zone"),
    ("", "not a valid URI"),
    ("http://127.0.0.1/x", "loopback"),
    ("http://127.1.2.3/x", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]/x", "loopback"),
    ("http://10.0.0.1/x", "private"),
    ("http://172.16.5.4/x", "private"),
    ("http://192.168.1.1/x", "private"),
    ("http://[fc00::1]/x", "private"),
    ("http://[fe80::1]/x", "link-local"),
    ("http://[::ffff:127.0.0.1]/x", "loopback"),
    ("http://[::ffff:169.254.169.254]/x", "link-local"),
    ("http://[64:ff9b::7f00:1]/x", "loopback"),  # NAT64 of 127.0.0.1
    ("http://[2002:a00:1::1]/x", "private"),  # 6to4 of 10.0.0.1
    ("http://[64:ff9b:1::1]/x", "reserved"),
    ("http://[fec0::1]/x", "site-local"),
    ("http://0.0.0.0/x", "unspecified"),
    ("http://0.1.2.3/x", "unspecified"),
    ("http://[::]/x", "unspecified"),
    ("http://100.64.1.1/x", "carrier-grade NAT"),
    ("http://224.0.0.1/x", "multicast"),
    ("http://[ff02::1]/x", "multicast"),
    ("http://240.0.0.1/x", "reserved"),
    ("http://255.255.255.255/x", "broadcast"),
    # What getaddrinfo would read as 127.0.0.1: caught without resolving anything.
    ("http://2130706433/x", "127.0.0.1 is not allowed (loopback)"),
    ("http://0x7f.1/x", "127.0.0.1 is not allowed (loopback)"),
    ("http://0177.0.0.1/x", "127.0.0.1 is not allowed (loopback)"),
    ("http://127.1/x", "127.0.0.1 is not allowed (loopback)"),
])
def test_default_rules_refuse(uri: str, why: str) -> None:
    with pytest.raises(BadRequest, match="URI for web-download does not pass filtering") as e:
        ImportFilter().check_uri(uri)
    assert why in e.value.message
    assert "secret" not in e.value.message


@pytest.mark.parametrize(("uri", "network"), [
    ("http://127.0.0.1/x", "127.0.0.0/8"),
    ("http://169.254.169.254/x", "169.254.169.254/32"),
    ("http://[::1]/x", "::1/128"),
    ("http://10.0.0.1/x", "10.0.0.0/8"),
    ("http://[::ffff:127.0.0.1]/x", "127.0.0.0/8"),
    ("http://[::ffff:127.0.0.1]/x", "::ffff:127.0.0.0/104"),
    ("http://0.0.0.0/x", "0.0.0.0/32"),
    ("http://100.64.1.1/x", "100.64.0.0/10"),
])
def test_allowed_networks_are_exceptions_to_the_refused_ranges(uri: str, network: str) -> None:
    with pytest.raises(BadRequest):
        ImportFilter(allowed_networks=(ipaddress.ip_network("192.168.0.0/16"),)).check_uri(uri)
    ImportFilter(allowed_networks=(ipaddress.ip_network(network),)).check_uri(uri)


@pytest.mark.parametrize(("rules", "allowed", "refused"), [
    # Schemes: the allowed list wins; without one, the disallowed list refuses.
    (ImportFilter(allowed_schemes=("https",)), ["https://a.example/"], ["http://a.example/"]),
    (ImportFilter(allowed_schemes=(), disallowed_schemes=("http",)),
     ["https://a.example/"], ["http://a.example/"]),
    (ImportFilter(allowed_schemes=("https",), disallowed_schemes=("https",)),
     ["https://a.example/"], ["http://a.example/"]),
    (ImportFilter(allowed_schemes=("ftp",)), [], ["ftp://a.example/"]),  # allowed, unsupported
    # Hosts: compared without case or a trailing dot; an allowed list ignores the disallowed.
    (ImportFilter(allowed_hosts=("images.example.com",)),
     ["http://images.example.com/", "http://IMAGES.example.com./"],
     ["http://other.example.com/", "http://example.com/"]),
    (ImportFilter(disallowed_hosts=("evil.example",)),
     ["http://good.example/"], ["http://evil.example/", "http://EVIL.Example./"]),
    (ImportFilter(allowed_hosts=("a.example",), disallowed_hosts=("a.example",)),
     ["http://a.example/"], ["http://b.example/"]),
    (ImportFilter(disallowed_hosts=("93.184.216.34", "2606:2800:220:1::1")),
     ["http://93.184.216.35/"],
     ["http://93.184.216.34/", "http://[2606:2800:220:1:0::1]/"]),
    (ImportFilter(allowed_hosts=("bücher.example",)), ["http://BÜCHER.example/"],
     ["http://buecher.example/"]),
    # Ports: a URI without one is checked with its scheme's.
    (ImportFilter(allowed_ports=()), ["http://a.example:8080/", "http://a.example:1/"], []),
    (ImportFilter(allowed_ports=(), disallowed_ports=(8080, 80)),
     ["http://a.example:8081/", "https://a.example/"],
     ["http://a.example:8080/", "http://a.example/"]),
    (ImportFilter(allowed_ports=(8443,)), ["https://a.example:8443/"],
     ["https://a.example/", "http://a.example/"]),
    (ImportFilter(allowed_ports=(443,), disallowed_ports=(443,)), ["https://a.example/"],
     ["http://a.example/"]),
])
def test_filtering_options_as_glance_has_them(
    rules: ImportFilter, allowed: list[str], refused: list[str]
) -> None:
    for uri in allowed:
        rules.check_uri(uri)
    for uri in refused:
        with pytest.raises(BadRequest):
            rules.check_uri(uri)


# -- the fake network: a MemoryReactorClock --------------------------------------------------


def resolver_of(
    table: dict[str, list[str]], asked: list[tuple[str, int]] | None = None
) -> Callable[[str, int], Deferred[list[str]]]:
    """A resolver answering from ``table`` (a name not there: DNSLookupError)."""

    def resolve(host: str, port: int) -> Deferred[list[str]]:
        if asked is not None:
            asked.append((host, port))
        if host in table:
            return succeed(list(table[host]))
        return fail(DNSLookupError(host))

    return resolve


def no_resolver(host: str, port: int) -> Deferred[list[str]]:
    raise AssertionError(f"nothing should have been resolved ({host})")


def accept(reactor: MemoryReactorClock, index: int = -1) -> tuple[Protocol, StringTransport]:
    """Complete the fetcher's ``index``-th connection: the test is the server behind it."""
    host, port, factory, _, _ = reactor.tcpClients[index]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(transport)
    return protocol, transport


def opening(fetcher: Fetcher, uri: str) -> Deferred[Fetched]:
    return Deferred.fromCoroutine(fetcher.open(uri))


def failure_of(d: Deferred[Any]) -> BaseException:
    """The exception ``d`` (already fired) failed with."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "Deferred has not fired"
    assert isinstance(outcome[0], Failure), f"Deferred succeeded with {outcome[0]!r}"
    error = outcome[0].value
    assert isinstance(error, BaseException)
    return error


@implementer(IConsumer)
class Sink:
    """A consumer keeping (or just hashing) what it is written; ``on_write`` sees each chunk."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.data = bytearray()
        self.received = 0
        self.digest = hashlib.sha256()
        self.on_write: Callable[[bytes], None] | None = None

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.received += len(data)
        self.digest.update(data)
        if self.keep:
            self.data += data
        if self.on_write is not None:
            self.on_write(data)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The log events emitted during the test."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def fetch_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "imaged.fetch"]


def test_a_host_resolving_to_a_private_address_is_refused_before_connecting(
    events: list[dict[str, Any]],
) -> None:
    reactor = MemoryReactorClock()
    asked: list[tuple[str, int]] = []
    fetcher = Fetcher(reactor, resolver=resolver_of({"intranet.example.com": ["10.1.2.3"]}, asked))
    error = failure_of(opening(fetcher, "http://intranet.example.com/x"))
    assert isinstance(error, FetchRefused)
    assert asked == [("intranet.example.com", 80)]
    assert reactor.tcpClients == []
    assert "resolves to an address that is not allowed" in str(error)
    assert "10.1.2.3" not in str(error)  # what a name resolves to stays inside
    started, refused = fetch_events(events)  # one line each
    assert started["log_format"] == "web-download of {uri} started"
    assert "10.1.2.3" in refused["detail"]  # but the log says it


@pytest.mark.parametrize("addresses", [
    [PUBLIC, "169.254.169.254"],  # any refused address refuses the host
    ["::ffff:127.0.0.1"],
    ["fe80::1%eth0"],
    ["64:ff9b::a9fe:a9fe"],  # NAT64 of the metadata service
])
def test_any_refused_address_refuses_the_host(addresses: list[str]) -> None:
    reactor = MemoryReactorClock()
    fetcher = Fetcher(reactor, resolver=resolver_of({"mixed.example.com": addresses}))
    assert isinstance(failure_of(opening(fetcher, "http://mixed.example.com/")), FetchRefused)
    assert reactor.tcpClients == []


def test_a_public_address_is_connected_to_as_checked_and_the_body_streams(
    events: list[dict[str, Any]],
) -> None:
    reactor = MemoryReactorClock()
    fetcher = Fetcher(reactor, resolver=resolver_of({"images.example.com": [PUBLIC]}))
    opened = opening(fetcher, "http://images.example.com/cirros.img?v=1")
    [(host, port, _, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == (PUBLIC, 80, 30.0)  # the checked address: no new lookup
    protocol, transport = accept(reactor)
    request = transport.value()
    assert request.startswith(b"GET /cirros.img?v=1 HTTP/1.1\r\n")
    assert b"\r\nHost: images.example.com\r\n" in request

    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
    fetched = fired(opened)
    assert fetched.length == 10 and fetched.producer.length == 10
    assert fetched.uri == "http://images.example.com/cirros.img?v=1"
    sink = Sink()
    done = fetched.producer.startProducing(sink)
    assert sink.data == b"01"
    protocol.dataReceived(b"234")
    assert sink.data == b"01234" and transport.producerState == "producing"

    fetched.producer.pauseProducing()  # back-pressure reaches the connection
    assert transport.producerState == "paused"
    protocol.dataReceived(b"56")  # already on its way: held, not written
    assert sink.data == b"01234"
    reactor.advance(600)  # no deadline while the consumer has it paused
    assert not done.called
    fetched.producer.resumeProducing()
    assert transport.producerState == "producing" and sink.data == b"0123456"
    protocol.dataReceived(b"789")
    assert fired(done) is None and sink.data == b"0123456789"
    assert [e["log_format"] for e in fetch_events(events)] == ["web-download of {uri} started"]


def test_an_unknown_length_and_a_close_delimited_body() -> None:
    reactor = MemoryReactorClock()
    opened = opening(Fetcher(reactor, resolver=no_resolver), f"http://{PUBLIC}/x")
    assert reactor.tcpClients[0][:2] == (PUBLIC, 80)
    protocol, _ = accept(reactor)
    protocol.dataReceived(b"HTTP/1.0 200 OK\r\n\r\nabc")
    fetched = fired(opened)
    assert fetched.length is None
    sink = Sink()
    done = fetched.producer.startProducing(sink)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert fired(done) is None and sink.data == b"abc"


def test_https_connects_to_the_checked_address_too() -> None:
    reactor = MemoryReactorClock()
    fetcher = Fetcher(reactor, resolver=resolver_of({"secure.example.com": [PUBLIC]}))
    opening(fetcher, "https://secure.example.com/x")
    [(host, port, _, _, _)] = reactor.tcpClients
    assert (host, port) == (PUBLIC, 443)


def test_the_next_address_is_tried_when_one_cannot_be_reached() -> None:
    reactor = MemoryReactorClock()
    addresses = ["2606:2800:220:1::1", PUBLIC]
    fetcher = Fetcher(reactor, resolver=resolver_of({"images.example.com": addresses}))
    opened = opening(fetcher, "http://images.example.com/x")
    assert reactor.tcpClients[0][:2] == ("2606:2800:220:1::1", 80)
    reactor.tcpClients[0][2].clientConnectionFailed(
        reactor.connectors[0], Failure(ConnectionRefusedError())
    )
    assert reactor.tcpClients[1][:2] == (PUBLIC, 80)
    protocol, _ = accept(reactor, 1)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert fired(opened).length == 0


def test_a_connection_that_cannot_be_made_fails() -> None:
    reactor = MemoryReactorClock()
    opened = opening(Fetcher(reactor, resolver=no_resolver), f"http://{PUBLIC}/x")
    reactor.tcpClients[0][2].clientConnectionFailed(
        reactor.connectors[0], Failure(ConnectTimeout())
    )
    error = failure_of(opened)
    assert isinstance(error, FetchFailed) and "connecting timed out" in str(error)


def test_a_name_that_does_not_resolve_fails() -> None:
    reactor = MemoryReactorClock()
    error = failure_of(opening(Fetcher(reactor, resolver=resolver_of({})), "http://nx.example/"))
    assert isinstance(error, FetchFailed) and "could not resolve the host" in str(error)


def test_resolving_has_the_connect_timeout() -> None:
    reactor = MemoryReactorClock()
    fetcher = Fetcher(reactor, ImportFilter(connect_timeout=5), resolver=lambda h, p: Deferred())
    opened = opening(fetcher, "http://slow-dns.example/")
    reactor.advance(4.9)
    assert not opened.called
    reactor.advance(0.1)
    error = failure_of(opened)
    assert isinstance(error, FetchFailed) and "resolving the host timed out" in str(error)


def test_no_answer_within_the_idle_timeout_fails() -> None:
    reactor = MemoryReactorClock()
    fetcher = Fetcher(reactor, ImportFilter(idle_timeout=60), resolver=no_resolver)
    opened = opening(fetcher, f"http://{PUBLIC}/x")
    reactor.advance(1000)  # connecting has its own timeout (the endpoint's), not this one
    assert not opened.called
    _, transport = accept(reactor)
    reactor.advance(59.9)
    assert not opened.called
    reactor.advance(0.1)
    error = failure_of(opened)
    assert isinstance(error, FetchFailed) and "no answer in 60 s (timed out)" in str(error)
    assert transport.disconnecting  # aborted


def test_a_body_that_stalls_fails_after_the_idle_timeout() -> None:
    reactor = MemoryReactorClock()
    fetcher = Fetcher(reactor, ImportFilter(idle_timeout=60), resolver=no_resolver)
    opened = opening(fetcher, f"http://{PUBLIC}/x")
    protocol, transport = accept(reactor)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    fetched = fired(opened)
    reactor.advance(600)  # nobody asked for the body yet: the connection is paused, no deadline
    sink = Sink()
    done = fetched.producer.startProducing(sink)
    reactor.advance(59)
    protocol.dataReceived(b"y" * 10)  # progress moves the deadline
    reactor.advance(59)
    assert not done.called and sink.received == 20
    reactor.advance(1)
    error = failure_of(done)
    assert isinstance(error, FetchFailed) and "no data for 60 s (timed out)" in str(error)
    assert transport.disconnecting


def test_a_body_cut_short_fails() -> None:
    reactor = MemoryReactorClock()
    opened = opening(Fetcher(reactor, resolver=no_resolver), f"http://{PUBLIC}/x")
    protocol, _ = accept(reactor)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    done = fired(opened).producer.startProducing(Sink())
    protocol.connectionLost(Failure(ConnectionDone()))
    error = failure_of(done)
    assert isinstance(error, FetchFailed) and "cut short (Content-Length 100)" in str(error)


def test_a_consumer_stopping_the_body_drops_the_connection() -> None:
    reactor = MemoryReactorClock()
    opened = opening(Fetcher(reactor, resolver=no_resolver), f"http://{PUBLIC}/x")
    protocol, transport = accept(reactor)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    fetched = fired(opened)
    done = fetched.producer.startProducing(Sink())
    fetched.producer.stopProducing()
    assert transport.disconnecting
    reactor.advance(600)
    assert not done.called  # as IBodyProducer says: never, after stopProducing


def test_the_caller_can_give_up_while_resolving_connecting_or_waiting() -> None:
    reactor = MemoryReactorClock()
    resolving = opening(Fetcher(reactor, resolver=lambda h, p: Deferred()), "http://a.example/")
    resolving.cancel()
    assert isinstance(failure_of(resolving), CancelledError)

    connecting = opening(Fetcher(reactor, resolver=no_resolver), f"http://{PUBLIC}/x")
    connecting.cancel()
    assert isinstance(failure_of(connecting), CancelledError)
    assert reactor.connectors[-1].stoppedConnecting

    waiting = opening(Fetcher(reactor, resolver=no_resolver), f"http://{PUBLIC}/x")
    _, transport = accept(reactor)
    waiting.cancel()
    assert isinstance(failure_of(waiting), CancelledError) and transport.disconnecting


def test_a_redirect_to_a_private_address_is_refused_without_connecting() -> None:
    reactor = MemoryReactorClock()
    table = {"images.example.com": [PUBLIC], "internal.example.com": ["10.0.0.5"]}
    fetcher = Fetcher(reactor, resolver=resolver_of(table))
    opened = opening(fetcher, "http://images.example.com/x")
    protocol, transport = accept(reactor)
    protocol.dataReceived(
        b"HTTP/1.1 302 Found\r\nLocation: http://internal.example.com/secret\r\n"
        b"Content-Length: 5\r\n\r\nmoved"
    )
    error = failure_of(opened)
    assert isinstance(error, FetchRefused)
    assert str(error) == (
        "Refused to fetch http://images.example.com/x: a redirect leads to a host with an "
        "address that is not allowed."
    )
    assert len(reactor.tcpClients) == 1 and transport.disconnecting


# -- real servers on 127.0.0.1 -----------------------------------------------------------------


def within(d: Deferred[T], seconds: float = 30) -> Deferred[T]:
    """``d``, failing the test if it takes longer than ``seconds`` (a hang, not a wait)."""
    return d.addTimeout(seconds, reactor)


Route = Callable[[Request], Any]


class Server:
    """A twisted.web server of ``routes`` (path: handler) that notes each request and link."""

    def __init__(self, routes: dict[str, Route], scheme: str = "http") -> None:
        self.routes = routes
        self.scheme = scheme
        self.port = 0
        self.seen: list[tuple[str, str | None]] = []  # (path, Host header)
        self.connections: list[Any] = []

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


class _Routes(Resource):
    isLeaf = True

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server

    def render_GET(self, request: Request) -> Any:
        path = request.path.decode()
        host = request.getHeader("host")
        self.server.seen.append((path, host))
        route = self.server.routes.get(path)
        if route is None:
            request.setResponseCode(404)
            return b"no such file"
        return route(request)


class _Site(Site):
    def __init__(self, server: Server) -> None:
        super().__init__(_Routes(server))
        self.server = server

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.server.connections.append(protocol)
        return protocol


@asynccontextmanager
async def serving(routes: dict[str, Route], tls: Any = None) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 for the block (with ``tls``, CertificateOptions: https)."""
    server = Server(routes, "https" if tls is not None else "http")
    site = _Site(server)
    if tls is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
    server.port = port.getHost().port
    try:
        yield server
    finally:
        for connection in server.connections:
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abortConnection()
        await port.stopListening()


def body(data: bytes) -> Route:
    def answer(request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/octet-stream")
        return data

    return answer


def redirect(code: int, location: Callable[[], str] | str) -> Route:
    def answer(request: Request) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"location", location() if callable(location) else location)
        return b"this body is not the image"

    return answer


def host_header(request: Request) -> bytes:
    return (request.getHeader("host") or "").encode()


async def fetch_all(fetched: Fetched) -> bytes:
    sink = Sink()
    await within(fetched.producer.startProducing(sink))
    return bytes(sink.data)


async def open_uri(fetcher: Fetcher, uri: str) -> Fetched:
    return await within(opening(fetcher, uri))


async def refused_or_failed(fetcher: Fetcher, uri: str) -> BaseException:
    try:
        await open_uri(fetcher, uri)
    except (FetchRefused, FetchFailed) as e:
        return e
    raise AssertionError(f"{uri} was fetched")


PLAIN = bytes(range(256)) * 4096  # 1 MiB


@pytest_twisted.ensureDeferred
async def test_a_plain_body_is_streamed() -> None:
    async with serving({"/plain": body(PLAIN)}) as server:
        fetched = await open_uri(Fetcher(reactor, LOCAL), server.url("/plain"))
        assert fetched.length == len(PLAIN) and fetched.uri == server.url("/plain")
        assert await fetch_all(fetched) == PLAIN


@pytest_twisted.ensureDeferred
async def test_the_host_header_is_the_uris_host_while_the_checked_address_is_used() -> None:
    asked: list[tuple[str, int]] = []
    async with serving({"/host": host_header}) as server:
        resolver = resolver_of({"images.test": ["127.0.0.1"]}, asked)
        fetcher = Fetcher(reactor, LOCAL, resolver=resolver)
        fetched = await open_uri(fetcher, server.url("/host", host="images.test"))
        assert await fetch_all(fetched) == f"images.test:{server.port}".encode()
        assert asked == [("images.test", server.port)]


@pytest_twisted.ensureDeferred
async def test_the_default_resolver_runs_getaddrinfo_in_a_thread() -> None:
    rules = ImportFilter(
        allowed_ports=(), allowed_networks=(LOOPBACK, ipaddress.ip_network("::1/128"))
    )
    async with serving({"/plain": body(b"local")}) as server:
        # localhost may resolve to ::1 first: nothing listens there, the next address answers.
        fetched = await open_uri(Fetcher(reactor, rules), server.url("/plain", host="localhost"))
        assert await fetch_all(fetched) == b"local"


@pytest_twisted.ensureDeferred
async def test_the_default_rules_refuse_a_loopback_server_without_connecting() -> None:
    async with serving({"/plain": body(b"secret")}) as server:
        error = await refused_or_failed(Fetcher(reactor), server.url("/plain"))
        assert isinstance(error, FetchRefused)
        assert f"the port {server.port} is not allowed" in str(error)
        error = await refused_or_failed(
            Fetcher(reactor, ImportFilter(allowed_ports=())), server.url("/plain")
        )
        assert isinstance(error, FetchRefused)
        assert "the address 127.0.0.1 is not allowed (loopback)" in str(error)
        assert server.connections == [] and server.seen == []


@pytest_twisted.ensureDeferred
async def test_a_redirect_chain_is_followed() -> None:
    server: Server
    routes = {
        "/start": redirect(302, "/next?step=2"),  # relative to the URI it came from
        "/next": redirect(307, lambda: server.url("/plain")),
        "/plain": body(PLAIN),
    }
    async with serving(routes) as server:
        fetched = await open_uri(Fetcher(reactor, LOCAL), server.url("/start"))
        assert fetched.uri == server.url("/plain")
        assert await fetch_all(fetched) == PLAIN
        assert [path for path, _ in server.seen] == ["/start", "/next", "/plain"]


@pytest.mark.parametrize(("location", "kind"), [
    ("http://169.254.169.254/latest/meta-data/", "address"),
    ("http://[::1]:{port}/plain", "address"),
    ("http://forbidden.test:{port}/plain", "host"),
    ("http://ok.test:{port}/plain", "host with an address"),  # resolves to the metadata service
    ("ftp://127.0.0.1/plain", "scheme"),
    ("http://user:pw@127.0.0.1:{port}/plain", "URI with credentials"),
])
@pytest_twisted.ensureDeferred
async def test_a_redirect_to_a_refused_location_is_refused(location: str, kind: str) -> None:
    rules = ImportFilter(
        allowed_ports=(), allowed_networks=(LOOPBACK,), disallowed_hosts=("forbidden.test",)
    )
    table = {"forbidden.test": ["127.0.0.1"], "ok.test": ["169.254.169.254"]}
    server: Server
    routes = {
        "/start": redirect(302, lambda: location.format(port=server.port)),
        "/plain": body(b"not for you"),
    }
    async with serving(routes) as server:
        error = await refused_or_failed(
            Fetcher(reactor, rules, resolver=resolver_of(table)), server.url("/start")
        )
        assert isinstance(error, FetchRefused)
        assert str(error) == (
            f"Refused to fetch {server.url('/start')}: a redirect leads to a {kind} that is not "
            "allowed."
        )
        assert [path for path, _ in server.seen] == ["/start"]


@pytest_twisted.ensureDeferred
async def test_too_many_redirects_fail() -> None:
    async with serving({"/loop": redirect(301, "/loop")}) as server:
        rules = ImportFilter(allowed_ports=(), allowed_networks=(LOOPBACK,), max_redirects=3)
        error = await refused_or_failed(Fetcher(reactor, rules), server.url("/loop"))
        assert isinstance(error, FetchFailed)
        assert "too many redirects (more than 3)" in str(error)
        assert len(server.seen) == 4


@pytest_twisted.ensureDeferred
async def test_an_error_answer_fails() -> None:
    async with serving({}) as server:
        error = await refused_or_failed(Fetcher(reactor, LOCAL), server.url("/missing"))
        assert isinstance(error, FetchFailed)
        assert str(error) == (
            f"Fetching {server.url('/missing')} failed: the server answered 404 Not Found."
        )


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_fails() -> None:
    async with serving({}) as server:
        url = server.url("/x")
    error = await refused_or_failed(Fetcher(reactor, LOCAL), url)  # nobody listens any more
    assert isinstance(error, FetchFailed) and "the connection was refused" in str(error)


class _Liar(Protocol):
    """Promises 1000 bytes, sends 10 and hangs up."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_server_lying_about_its_content_length_fails_the_body() -> None:
    port = reactor.listenTCP(0, Factory.forProtocol(_Liar), interface="127.0.0.1")
    try:
        fetched = await open_uri(Fetcher(reactor, LOCAL), f"http://127.0.0.1:{port.getHost().port}/")
        assert fetched.length == 1000
        sink = Sink()
        with pytest.raises(FetchFailed, match="cut short"):
            await within(fetched.producer.startProducing(sink))
        assert sink.received == 10
    finally:
        await port.stopListening()


@implementer(IPushProducer)
class _Streamer:
    """Writes ``total`` bytes as fast as the connection takes them, noting how far it got."""

    BLOCK = bytes(range(256)) * 256  # 64 KiB

    def __init__(self, request: Request, total: int) -> None:
        self.request = request
        self.total = total
        self.sent = 0
        self.paused = False
        self.stopped = False
        request.setHeader(b"content-length", b"%d" % total)
        request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped and self.sent < self.total:
            self.request.write(self.BLOCK)
            self.sent += len(self.BLOCK)
        if self.sent >= self.total and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.stopped = True


@pytest_twisted.ensureDeferred
async def test_pausing_the_body_stops_the_server_writing() -> None:
    total = 32 * MiB
    streams: list[_Streamer] = []

    def stream(request: Request) -> Any:
        streams.append(_Streamer(request, total))
        return NOT_DONE_YET

    async with serving({"/big": stream, "/ping": body(b"pong")}) as server:
        fetcher = Fetcher(reactor, LOCAL)
        fetched = await open_uri(fetcher, server.url("/big"))
        assert fetched.length == total
        sink = Sink(keep=False)

        def pause_at_once(data: bytes) -> None:
            sink.on_write = None
            fetched.producer.pauseProducing()

        sink.on_write = pause_at_once
        done = fetched.producer.startProducing(sink)
        [streamer] = streams
        # Round trips to the same server until the stream stops moving: the client no longer
        # reads, the socket buffers are full, the server is held back.
        last = -1
        for _ in range(200):
            if streamer.paused and streamer.sent == last:
                break
            last = streamer.sent
            ping = await open_uri(fetcher, server.url("/ping"))
            assert await fetch_all(ping) == b"pong"
        else:
            raise AssertionError("the server never stopped writing")
        assert streamer.sent < total // 2
        held = sink.received
        assert held < total // 2
        for _ in range(3):  # still nothing while paused
            await fetch_all(await open_uri(fetcher, server.url("/ping")))
        assert sink.received == held and streamer.sent == last

        fetched.producer.resumeProducing()
        await within(done, 60)
        assert sink.received == total and streamer.sent == total
        expected = hashlib.sha256(_Streamer.BLOCK * (total // len(_Streamer.BLOCK)))
        assert sink.digest.digest() == expected.digest()


# -- TLS ---------------------------------------------------------------------------------------


def self_signed(name: str) -> tuple[bytes, bytes]:
    """A certificate for ``name`` (and its key), PEM: the only root the tests trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@implementer(IOpenSSLContextFactory)
class _ServerTLS:
    """The server's side of TLS: one context, with ``images.test``'s certificate and key."""

    def __init__(self, certificate: bytes, key: bytes) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.use_certificate(x509.load_pem_x509_certificate(certificate))
        self.context.use_privatekey(serialization.load_pem_private_key(key, None))

    def getContext(self) -> SSL.Context:
        return self.context


@pytest.fixture(scope="module")
def tls_server() -> tuple[_ServerTLS, bytes]:
    """Server TLS for ``images.test``, and the certificate to trust."""
    certificate, key = self_signed("images.test")
    return _ServerTLS(certificate, key), certificate


@pytest_twisted.ensureDeferred
async def test_https_verifies_the_uris_host_name_at_the_checked_address(
    tls_server: tuple[_ServerTLS, bytes],
) -> None:
    options, certificate = tls_server
    names: list[bytes | None] = []
    options.context.set_tlsext_servername_callback(
        lambda connection: names.append(connection.get_servername())
    )
    trusted = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(certificate))
    table = {"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
    async with serving({"/host": host_header}, tls=options) as server:
        fetcher = Fetcher(reactor, LOCAL, resolver=resolver_of(table), tls_policy=trusted)
        fetched = await open_uri(fetcher, server.url("/host", host="images.test"))
        assert await fetch_all(fetched) == f"images.test:{server.port}".encode()
        assert names == [b"images.test"]  # SNI: the host name, not the address

        # The same server under another name: its certificate is not for that name.
        error = await refused_or_failed(fetcher, server.url("/host", host="other.test"))
        assert isinstance(error, FetchFailed) and "TLS handshake failed" in str(error)

        # The platform's roots do not include the test's.
        untrusted = Fetcher(reactor, LOCAL, resolver=resolver_of(table))
        error = await refused_or_failed(untrusted, server.url("/host", host="images.test"))
        assert isinstance(error, FetchFailed) and "TLS handshake failed" in str(error)
        assert [path for path, _ in server.seen] == ["/host"]
