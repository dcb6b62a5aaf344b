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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
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
    )


class Authenticator(Protocol):
    """Who a request acts as; may ask someone else first (the keystone strategy)."""

    def context(self, request: IRequest) -> RequestContext | Deferred[RequestContext]: ...


@attrs.frozen
class HeaderIdentity:
    """Trust keystonemiddleware's headers; no headers at all is Glance's no-auth admin."""

    def context(self, request: IRequest) -> RequestContext:
        identity = _keystone_identity(request)
        if identity is None:
            return RequestContext.unauthenticated(header(request, b"x-openstack-request-id"))
        return identity


@attrs.frozen
class TrustedHeaders:
    """keystonemiddleware's verdict decides: ``Confirmed`` or 401."""

    def context(self, request: IRequest) -> RequestContext:
        status = (header(request, b"x-identity-status") or "").strip().lower()
        identity = _keystone_identity(request)
        if status != "confirmed" or identity is None:
            raise Unauthorized("The request you have made requires authentication.")
        return identity


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


#: The ``--auth`` choices that need no configuration of their own (``none`` takes its default
#: project from configuration, ``keystone`` is ``imaged.web.keystone.KeystoneTokens``).
STRATEGIES: dict[str, Callable[[], Authenticator]] = {
    "headers": HeaderIdentity,
    "trusted-headers": TrustedHeaders,
    "none": NoAuth,
}

#: Every ``--auth`` choice.
STRATEGY_NAMES = (*STRATEGIES, "keystone")
