"""
Who is asking: the identity the service's rules are evaluated against.

The web layer builds a ``RequestContext`` from whatever authenticated the request; the service
never looks at headers.
"""

from __future__ import annotations

from typing import Any

import attrs

#: Glance's implied roles: admin implies member implies reader.
_IMPLIED_ROLES = {"admin": ("member", "reader"), "member": ("reader",)}


def _expand(roles: frozenset[str]) -> frozenset[str]:
    out = set(roles)
    for role in roles:
        out.update(_IMPLIED_ROLES.get(role, ()))
    return frozenset(out)


@attrs.frozen
class RequestContext:
    """
    The caller: project, user, roles (lower-cased, implied roles expanded) and admin-ness.

    ``is_admin`` is separate from the roles because Glance's unauthenticated context is an
    admin with no project and no roles.
    """

    project_id: str | None = None
    user_id: str | None = None
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_expand)
    is_admin: bool = False
    request_id: str | None = None
    #: The caller's token and Keystone service catalog, when it came with them: what a
    #: ``glance-download`` import uses to reach another region's image service as the caller.
    auth_token: str | None = attrs.field(default=None, repr=False)
    service_catalog: tuple[Any, ...] = ()

    @classmethod
    def from_roles(
        cls,
        project_id: str | None,
        user_id: str | None,
        roles: frozenset[str],
        request_id: str | None = None,
        auth_token: str | None = None,
        service_catalog: tuple[Any, ...] = (),
    ) -> RequestContext:
        """A context whose admin-ness follows from the ``admin`` role, as Glance's policy."""
        lowered = frozenset(r.strip().lower() for r in roles if r.strip())
        return cls(
            project_id=project_id,
            user_id=user_id,
            roles=lowered,
            is_admin="admin" in lowered,
            request_id=request_id,
            auth_token=auth_token,
            service_catalog=service_catalog,
        )

    @classmethod
    def unauthenticated(cls, request_id: str | None = None) -> RequestContext:
        """Glance's no-auth context: no project, no user, admin."""
        return cls(is_admin=True, request_id=request_id)
