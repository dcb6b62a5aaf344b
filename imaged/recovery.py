"""
Repairing what an interrupted upload leaves: images stuck ``saving`` and bytes no image owns.

A single node repairs itself at start (``recover``: nothing else can be uploading).  While
running, every node repairs by itself (``release_dead_uploads`` on a timer, ``Sweeper``): each
node's heartbeat is a row in the database and each ``saving`` image names the node whose upload
holds it, so an image held by a node that stopped beating (killed, partitioned), or by this
node with no upload of it running any more, goes back to ``queued`` with no operator.
``imaged-manage scrub`` remains for an operator who wants it now.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Container
from datetime import datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from .errors import InUse
from .interfaces import IBlobStore, IMetadataStore
from .logcontext import Logger
from .model import Scrubbed

log = Logger(namespace="imaged.recovery")


async def scrub(
    metadata: IMetadataStore,
    blobs: IBlobStore,
    restore: Callable[[str, str | None], Awaitable[bool]],
    saving_since_before: datetime | None,
    blobs_before: float,
    busy: Callable[[], Collection[str]] = frozenset,
) -> Scrubbed:
    """
    Images ``saving`` (with no change since ``saving_since_before``, when given) go back to
    ``queued`` through ``restore``; blobs stored before ``blobs_before`` (seconds since the
    epoch) that no image refers to are deleted.  Images ``busy`` (uploads this process is
    running or repairing) are left alone, and so are their blobs.  ``restore`` is given the
    claim seen, so an upload that claims the image meanwhile is never undone.
    """
    reset: list[str] = []
    for upload in await metadata.saving_uploads():
        if upload.image_id in busy():
            continue
        if saving_since_before is not None and upload.updated_at >= saving_since_before:
            continue  # recent: an upload may well be running on some node
        if await restore(upload.image_id, upload.claim):
            reset.append(upload.image_id)
            log.warn(
                "upload of image {image_id} was interrupted; it is queued again",
                image_id=upload.image_id,
            )
    removed = await remove_orphans(metadata, blobs, blobs_before, busy)
    return Scrubbed(reset=reset, removed=removed)


async def remove_orphans(
    metadata: IMetadataStore,
    blobs: IBlobStore,
    blobs_before: float,
    busy: Callable[[], Collection[str]] = frozenset,
) -> list[str]:
    """
    Delete the blobs stored before ``blobs_before`` that no image refers to; return their
    locations.  Blobs of an image being uploaded anywhere (``saving``: on an object store a
    long upload's blob is dated by its start, so it looks old the moment it is complete) or
    ``busy`` here are kept: its publishing transaction may be about to refer to them.
    """
    # Blobs first, references second: a blob published after the listing is not looked
    # at, and one published before it is referenced (or its image is still ``saving``)
    # by the time references are read.
    candidates = await blobs.stored_before(blobs_before)
    referenced = await metadata.locations()
    uploading = {upload.image_id for upload in await metadata.saving_uploads()}
    removed: list[str] = []
    for location in candidates:
        if location in referenced:
            continue
        keep = uploading | set(busy())  # asked again for each: uploads start meanwhile
        if any(image_id in location for image_id in keep):
            continue
        if await _being_copied(metadata, location):
            continue
        try:
            await blobs.delete(location)
        except InUse:
            # An RBD image with clones: whoever made them (Nova, Cinder) still reads it.
            log.warn("image data no image refers to is in use, kept: {location}",
                     location=location)
            continue
        removed.append(location)
        log.warn("removed image data no image refers to: {location}", location=location)
    return removed


#: An image id in a blob's address (every store names data after its image).
_IMAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def _being_copied(metadata: IMetadataStore, location: str) -> bool:
    """Whether the image a blob is named after is locked by an import (a copy-image on any
    node writes data of an active image, not ``saving``: its new copy may be about to be
    recorded)."""
    match = _IMAGE_ID.search(location)
    if match is None:
        return False
    image = await metadata.get(match.group(0))
    return image is not None and "os_glance_import_task" in image.properties


async def release_dead_uploads(
    metadata: IMetadataStore,
    restore: Callable[[str, str | None], Awaitable[bool]],
    node: str,
    running: Callable[[], Container[str]],
    stale_before: datetime,
    unclaimed_before: datetime,
) -> list[str]:
    """
    Queue again the images whose upload is dead: claimed by ``node`` (this process) but not
    ``running`` here (claims, or images being repaired), or claimed by a node whose last
    heartbeat is older than ``stale_before`` (or that never sent one).  Only images unchanged
    since ``stale_before`` are touched, so an upload claimed a moment ago is never mistaken
    for a dead one; an image saving with no claim at all (claimed by an imaged older than
    claims) only when unchanged since ``unclaimed_before``.  ``restore`` re-checks, inside its
    transaction, that the same claim still holds the image.
    """
    reset: list[str] = []
    for upload in await metadata.saving_uploads():
        if upload.updated_at >= stale_before:
            continue
        if upload.claim is None:
            dead = upload.updated_at < unclaimed_before
        elif upload.node == node:
            current = running()
            dead = upload.claim not in current and upload.image_id not in current
        else:
            dead = upload.node_seen is None or upload.node_seen < stale_before
        if dead and await restore(upload.image_id, upload.claim):
            reset.append(upload.image_id)
            log.warn(
                "upload of image {image_id} by {node} is dead; the image is queued again",
                image_id=upload.image_id,
                node=upload.node,
            )
    return reset


class Sweeper(Service):
    """
    Runs ``sweep`` every ``interval`` seconds on ``clock`` while the daemon runs.  A failing
    sweep (database down) is logged as one line and tried again at the next tick.
    """

    log = Logger(namespace="imaged.recovery")

    def __init__(
        self, sweep: Callable[[], Deferred[Any]], clock: IReactorTime, interval: float
    ) -> None:
        self._sweep = sweep
        self._clock = clock
        self.interval = interval
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        loop = LoopingCall(self._tick)
        loop.clock = self._clock
        loop.start(self.interval, now=False)
        self._loop = loop

    def _tick(self) -> Deferred[None]:
        def failed(failure: Any) -> None:
            self.log.warn("recovery sweep failed: {why}", why=failure.getErrorMessage())

        return self._sweep().addCallbacks(lambda _: None, failed)

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()  # type: ignore[no-untyped-call]


__all__ = ["Sweeper", "release_dead_uploads", "remove_orphans", "scrub"]
