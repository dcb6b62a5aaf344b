"""
Who may see and change which image (and which metadata definition): Glance's default rules,
in one place.

The service asks these questions; it never compares owners or roles itself.  Glance's
convention is kept everywhere: an image the caller may not see is *not found* (404), an image
the caller may see but not change is *forbidden* (403).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs

from .context import RequestContext
from .errors import Forbidden, ImageNotFound, NamespaceNotFound
from .metadefs.model import CatalogScope, Namespace, NamespaceVisibility
from .model import Image, Member, MemberStatus, Scope, Visibility


def can_see(context: RequestContext, image: Image, member: Member | None = None) -> bool:
    """
    Glance's ``is_image_visible``: admins, ownerless, public/community, owned images, and
    shared images the caller's project is a member of (in any member status).
    """
    if context.is_admin:
        return True
    if not is_reader(context):
        return False  # Glance's get_image: admin or reader
    if image.owner is None:
        return True
    if image.visibility in (Visibility.PUBLIC, Visibility.COMMUNITY):
        return True
    if context.project_id is not None and image.owner == context.project_id:
        return True
    return (
        image.visibility is Visibility.SHARED
        and member is not None
        and member.member_id == context.project_id
    )


def is_reader(context: RequestContext) -> bool:
    return context.is_admin or "reader" in context.roles


def is_member(context: RequestContext) -> bool:
    return context.is_admin or "member" in context.roles


def can_modify(context: RequestContext, image: Image) -> bool:
    """
    Admins, or members of the owning project (Glance's secure-RBAC ``modify_image``; the
    ``reader`` role alone may not).  Ownerless images are an admin's only.
    """
    if context.is_admin:
        return True
    return (
        is_member(context)
        and
        context.project_id is not None
        and image.owner is not None
        and image.owner == context.project_id
    )


def check_visible(context: RequestContext, image: Image, member: Member | None = None) -> Image:
    if not can_see(context, image, member):
        raise ImageNotFound(image.id)
    return image


def check_modify(
    context: RequestContext, image: Image, action: str, member: Member | None = None
) -> Image:
    """Raise 404 if the caller cannot see the image, 403 if it may see but not ``action``."""
    check_visible(context, image, member)
    if not can_modify(context, image):
        raise Forbidden(f"You are not permitted to {action} image {image.id}.")
    return image


def check_visibility_change(context: RequestContext, visibility: Visibility) -> None:
    """Only admins may make an image public (Glance's ``publicize_image``)."""
    if visibility is Visibility.PUBLIC and not context.is_admin:
        raise Forbidden("You are not permitted to publicize images.")


def check_create(context: RequestContext, owner: object) -> None:
    """
    Glance's ``add_image``: admins, or members creating images for their own project.
    """
    if context.is_admin:
        return
    if not is_member(context) or context.project_id is None:
        raise Forbidden("You are not permitted to create images.")
    if owner != context.project_id:
        raise Forbidden(f"You are not permitted to create images owned by '{owner}'.")


def sees_all_members(context: RequestContext, image: Image) -> bool:
    """
    Glance's ``get_members`` on the owner's side: admins and readers of the owning project
    see every member; anyone else (a member project) sees only its own membership.
    """
    if context.is_admin:
        return True
    return (
        is_reader(context)
        and context.project_id is not None
        and image.owner == context.project_id
    )


def check_member_decides(context: RequestContext, member_id: str) -> None:
    """Glance's ``modify_member``: admins, or the member project itself with the member role."""
    if context.is_admin:
        return
    if not (is_member(context) and context.project_id == member_id):
        raise Forbidden("Only the member may change its membership status.")


def check_list(context: RequestContext) -> None:
    """Glance's ``get_images``: admin or reader."""
    if not is_reader(context):
        raise Forbidden("You are not permitted to list images.")


def check_download(context: RequestContext, image: Image) -> None:
    """Glance's ``download_image``: admins, or members (a reader may look but not fetch)."""
    if not is_member(context):
        raise Forbidden(f"You are not permitted to download image {image.id}.")


#: Who may deactivate and reactivate an image (``--deactivate-policy``).
DeactivatePolicy = Literal["project-member", "admin"]
DEACTIVATE_POLICIES: tuple[DeactivatePolicy, ...] = ("project-member", "admin")


@attrs.frozen
class Rules:
    """
    The defaults an operator may tighten, where Glance's own deployments differ.

    ``deactivate``: Glance 33's default lets the owning project's members deactivate and
    reactivate its images (``ADMIN_OR_PROJECT_MEMBER``; tempest's
    ``test_deactivate_reactivate_image`` relies on it); many clouds restrict it to admins, so
    that a project cannot hide an image an operator keeps active, and ``"admin"`` does that.

    ``copy_image``: who may copy an active image to more stores.  Glance's default is
    administrators only; ``"project-member"`` also lets the owning project's members.
    """

    deactivate: DeactivatePolicy = "project-member"
    copy_image: DeactivatePolicy = "admin"
    #: Who may write the metadata definitions catalog: administrators (Glance's
    #: ``metadef_admin``), or also a project's members, in the namespaces their project owns.
    metadefs: DeactivatePolicy = "admin"


def check_deactivate(context: RequestContext, image: Image, action: str, rules: Rules) -> None:
    """Deactivate and reactivate, after ``check_modify``: admins always, members only when
    ``rules`` let them."""
    if rules.deactivate == "admin" and not context.is_admin:
        raise Forbidden(f"You are not permitted to {action} image {image.id}.")


def check_delete_location(context: RequestContext) -> None:
    """Glance's ``delete_image_location`` (removing one store's copy): an administrator's."""
    if not context.is_admin:
        raise Forbidden("You are not authorized to delete image data from a store.")


def check_copy(context: RequestContext, image: Image, rules: Rules) -> None:
    """``copy_image``: an administrator's (Glance's default), or also the owning project's
    members with ``--copy-image-policy project-member``."""
    if context.is_admin:
        return
    if rules.copy_image == "project-member" and is_member(context) and (
        image.owner == context.project_id
    ):
        return
    raise Forbidden(f"You are not permitted to copy image {image.id} to other stores.")


def check_stores_detail(context: RequestContext) -> None:
    """Glance's ``stores_info_detail``: administrators (and the service role)."""
    if not (context.is_admin or "service" in context.roles):
        raise Forbidden("You are not authorized to see the stores' details.")


def check_tasks_api(context: RequestContext) -> None:
    """Glance's ``tasks_api_access``: the tasks API is an administrator's (an image's own
    tasks are shown to whoever may see the image)."""
    if not context.is_admin:
        raise Forbidden("You are not authorized to complete get_task action.")


# -- the metadata definitions catalog (Glance's ``policies/metadef.py``) ---------------------


def can_see_namespace(context: RequestContext, namespace: Namespace) -> bool:
    """``get_metadef_namespace``: admins, or readers of a public namespace or of one their
    project owns."""
    if context.is_admin:
        return True
    if not is_reader(context):
        return False
    if namespace.visibility is NamespaceVisibility.PUBLIC:
        return True
    return context.project_id is not None and namespace.owner == context.project_id


def catalog_scope(context: RequestContext) -> CatalogScope:
    """The namespaces a list may return (``get_metadef_namespaces``: readers and admins;
    others are refused)."""
    if not is_reader(context):
        raise Forbidden("You are not authorized to complete get_metadef_namespaces action.")
    return CatalogScope(everything=context.is_admin, project=context.project_id)


def check_catalog_reader(context: RequestContext) -> None:
    """``list_metadef_resource_types``: readers and admins."""
    if not is_reader(context):
        raise Forbidden("You are not authorized to complete list_metadef_resource_types action.")


def namespace_reader(context: RequestContext) -> Callable[[Namespace], None]:
    """The guard of reads: a namespace the caller may not see is not found (404)."""

    def guard(namespace: Namespace) -> None:
        if not can_see_namespace(context, namespace):
            raise NamespaceNotFound(namespace.namespace)

    return guard


def can_write_catalog(context: RequestContext, rules: Rules, owner: str | None) -> bool:
    """``metadef_admin``, or with ``rules.metadefs == "project-member"`` a member of the
    project that owns (or is to own) the namespace."""
    if context.is_admin:
        return True
    return (
        rules.metadefs == "project-member"
        and is_member(context)
        and context.project_id is not None
        and owner == context.project_id
    )


def namespace_writer(
    context: RequestContext, rules: Rules, action: str
) -> Callable[[Namespace], None]:
    """The guard of writes (``action`` is Glance's rule name): not found (404) if the caller
    may not see the namespace, forbidden (403) if it may see but not change it."""
    read = namespace_reader(context)

    def guard(namespace: Namespace) -> None:
        read(namespace)
        if not can_write_catalog(context, rules, namespace.owner):
            raise Forbidden(f"You are not authorized to complete {action} action.")

    return guard


def check_create_namespace(context: RequestContext, rules: Rules, owner: str | None) -> None:
    """``add_metadef_namespace``: the same rule as other writes, for the namespace's owner."""
    if not can_write_catalog(context, rules, owner):
        raise Forbidden("You are not authorized to complete add_metadef_namespace action.")


def check_namespace_owner(
    context: RequestContext, rules: Rules, old: str | None, new: str | None
) -> None:
    """Giving a namespace to another owner is a write for the new owner too: a project's
    member cannot hand its namespace to another project (nor take one)."""
    if new != old and not can_write_catalog(context, rules, new):
        raise Forbidden("You are not authorized to complete modify_metadef_namespace action.")


def check_namespace_visibility(context: RequestContext, visibility: NamespaceVisibility) -> None:
    """Only administrators make a namespace public (it then shows in every project's
    metadata dialogs), as only they publicize images."""
    if visibility is NamespaceVisibility.PUBLIC and not context.is_admin:
        raise Forbidden("You are not permitted to make metadata definition namespaces public.")


def may_create_resource_types(context: RequestContext) -> bool:
    """Resource types are global (every reader lists them) and only an administrator removes
    them (``imaged-manage metadefs unload``): only administrators make new ones."""
    return context.is_admin


def list_scope(context: RequestContext, member_status: MemberStatus | None) -> Scope:
    return Scope(
        everything=context.is_admin, project=context.project_id, member_status=member_status
    )
