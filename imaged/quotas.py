"""
Caps and quotas: Glance's limits per image and per project, and the checks that enforce them.

``Limits`` is the one place their defaults live (the options' defaults are read from it).
Per-image limits are checked on the image about to be written, inside the store's transaction;
per-project limits read the project's usage first, as Glance does.
"""

from __future__ import annotations

import attrs

from . import policy
from .context import RequestContext
from .errors import BadRequest, TooLarge
from .interfaces import IMetadataStore
from .model import Image, ProjectUsage, QuotaUsage


@attrs.frozen
class Limits:
    """Glance's caps and quotas, with Glance's defaults."""

    image_size_cap: int = 1024**4  # 1 TiB
    image_property_quota: int = 128
    image_tag_quota: int = 128
    image_member_quota: int = 128
    #: Per-project limits (``None``: unlimited).  ``user_storage_quota`` is Glance's legacy
    #: option (bytes of image data a project may hold); the two counts are the names of
    #: Glance's unified limits, ``image_count_total`` and ``image_count_uploading``.
    user_storage_quota: int | None = None
    image_count_total: int | None = None
    image_count_uploading: int | None = None
    list_limit_default: int = 25
    list_limit_max: int = 1000

    @property
    def counts_projects(self) -> bool:
        """Whether any per-project limit is set (else usage need not be read at all)."""
        return (
            self.user_storage_quota is not None
            or self.image_count_total is not None
            or self.image_count_uploading is not None
        )


def storage_quota_message(size: int | None, remaining: int) -> str:
    """Glance's ``StorageQuotaFull`` wording."""
    attempted = "The size of the data" if size is None else f"The size of the data {size}"
    return (
        "Denying attempt to upload image because it exceeds the quota: "
        f"{attempted} will exceed the limit. {remaining} bytes remaining."
    )


class Quotas:
    """The checks of ``limits`` against images and against a project's usage in ``metadata``."""

    def __init__(self, metadata: IMetadataStore, limits: Limits) -> None:
        self.metadata = metadata
        self.limits = limits

    def check_image(self, image: Image) -> Image:
        """``image`` if it keeps within the per-image limits, else ``TooLarge``/``BadRequest``."""
        limits = self.limits
        if len(image.properties) > limits.image_property_quota:
            raise TooLarge(
                f"Attempted: {len(image.properties)}, "
                f"Maximum: {limits.image_property_quota}: too many image properties."
            )
        if len(image.tags) > limits.image_tag_quota:
            raise TooLarge(
                f"Attempted: {len(image.tags)}, "
                f"Maximum: {limits.image_tag_quota}: too many image tags."
            )
        for tag in image.tags:
            if len(tag) > 255:
                raise BadRequest(f"Tag '{tag[:32]}...' is longer than 255 characters.")
        return image

    def check_members(self, count: int) -> None:
        """One more member on an image that has ``count``."""
        quota = self.limits.image_member_quota
        if count >= quota:
            raise TooLarge(f"Attempted: {count + 1}, Maximum: {quota}: too many image members.")

    async def check_count(self, owner: str | None) -> None:
        """One more image for project ``owner``."""
        limit = self.limits.image_count_total
        if limit is None or owner is None:
            return
        usage = await self.metadata.usage(owner)
        if usage.image_count >= limit:
            raise TooLarge(
                f"Attempted: {usage.image_count + 1}, Maximum: {limit}: "
                f"project {owner} has too many images (image_count_total)."
            )

    async def upload_allowance(self, owner: str | None, size: int | None) -> int | None:
        """
        How many bytes project ``owner`` may still store (``None``: no project quota), or
        ``TooLarge`` when the declared ``size`` or one more upload would exceed a quota.

        The check and the upload are not one transaction, as in Glance: two uploads racing
        in one project can together overshoot the storage quota by at most the second one.
        """
        limits = self.limits
        if owner is None or not limits.counts_projects:
            return None
        usage = await self.metadata.usage(owner)
        uploading = limits.image_count_uploading
        # The image being uploaded is already ``saving``, so it counts itself.
        if uploading is not None and usage.uploading > uploading:
            raise TooLarge(
                f"Attempted: {usage.uploading}, Maximum: {uploading}: project {owner} "
                "has too many uploads in progress (image_count_uploading)."
            )
        quota = limits.user_storage_quota
        if quota is None:
            return None
        remaining = max(0, quota - usage.size_total)
        if (size is not None and size > remaining) or remaining == 0:
            raise TooLarge(storage_quota_message(size, remaining))
        return remaining

    async def usage(self, context: RequestContext) -> QuotaUsage:
        """The caller's project's usage beside its limits (a reader of it may ask)."""
        policy.check_list(context)  # a reader of the project, as Glance's get_usage
        project = context.project_id
        usage = await self.metadata.usage(project) if project is not None else ProjectUsage()
        return QuotaUsage(
            usage=usage,
            size_limit=self.limits.user_storage_quota,
            count_limit=self.limits.image_count_total,
            uploading_limit=self.limits.image_count_uploading,
        )


__all__ = ["Limits", "Quotas", "storage_quota_message"]
