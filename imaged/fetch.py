"""
The SSRF-safe HTTP(S) fetcher behind the ``web-download`` import: a user's URI, streamed.

Why: ``web-download`` makes the service fetch whatever URI a user names, from inside the
cloud's network.  Glance checks that URI's scheme, host and port against its
``import_filtering_opts`` and nothing more, so a user can still have it fetch from the metadata
service (``169.254.169.254``), a loopback admin port or a private subnet: by naming the
address, by a hostname that resolves there, by a name that resolves somewhere harmless when
checked and elsewhere when connected to (DNS rebinding), or by a redirect.

So ``ImportFilter`` applies Glance's filters (``check_uri``, at import-request time) and
``Fetcher`` then resolves the host itself, refuses it if *any* of its addresses lies in a
refused range (loopback, private, link-local, carrier-grade NAT, multicast, reserved, and
those written inside IPv6) unless the operator lists it in ``allowed_networks``, and connects
to exactly the address it checked; TLS still verifies the certificate against the original
hostname.  Redirects are followed by hand, every hop checked again.  The body is never held in
memory: ``Fetched.producer`` streams it with back-pressure onto the connection, and a server
that goes quiet (``idle_timeout``) is cut off.  Every wait is timed by the given reactor, so
tests move time with a ``Clock``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import attrs
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from .errors import BadRequest
from .logcontext import Logger
from .store.http import ResponseProducer, header

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

log = Logger()

#: The schemes this fetcher speaks, and the port each implies when a URI names none.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Answers followed to their ``Location`` (each hop is a GET, whatever the code).
REDIRECTS = frozenset({301, 302, 303, 307, 308})

_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # "this host on this network": unspecified
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: an IPv4 address in the low 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a network's own translator

#: Characters refused anywhere in a URI: whitespace, controls, and the backslash that
#: parsers disagree on (``http://a\\@b/``).
_BAD_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
#: Hosts that ``inet_aton`` (and so ``getaddrinfo``) reads as IPv4: ``127.1``, ``0x7f.0.0.1``,
#: ``2130706433``, ``0177.0.0.1``.  No domain name looks like this (no TLD is numeric).
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")
#: What stays unescaped in a path or query we pass on (everything RFC 3986 allows there).
_SAFE = "/%:@!$&'()*+,;=-._~"


# -- the rules ---------------------------------------------------------------------------------


def _refused_range(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> str | None:
    """
    The name of the refused range ``address`` lies in, or ``None`` when it may be fetched
    from.  An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is judged by that
    IPv4 address too, and ``allowed`` (exceptions) covers either form.
    """
    if any(address.version == net.version and address in net for net in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket
            return _refused_range(address.ipv4_mapped, allowed)
        if address in _NAT64:
            return _refused_range(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), allowed)
        if address.sixtofour is not None:
            refused = _refused_range(address.sixtofour, allowed)
            if refused is not None:
                return refused
        if address in _NAT64_LOCAL:
            return "reserved"
        if address.is_site_local:
            return "site-local"
    elif address in _THIS_NETWORK:
        return "unspecified"
    elif address in _SHARED:
        return "shared (carrier-grade NAT)"
    elif address == _BROADCAST:
        return "broadcast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    return None


class _Refused(Exception):
    """
    A URI breaks a rule.  ``reason`` says which, in terms of the URI itself; ``kind`` names
    only the part at fault, for when the URI is a redirect's and must not be shown.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@attrs.frozen
class _Target:
    """A URI that passed the static rules, in the form it is requested in."""

    uri: str  # ASCII; no credentials, no fragment; the host as checked
    scheme: str
    host: str  # ASCII, lower case, no brackets, no trailing dot
    port: int  # the URI's, or its scheme's
    host_header: str  # host[:port], the port only when it is not the scheme's
    address: IPAddress | None  # the host, when the URI names an IP address


