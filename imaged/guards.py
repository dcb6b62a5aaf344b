"""
Reading and changing one image on a caller's behalf, with Glance's visibility and policy rules.

Every service operation on an existing image goes through ``ImageGuard``: ``visible`` for
reads, ``modify`` for read-check-write.  ``modify`` is one ``IMetadataStore.modify`` call: the
caller's membership is read and the policy checked inside the write transaction, so a guarded
write is one database hop, and two requests racing on the same image are decided by the
database, not by luck.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from . import policy
from .clock import utc
from .context import RequestContext
from .errors import ImageNotFound
from .interfaces import IMetadataStore
from .model import Image, ImageChange, Member, Visibility


def _member_of(context: RequestContext) -> str | None:
    """Whose membership can change what the caller may do (admins' never does)."""
    return None if context.is_admin else context.project_id


class ImageGuard:
    """One image at a time, as ``context`` may see and change it, at ``clock``'s time."""

    def __init__(self, metadata: IMetadataStore, clock: IReactorTime) -> None:
        self.metadata = metadata
        self.clock = clock

    def now(self) -> datetime:
        return utc(self.clock)

    async def visible(self, context: RequestContext, image_id: str) -> Image:
        """The image, or ``ImageNotFound`` when the caller may not see it."""
        image = await self.metadata.get(image_id)
        if image is None:
            raise ImageNotFound(image_id)
        member = None
        project = _member_of(context)
        if (
            project is not None
            and not policy.can_see(context, image)
            and image.visibility is Visibility.SHARED
        ):
            member = await self.metadata.get_member(image_id, project)
        return policy.check_visible(context, image, member)

    def modify(
        self,
        context: RequestContext,
        image_id: str,
        action: str,
        mutate: Callable[[Image], Image],
        name: str,
    ) -> Deferred[ImageChange]:
        """``mutate`` the image if the caller may ``action`` it (else 404 or 403), in one
        transaction labelled ``name``."""

        def guarded(image: Image, member: Member | None) -> Image:
            policy.check_modify(context, image, action, member)
            return mutate(image)

        return self.metadata.modify(image_id, guarded, member_of=_member_of(context), name=name)


__all__ = ["ImageGuard"]
