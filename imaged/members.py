"""
Image sharing: the projects a ``shared`` image is offered to and what each of them said.

The owner (or an admin) adds and removes members; a member project accepts or rejects; each
side sees what Glance shows it (the owner every member, a member only its own row).
"""

from __future__ import annotations

from . import policy
from .context import RequestContext
from .errors import Conflict, Forbidden, NotFound
from .guards import ImageGuard
from .model import Image, Member, MemberStatus, Visibility
from .quotas import Quotas


class Members:
    """``IImageService``'s member operations."""

    def __init__(self, guard: ImageGuard, quotas: Quotas) -> None:
        self.guard = guard
        self.metadata = guard.metadata
        self.quotas = quotas

    async def _shared_image(self, context: RequestContext, image_id: str) -> Image:
        image = await self.guard.visible(context, image_id)
        if image.visibility is not Visibility.SHARED:
            raise Forbidden("Only shared images have members.")
        return image

    async def _visible_members(self, context: RequestContext, image: Image) -> list[Member]:
        members = await self.metadata.list_members(image.id)
        if policy.sees_all_members(context, image):
            return members
        # A member sees only its own row (Glance's member query filters by the caller).
        return [m for m in members if m.member_id == context.project_id]

    async def _visible_member(
        self, context: RequestContext, image: Image, member_id: str
    ) -> Member:
        for member in await self._visible_members(context, image):
            if member.member_id == member_id:
                return member
        raise NotFound(f"Member {member_id} not found for image {image.id}.")

    async def add(self, context: RequestContext, image_id: str, member_id: str) -> Member:
        image = await self._shared_image(context, image_id)
        if not policy.can_modify(context, image):
            raise Forbidden(f"You are not permitted to add members to image {image_id}.")
        existing = await self.metadata.list_members(image_id)
        if any(m.member_id == member_id for m in existing):
            raise Conflict(f"Member {member_id} already associated with image {image_id}.")
        self.quotas.check_members(len(existing))
        now = self.guard.now()
        return await self.metadata.add_member(
            Member(image_id, member_id, MemberStatus.PENDING, now, now)
        )

    async def list(self, context: RequestContext, image_id: str) -> list[Member]:
        image = await self._shared_image(context, image_id)
        return await self._visible_members(context, image)

    async def get(self, context: RequestContext, image_id: str, member_id: str) -> Member:
        image = await self._shared_image(context, image_id)
        return await self._visible_member(context, image, member_id)

    async def update(
        self, context: RequestContext, image_id: str, member_id: str, status: MemberStatus
    ) -> Member:
        image = await self._shared_image(context, image_id)
        await self._visible_member(context, image, member_id)
        policy.check_member_decides(context, member_id)
        return await self.metadata.update_member(image_id, member_id, status, self.guard.now())

    async def delete(self, context: RequestContext, image_id: str, member_id: str) -> None:
        image = await self.guard.visible(context, image_id)
        await self._visible_member(context, image, member_id)
        if not policy.can_modify(context, image):
            raise Forbidden(f"You are not permitted to delete members of image {image_id}.")
        if not await self.metadata.delete_member(image_id, member_id):
            raise NotFound(f"Member {member_id} not found for image {image_id}.")


__all__ = ["Members"]