def _parse_host(raw: str) -> tuple[str, IPAddress | None]:
    """A URI's host, normalised: (``host``, its address when it is an IP literal)."""
    host = raw[:-1] if raw.endswith(".") else raw
    if ":" in host:  # urlsplit allows a colon in the host only inside brackets: IPv6
        if "%" in host:
            raise _Refused("host", "an IPv6 zone is not allowed in the host")
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise _Refused("host", "its host is not a valid IPv6 address") from None
        return v6.compressed, v6
    try:
        v4 = ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return str(v4), v4
    if _LEGACY_IPV4.match(host):
        try:
            v4 = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise _Refused("host", "its host is not a valid IPv4 address") from None
        return str(v4), v4
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _Refused("host", "its host is not a valid host name") from None
    if not all(_LABEL.match(label) for label in name.split(".")):
        raise _Refused("host", "its host is not a valid host name")
    return name, None


def _host_entry(entry: str) -> str:
    """An ``allowed_hosts``/``disallowed_hosts`` entry in the form hosts are compared in."""
    entry = entry.strip().lower().strip("[]")
    try:
        return _parse_host(entry)[0]
    except _Refused:
        return entry


def _shown(uri: str) -> str:
    """``uri`` as messages and logs show it: without credentials, at most 255 characters."""
    shown = uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        pass
    else:
        if "@" in parts.netloc:
            netloc = parts.netloc.rpartition("@")[2]
            shown = parts._replace(netloc=netloc).geturl()
    shown = _BAD_CHARACTERS.sub(lambda m: f"%{ord(m.group()):02X}", shown)
    return shown if len(shown) <= 255 else shown[:254] + "\N{HORIZONTAL ELLIPSIS}"


