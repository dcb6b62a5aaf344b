"""
Repairing what an interrupted upload leaves: images stuck ``saving`` and bytes no image owns.

A single node repairs itself at start (``recover``: nothing else can be uploading); a shared
deployment repairs with ``imaged-manage scrub``, which only touches images that have not
changed for a long time and blobs older than a margin, since other nodes may be mid-upload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from .interfaces import IBlobStore, IMetadataStore
from .logcontext import Logger
from .model import Scrubbed, Status

log = Logger(namespace="imaged.recovery")


async def scrub(
    metadata: IMetadataStore,
    blobs: IBlobStore,
    restore: Callable[[str], Awaitable[bool]],
    saving_since_before: datetime | None,
    blobs_before: float,
) -> Scrubbed:
    """
    Images ``saving`` (with no change since ``saving_since_before``, when given) go back to
    ``queued`` through ``restore``; blobs stored before ``blobs_before`` (seconds since the
    epoch) that no image refers to are deleted.
    """
    reset: list[str] = []
    for image_id in await metadata.ids_with_status(Status.SAVING):
        if saving_since_before is not None:
            image = await metadata.get(image_id)
            if image is None or image.updated_at >= saving_since_before:
                continue  # recent: an upload may well be running on some node
        if await restore(image_id):
            reset.append(image_id)
            log.warn(
                "upload of image {image_id} was interrupted; it is queued again", image_id=image_id
            )
    # Blobs first, references second: a blob published after the listing is not looked
    # at, and one published before it is referenced by the time references are read
    # (uploads in progress now started after blobs_before, so their blobs are younger).
    candidates = await blobs.stored_before(blobs_before)
    referenced = await metadata.locations()
    removed = [location for location in candidates if location not in referenced]
    for location in removed:
        await blobs.delete(location)
        log.warn("removed image data no image refers to: {location}", location=location)
    return Scrubbed(reset=reset, removed=removed)


__all__ = ["scrub"]
