"""
Who a request acts as: the authentication strategies of the HTTP layer.

Each strategy turns a request's headers into a ``RequestContext``; the service decides what
that context may do.  Two exist now:

- ``HeaderIdentity`` trusts the identity headers keystonemiddleware sets (``X-Project-Id`` /
  ``X-Tenant-Id``, ``X-User-Id``, ``X-Roles``); with none of them the request is Glance's
  no-auth administrator without a project.  For use behind keystonemiddleware or on loopback.
- ``TrustedHeaders`` is the same behind keystonemiddleware with ``delay_auth_decision``: the
  headers count only with ``X-Identity-Status: Confirmed``, anything else is 401.
- ``NoAuth`` is Glance's development flavour for token-only clients without Keystone: every
  request is an admin of a default project, and ``X-Project-Id``/``X-Tenant-Id`` still choose
  the project when sent.

- ``KeystoneTokens`` (``imaged.web.keystone``) validates ``X-Auth-Token`` against Keystone
  itself.

The first three believe whoever sends the headers, so they are only as safe as the network
in front of them: ``FromNetworks`` serves them only to the addresses an operator trusts
(``--trusted-networks``, loopback by default) and answers anyone else 401.  Reaching such a
mode from the network is therefore always an explicit choice.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from ..context import RequestContext
from ..errors import Unauthorized
from .wire import header


def _project(request: IRequest) -> str | None:
    return (
        header(request, b"x-project-id")
        or header(request, b"x-tenant-id")
        or header(request, b"x-tenant")
    )


def _keystone_identity(request: IRequest) -> RequestContext | None:
    """The identity in keystonemiddleware's headers, or ``None`` if there is none at all."""
    project = _project(request)
    user = header(request, b"x-user-id") or header(request, b"x-user")
    roles = header(request, b"x-roles") or header(request, b"x-role")
    if project is None and user is None and roles is None:
        return None
    return RequestContext.from_roles(
        project,
        user,
        frozenset((roles or "").split(",")),
        header(request, b"x-openstack-request-id"),
        header(request, b"x-auth-token"),
        _catalog(header(request, b"x-service-catalog")),
    )


def _catalog(value: str | None) -> tuple[Any, ...]:
    """keystonemiddleware's ``X-Service-Catalog`` (the token's catalog, JSON), if readable."""
    if not value:
        return ()
    try:
        catalog = json.loads(value)
    except ValueError:
        return ()
    return tuple(catalog) if isinstance(catalog, list) else ()


class Authenticator(Protocol):
    """Who a request acts as; may ask someone else first (the keystone strategy)."""

    def context(self, request: IRequest) -> RequestContext | Deferred[RequestContext]: ...

    def describe(self) -> str:
        """What this strategy trusts, in words for the start-up log."""
        ...

    def health(self) -> str | None:
        """Why requests cannot be authenticated now (for ``/healthcheck``), or ``None``."""
        ...


@attrs.frozen
class HeaderIdentity:
    """Trust keystonemiddleware's headers; no headers at all is Glance's no-auth admin."""

    def context(self, request: IRequest) -> RequestContext:
        identity = _keystone_identity(request)
        if identity is None:
            return RequestContext.unauthenticated(header(request, b"x-openstack-request-id"))
        return identity

    def describe(self) -> str:
        return (
            "'headers': believes X-Project-Id, X-User-Id and X-Roles as sent; a request "
            "without them acts as an administrator"
        )

    def health(self) -> str | None:
        return None


@attrs.frozen
class TrustedHeaders:
    """keystonemiddleware's verdict decides: ``Confirmed`` or 401."""

    def context(self, request: IRequest) -> RequestContext:
        status = (header(request, b"x-identity-status") or "").strip().lower()
        identity = _keystone_identity(request)
        if status != "confirmed" or identity is None:
            raise Unauthorized("The request you have made requires authentication.")
        return identity

    def describe(self) -> str:
        return (
            "'trusted-headers': believes X-Project-Id, X-User-Id and X-Roles when sent with "
            "X-Identity-Status: Confirmed (keystonemiddleware's verdict), else 401"
        )

    def health(self) -> str | None:
        return None


@attrs.frozen
class NoAuth:
    """Every request is an admin of ``default_project`` (or of the project it names)."""

    default_project: str = "admin"

    def context(self, request: IRequest) -> RequestContext:
        return RequestContext.from_roles(
            _project(request) or self.default_project,
            header(request, b"x-user-id"),
            frozenset({"admin", "member", "reader"}),
            header(request, b"x-openstack-request-id"),
        )

    def describe(self) -> str:
        return (
            f"'none': every request is an administrator of project '{self.default_project}' "
            "(or of the project X-Project-Id names)"
        )

    def health(self) -> str | None:
        return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: ``--trusted-networks``' default: this host only.
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def parse_networks(text: str) -> tuple[Network, ...] | None:
    """``--trusted-networks``: comma-separated networks (or addresses), ``None`` for 'any'."""
    if text.strip().lower() == "any":
        return None
    networks = []
    for part in text.split(","):
        if part.strip():
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
    if not networks:
        raise ValueError("no network given (name one, or 'any')")
    return tuple(networks)


@attrs.frozen
class FromNetworks:
    """
    ``inner`` (a strategy that believes headers) for peers in ``networks`` only; anyone else
    is 401, whatever headers it sends.

    The peer is the TCP connection's address, never ``X-Forwarded-For`` (which the client
    writes): behind a proxy, trust the proxy's address.  A UNIX socket's peer is on this host
    and is trusted like loopback.
    """

    inner: Authenticator
    networks: Sequence[Network] = LOOPBACK

    def context(self, request: IRequest) -> RequestContext | Deferred[RequestContext]:
        if not self.trusts(request.getClientAddress()):
            raise Unauthorized(
                "The request you have made requires authentication: this service serves "
                "identity headers from its trusted networks only (use Keystone tokens)."
            )
        return self.inner.context(request)

    def trusts(self, peer: object) -> bool:
        if not isinstance(peer, (IPv4Address, IPv6Address)):
            return True  # a UNIX socket: this host
        try:
            address = ipaddress.ip_address(peer.host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def describe(self) -> str:
        where = ", ".join(str(network) for network in self.networks)
        return f"{self.inner.describe()}; served to {where} only, others get 401"

    def health(self) -> str | None:
        return self.inner.health()


#: The ``--auth`` choices that need no configuration of their own (``none`` takes its default
#: project from configuration, ``keystone`` is ``imaged.web.keystone.KeystoneTokens``).
STRATEGIES: dict[str, Callable[[], Authenticator]] = {
    "headers": HeaderIdentity,
    "trusted-headers": TrustedHeaders,
    "none": NoAuth,
}

#: Every ``--auth`` choice.
STRATEGY_NAMES = (*STRATEGIES, "keystone")