@attrs.frozen
class ImportFilter:
    """
    Glance's import_filtering_opts plus address checks Glance lacks.

    Schemes, hosts and ports as Glance has them: a non-empty ``allowed_*`` list is the only
    thing allowed (its ``disallowed_*`` counterpart is then ignored); otherwise whatever the
    ``disallowed_*`` list names is refused.  A URI without a port is checked with its scheme's
    (80, 443).  Beyond Glance: credentials in a URI are refused (they would end up in logs),
    only http and https are fetched, and no address in a refused range is ever connected to
    (see ``_refused_range``) unless it lies in one of ``allowed_networks``: the URI's own
    literal address here, every address its host resolves to in ``Fetcher``.
    """

    allowed_schemes: tuple[str, ...] = ("http", "https")
    disallowed_schemes: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # empty: any host (not otherwise refused)
    disallowed_hosts: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = (80, 443)  # empty: any port
    disallowed_ports: tuple[int, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()  # exceptions to the refused ranges
    max_redirects: int = 5
    connect_timeout: float = 30.0
    idle_timeout: float = 60.0  # seconds without a body byte (or without the answer's headers)

    def check_uri(self, uri: str) -> None:
        """
        Static checks at import-request time (scheme, host, port, userinfo, literal IP in a
        refused range); raises imaged.errors.BadRequest with a clear message (the API answers
        400).  What a host name resolves to is checked when it is fetched.
        """
        try:
            self._target(uri)
        except _Refused as refused:
            raise BadRequest(
                f"URI for web-download does not pass filtering: {_shown(uri)} "
                f"({refused.reason})."
            ) from None

    def _target(self, uri: str) -> _Target:
        """``uri`` checked against the static rules, or ``_Refused``."""
        if not uri or _BAD_CHARACTERS.search(uri):
            raise _Refused("URI", "it is not a valid URI")
        try:
            parts = urlsplit(uri)
            given_port = parts.port
        except ValueError:
            raise _Refused("URI", "it is not a valid URI (or its port is not a port)") from None
        scheme = parts.scheme
        if not scheme:
            raise _Refused("scheme", "it has no scheme")
        allowed = {s.lower() for s in self.allowed_schemes}
        if (allowed and scheme not in allowed) or (
            not allowed and scheme in {s.lower() for s in self.disallowed_schemes}
        ):
            raise _Refused("scheme", f"the scheme {scheme!r} is not allowed")
        if scheme not in DEFAULT_PORTS:
            raise _Refused("scheme", f"the scheme {scheme!r} is not supported")
        if "@" in parts.netloc:
            raise _Refused("URI with credentials", "credentials (user:password@) are not allowed")
        if not parts.hostname:
            raise _Refused("host", "it has no host")
        host, address = _parse_host(parts.hostname)
        allowed_hosts = {_host_entry(h) for h in self.allowed_hosts}
        if (allowed_hosts and host not in allowed_hosts) or (
            not allowed_hosts and host in {_host_entry(h) for h in self.disallowed_hosts}
        ):
            raise _Refused("host", f"the host {host!r} is not allowed")
        if given_port == 0:
            raise _Refused("port", "port 0 is not a port")
        port = DEFAULT_PORTS[scheme] if given_port is None else given_port
        if (self.allowed_ports and port not in self.allowed_ports) or (
            not self.allowed_ports and port in self.disallowed_ports
        ):
            raise _Refused("port", f"the port {port} is not allowed")
        if address is not None:
            refused = _refused_range(address, self.allowed_networks)
            if refused is not None:
                raise _Refused("address", f"the address {address} is not allowed ({refused})")
        netloc = f"[{host}]" if isinstance(address, ipaddress.IPv6Address) else host
        host_header = netloc if port == DEFAULT_PORTS[scheme] else f"{netloc}:{port}"
        if given_port is not None:
            netloc = f"{netloc}:{port}"
        request_uri = f"{scheme}://{netloc}{quote(parts.path, safe=_SAFE) or '/'}"
        if parts.query:
            request_uri += "?" + quote(parts.query, safe=_SAFE + "?")
        return _Target(request_uri, scheme, host, port, host_header, address)


# -- outcomes ----------------------------------------------------------------------------------


class FetchRefused(Exception):
    """
    The URI, or an address or redirect it leads to, is not allowed.  The message says why but
    names nothing beyond the URI given (not where a redirect pointed, nor what a name
    resolved to: the service must not become a way to look inside its own network).
    """


class FetchFailed(Exception):
    """
    The fetch did not succeed: a network error, an answer >= 400, a timeout, too many
    redirects, a body shorter than its Content-Length.
    """


@attrs.frozen
class Fetched:
    """
    A successful answer, its body not yet read.  Its connection stays open (paused) until the
    producer has finished or been stopped: whoever drops it unread must ``stopProducing()``.
    """

    #: The body: length is the Content-Length or UNKNOWN_LENGTH; streams with back-pressure
    #: (pausing it pauses the TCP connection); its Deferred fails with ``FetchFailed``.
    producer: IBodyProducer
    length: int | None
    #: The URI that answered, after redirects.
    uri: str


# -- connections -------------------------------------------------------------------------------


class _Connection:
    """
    The one connection a request makes (requests share none): the headers' deadline starts
    when it is made, and a deadline or a discarded answer aborts it.
    """

    def __init__(self, made: Callable[[], None] = lambda: None) -> None:
        self._on_made = made
        self.protocol: IProtocol | None = None

    def made(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        self._on_made()

    def abort(self) -> None:
        transport = getattr(self.protocol, "transport", None)
        if transport is None:
            return
        try:
            transport.abortConnection()
        except Exception as e:  # tearing down a connection that is already going: no matter
            log.debug("aborting a web-download connection: {error}", error=e)


@implementer(IStreamClientEndpoint)
class _PinnedEndpoint:
    """
    Connects to the checked addresses, in order, until one answers; never resolves anything.
    For https, TLS on top, verified against the URI's own host name (and sent as SNI).
    """

    def __init__(
        self,
        reactor: Any,
        target: _Target,
        addresses: list[IPAddress],
        timeout: float,
        tls_policy: Any,
        connection: _Connection,
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._addresses = addresses
        self._timeout = timeout
        self._tls_policy = tls_policy
        self._connection = connection

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        target = self._target
        failure: Exception = ConnectError("no address to connect to")
        for address in self._addresses:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            endpoint: IStreamClientEndpoint
            if isinstance(address, ipaddress.IPv4Address):
                endpoint = TCP4ClientEndpoint(
                    self._reactor, str(address), target.port, timeout=self._timeout
                )
            else:
                endpoint = TCP6ClientEndpoint(
                    self._reactor, str(address), target.port, timeout=self._timeout
                )
            if target.scheme == "https":
                creator = self._tls_policy.creatorForNetloc(target.host.encode(), target.port)
                endpoint = wrapClientTLS(creator, endpoint)
            try:
                protocol: IProtocol = await endpoint.connect(factory)
            except ConnectError as e:
                failure = e
                continue
            self._connection.made(protocol)
            return protocol
        raise failure


@implementer(IAgentEndpointFactory)
class _PinnedEndpoints:
    """The ``Agent``'s way to its one server: a ``_PinnedEndpoint``, whatever it parsed."""

    def __init__(self, endpoint: _PinnedEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return self._endpoint


class _Discard(Protocol):
    """Takes a body nobody wants (a redirect's, an error's) while its connection is aborted."""

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        pass


def _discard(response: IResponse, connection: _Connection) -> None:
    response.deliverBody(_Discard())
    connection.abort()


def _is_tls_failure(error: BaseException | None) -> bool:
    return isinstance(error, SSL.Error | VerificationError)


def _cancelled(error: BaseException) -> bool:
    """Whether ``error`` is a cancellation (the caller's), however the ``Agent`` wrapped it."""
    if isinstance(error, CancelledError | ConnectingCancelledError):
        return True
    reasons: list[Failure] = getattr(error, "reasons", None) or []
    return any(isinstance(reason.value, CancelledError) for reason in reasons)


def _describe(error: BaseException) -> str:
    """What went wrong with a request, without addresses or other internals."""
    if isinstance(error, ResponseNeverReceived | ResponseFailed):
        reasons: list[Failure] = list(error.reasons)
        if any(_is_tls_failure(reason.value) for reason in reasons):
            return (
                "the TLS handshake failed (the server's certificate is not trusted or not "
                "valid for its host)"
            )
        if isinstance(error, ResponseNeverReceived):
            return "the connection closed before any answer"
        return "the connection closed before the whole answer"
    if isinstance(error, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(error, TimeoutError):
        return "connecting timed out"
    if isinstance(error, ConnectError):
        return "could not connect"
    return f"the request failed ({type(error).__name__})"


# -- the body ----------------------------------------------------------------------------------


@implementer(IConsumer)
class _Tap:
    """The consumer ``ResponseProducer`` writes into: every chunk restarts the idle deadline."""

    def __init__(self, received: Callable[[bytes], None]) -> None:
        self._received = received

    def write(self, data: bytes) -> None:
        self._received(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


@implementer(IBodyProducer, IPushProducer)
class _Download:
    """
    A fetched body: ``ResponseProducer`` (back-pressure onto the connection) with a deadline
    between chunks while the consumer wants data (none while it has us paused), and failures
    as ``FetchFailed``.
    """

    def __init__(
        self,
        response: IResponse,
        clock: Any,
        idle_timeout: float,
        connection: _Connection,
        shown: str,
    ) -> None:
        self.length = response.length
        self._inner = ResponseProducer(response, response.length)
        self._clock = clock
        self._idle = idle_timeout
        self._connection = connection
        self._shown = shown
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] = Deferred()
        self._timer: IDelayedCall | None = None
        self._paused = False
        self._started = False
        self._ended = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._started = True
        self._arm()
        inner = self._inner.startProducing(_Tap(self._received))
        inner.addCallbacks(self._inner_done, self._inner_failed)
        return self._done

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm()
        self._inner.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._arm()
        self._inner.resumeProducing()  # may deliver what was held, even the end

    def stopProducing(self) -> None:
        """The consumer gave up: drop the connection (the Deferred never fires, as
        ``IBodyProducer`` says)."""
        if self._ended:
            return
        self._ended = True
        self._disarm()
        self._inner.stopProducing()
        self._connection.abort()

    def _received(self, data: bytes) -> None:
        if self._ended or self._consumer is None:
            return
        self._arm()
        self._consumer.write(data)

    def _arm(self) -> None:
        if self._ended or self._paused or not self._started:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle)
        else:
            self._timer = self._clock.callLater(self._idle, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._ended:
            return
        why = f"no data for {self._idle:g} s (timed out)"
        log.warn("web-download of {uri} failed: {why}", uri=self._shown, why=why)
        self._end(Failure(FetchFailed(f"Fetching {self._shown} failed: {why}.")))
        self._connection.abort()

    def _inner_done(self, _: object) -> None:
        self._end(None)

    def _inner_failed(self, failure: Failure) -> None:
        if self._ended:
            return  # our own abort (a deadline, stopProducing) reported back
        why = "the body was cut short"
        if self.length is not UNKNOWN_LENGTH:
            why += f" (Content-Length {self.length})"
        log.warn(
            "web-download of {uri} failed: {why}: {error}", uri=self._shown, why=why,
            error=failure.value,
        )
        self._end(Failure(FetchFailed(f"Fetching {self._shown} failed: {why}.")))

    def _end(self, outcome: Failure | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._disarm()
        if outcome is None:
            self._done.callback(None)
        else:
            self._done.errback(outcome)


# -- the fetcher -------------------------------------------------------------------------------


def _getaddrinfo(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (blocking: run in a thread)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found if info[0] in (socket.AF_INET, socket.AF_INET6)]


class Fetcher:
    """
    Fetches a ``web-download`` URI under ``rules`` (see the module's docstring).

    ``resolver(host, port)`` gives a host's addresses (default: ``getaddrinfo`` in the
    reactor's thread pool); ``tls_policy`` is an ``IPolicyForHTTPS`` (default
    ``BrowserLikePolicyForHTTPS()``: the platform's trust roots), asked for the URI's own host
    name, so ``BrowserLikePolicyForHTTPS(trustRoot=...)`` trusts a private CA.  Each request
    has a connection of its own, closed when its body has been read.
    """

    def __init__(
        self,
        reactor: Any,
        rules: ImportFilter = ImportFilter(),
        *,
        resolver: Callable[[str, int], Deferred[list[str]]] | None = None,
        tls_policy: Any = None,
    ) -> None:
        self.reactor = reactor
        self.rules = rules
        self._resolve = resolver if resolver is not None else self._resolve_in_thread
        self._tls_policy = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()

    def _resolve_in_thread(self, host: str, port: int) -> Deferred[list[str]]:
        pool = self.reactor.getThreadPool()
        found: Deferred[list[str]] = deferToThreadPool(
            self.reactor, pool, _getaddrinfo, host, port
        )
        return found

    async def open(self, uri: str, headers: Mapping[bytes, bytes] | None = None) -> Fetched:
        """
        Follow ``uri`` (and its redirects) to an answer 2xx whose body is yet to be read;
        ``FetchRefused`` before connecting anywhere not allowed, ``FetchFailed`` otherwise.
        ``headers`` go with the request (a token, for ``glance-download``), and with a
        redirect only to the same host: a credential never travels elsewhere.
        """
        shown = _shown(uri)
        try:
            target = self.rules._target(uri)
        except _Refused as refused:
            raise self._refused(shown, refused.reason, refused.reason) from None
        log.info("web-download of {uri} started", uri=shown)
        redirects = 0
        origin = (target.scheme, target.host, target.port)
        while True:
            addresses = await self._addresses(target, shown, redirects > 0)
            extra = (
                headers if headers and (target.scheme, target.host, target.port) == origin
                else None
            )
            response, connection = await self._request(target, addresses, shown, extra)
            if response.code in REDIRECTS:
                location = header(response, b"location")
                _discard(response, connection)
                if not location:
                    raise self._failed(shown, f"a redirect ({response.code}) has no Location")
                if redirects >= self.rules.max_redirects:
                    raise self._failed(
                        shown, f"too many redirects (more than {self.rules.max_redirects})"
                    )
                redirects += 1
                following = urljoin(target.uri, location)
                try:
                    target = self.rules._target(following)
                except _Refused as refused:
                    raise self._refused(
                        shown,
                        f"a redirect leads to a {refused.kind} that is not allowed",
                        f"redirect to {_shown(following)}: {refused.reason}",
                    ) from None
                log.debug(
                    "web-download of {uri}: redirect {n} to {location}", uri=shown,
                    n=redirects, location=_shown(target.uri),
                )
                continue
            if not 200 <= response.code < 300:
                _discard(response, connection)
                phrase = response.phrase.decode("latin-1", "replace")
                raise self._failed(shown, f"the server answered {response.code} {phrase}".strip())
            length = None if response.length is UNKNOWN_LENGTH else int(response.length)
            producer = _Download(
                response, self.reactor, self.rules.idle_timeout, connection, shown
            )
            return Fetched(producer=producer, length=length, uri=target.uri)

    async def _addresses(
        self, target: _Target, shown: str, redirected: bool
    ) -> list[IPAddress]:
        """The addresses to connect to, each checked; the URI's own when it names one."""
        if target.address is not None:
            return [target.address]  # checked with the URI
        of = "the host of a redirect" if redirected else "the host"
        lookup = self._resolve(target.host, target.port)
        timer = self.reactor.callLater(self.rules.connect_timeout, lookup.cancel)
        try:
            found = await lookup
        except Exception as e:
            timed_out = not timer.active()
            if isinstance(e, CancelledError) and not timed_out:
                raise  # the caller gave up
            why = f"resolving {of} timed out" if timed_out else f"could not resolve {of}"
            raise self._failed(shown, why, host=target.host, error=repr(e)) from None
        finally:
            if timer.active():
                timer.cancel()
        addresses: list[IPAddress] = []
        for name in found:
            try:
                address = ipaddress.ip_address(name.partition("%")[0])
            except ValueError:
                raise self._failed(shown, f"could not resolve {of}", bad=name) from None
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise self._failed(shown, f"could not resolve {of}", host=target.host)
        for address in addresses:
            refused = _refused_range(address, self.rules.allowed_networks)
            if refused is not None:
                why = (
                    "a redirect leads to a host with an address that is not allowed"
                    if redirected
                    else "its host resolves to an address that is not allowed"
                )
                detail = f"{target.host} resolves to {address} ({refused})"
                raise self._refused(shown, why, detail)
        return addresses

    async def _request(
        self,
        target: _Target,
        addresses: list[IPAddress],
        shown: str,
        extra: Mapping[bytes, bytes] | None = None,
    ) -> tuple[IResponse, _Connection]:
        """GET ``target`` from one of ``addresses``: its answer's headers, and its connection."""
        timer: IDelayedCall | None = None
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            answer.cancel()
            connection.abort()

        def made() -> None:
            nonlocal timer
            timer = self.reactor.callLater(self.rules.idle_timeout, expire)

        connection = _Connection(made)
        endpoint = _PinnedEndpoint(
            self.reactor, target, addresses, self.rules.connect_timeout, self._tls_policy,
            connection,
        )
        agent = Agent.usingEndpointFactory(self.reactor, _PinnedEndpoints(endpoint))
        headers = Headers({
            b"Host": [target.host_header.encode()],
            b"User-Agent": [b"imaged web-download"],
            b"Accept": [b"*/*"],
        })
        for name, value in (extra or {}).items():
            headers.setRawHeaders(name, [value])
        answer: Deferred[IResponse] = agent.request(b"GET", target.uri.encode(), headers)
        try:
            response: IResponse = await answer
        except Exception as e:
            if _cancelled(e) and not timed_out:
                raise CancelledError() from None  # the caller gave up, however Twisted put it
            why = (
                f"no answer in {self.rules.idle_timeout:g} s (timed out)"
                if timed_out
                else _describe(e)
            )
            raise self._failed(shown, why, host=target.host, error=repr(e)) from None
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        return response, connection

    @staticmethod
    def _refused(shown: str, why: str, detail: str) -> FetchRefused:
        log.warn("web-download of {uri} refused: {detail}", uri=shown, detail=detail)
        return FetchRefused(f"Refused to fetch {shown}: {why}.")

    @staticmethod
    def _failed(shown: str, why: str, **details: object) -> FetchFailed:
        log.warn("web-download of {uri} failed: {why}", uri=shown, why=why, **details)
        return FetchFailed(f"Fetching {shown} failed: {why}.")


__all__ = ["DEFAULT_PORTS", "REDIRECTS", "FetchFailed", "FetchRefused", "Fetched", "Fetcher",
           "ImportFilter"]
