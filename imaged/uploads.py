"""
Image data in and out: an upload's path from ``queued`` to ``active``, and downloads.

An upload claims the image (``queued -> saving``, one transaction that also checks policy),
checks the project's quotas, streams the bytes into the blob store while the format inspector
looks at them, and publishes the result (``saving -> active``) only if the image is still
``saving``.  Any failure puts the image back to ``queued`` and removes what was stored, so a
client can simply try again.
"""

from __future__ import annotations

from twisted.web.iweb import IBodyProducer

from . import policy
from .context import RequestContext
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    ImageNotFound,
    InvalidImageData,
    NotFound,
    RangeNotSatisfiable,
    TooLarge,
)
from .formats import FormatInspector
from .guards import ImageGuard
from .interfaces import IBlobStore
from .lifecycle import transition
from .logcontext import Logger
from .model import (
    ByteRange,
    ContainerFormat,
    DiskFormat,
    Download,
    Image,
    Member,
    Status,
    StoredBlob,
)
from .quotas import Quotas, storage_quota_message
from .streams import TeeProducer


class Uploads:
    """Receiving and serving image data for the image service."""

    log = Logger()

    def __init__(
        self,
        guard: ImageGuard,
        blobs: IBlobStore,
        quotas: Quotas,
        hash_algo: str,
        require_format_match: bool,
    ) -> None:
        self.guard = guard
        self.blobs = blobs
        self.quotas = quotas
        self.hash_algo = hash_algo
        #: Glance's ``require_image_format_match``: refuse data that is not its disk_format.
        #: Unsafe images (backing files, external extents) are refused either way.
        self.require_format_match = require_format_match

    async def upload(
        self,
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
    ) -> Image:
        cap = self.quotas.limits.image_size_cap
        if size is not None and size > cap:
            raise TooLarge(f"Image size {size} exceeds the size cap of {cap} bytes.")
        saving = await self._claim(context, image_id)
        try:
            allowance = await self.quotas.upload_allowance(saving.owner, size)
        except Exception:  # not GeneratorExit: a coroutine being closed must not await
            await self.restore(image_id)
            raise
        limit = cap if allowance is None else min(cap, allowance)
        self.log.info("receiving data for image {image_id}", image_id=image_id)
        # Glance inspects the content of bare images only; others are opaque containers.
        inspector: FormatInspector | None = None
        if saving.container_format is ContainerFormat.BARE:
            inspector = FormatInspector()
            producer = TeeProducer(producer, inspector.feed)
        try:
            blob = await self.blobs.write(image_id, producer, self.hash_algo, limit)
        except Exception as e:
            await self.restore(image_id)
            self.log.warn(
                "upload of image {image_id} failed: {why}", image_id=image_id, why=str(e)
            )
            if isinstance(e, TooLarge) and allowance is not None and allowance < cap:
                raise TooLarge(storage_quota_message(None, allowance)) from None
            raise
        if size is not None and blob.size != size:
            await self._discard(image_id, blob.location)
            raise BadRequest(f"Image data was {blob.size} bytes but {size} bytes were declared.")
        virtual_size = await self._inspected_size(saving, blob, inspector)
        return await self._publish(image_id, blob, virtual_size)

    async def _claim(self, context: RequestContext, image_id: str) -> Image:
        """``queued -> saving``: only one upload can win an image."""

        def start(image: Image) -> Image:
            if image.status is not Status.QUEUED:
                raise Conflict(
                    f"Image status transition from {image.status.value} to saving is not "
                    "allowed: image data can only be uploaded to a queued image."
                )
            return transition(image, Status.SAVING, Conflict, self.guard.now())

        change = await self.guard.modify(
            context, image_id, "upload data to", start, "start_upload"
        )
        return change.after

    async def _inspected_size(
        self, saving: Image, blob: StoredBlob, inspector: FormatInspector | None
    ) -> int | None:
        """The virtual size, once the data proved to be what ``saving`` declares."""
        virtual_size = blob.size if saving.disk_format is DiskFormat.RAW else None
        # Zero bytes point nowhere and are no format at all: glanceclient sends an empty body
        # when run without --file and without a terminal on stdin, as Glance accepts it.
        if inspector is None or blob.size == 0:
            return virtual_size
        inspection = inspector.result(blob.size)
        declared = saving.disk_format.value if saving.disk_format else None
        problem = (
            inspection.problem(declared) if self.require_format_match else inspection.unsafe
        )
        if problem is not None:
            await self._discard(saving.id, blob.location)
            self.log.warn(
                "refused data for image {image_id}: {problem}", image_id=saving.id, problem=problem
            )
            raise InvalidImageData(problem)
        if declared != DiskFormat.RAW.value and inspection.format == declared:
            return inspection.virtual_size
        return virtual_size

    async def _publish(self, image_id: str, blob: StoredBlob, virtual_size: int | None) -> Image:
        """``saving -> active`` with the data's attributes, unless the image moved on."""

        def finish(image: Image, _member: Member | None) -> Image:
            if image.status is not Status.SAVING:
                raise Gone(f"Image {image_id} changed status during upload.")
            return transition(
                image,
                Status.ACTIVE,
                Conflict,
                self.guard.now(),
                size=blob.size,
                virtual_size=virtual_size,
                checksum=blob.checksum,
                os_hash_algo=blob.hash_algo,
                os_hash_value=blob.hash_value,
                location=blob.location,
            )

        try:
            change = await self.guard.metadata.modify(image_id, finish, name="finish_upload")
        except (Gone, ImageNotFound):
            await self.delete_blob(image_id, blob.location)
            raise Gone(f"Image {image_id} was deleted during upload.") from None
        self.log.info(
            "image {image_id} is active: {size} bytes, {algo} {digest}",
            image_id=image_id,
            size=blob.size,
            algo=blob.hash_algo,
            digest=blob.hash_value,
        )
        return change.after

    async def _discard(self, image_id: str, location: str) -> None:
        """Drop bytes the upload stored but may not keep, and queue the image again."""
        await self.delete_blob(image_id, location)
        await self.restore(image_id)

    async def restore(self, image_id: str) -> bool:
        """
        Put an image whose upload failed back to ``queued`` (Glance v2's ``_restore``).

        Checked inside the transaction: only an image still ``saving`` is changed.
        Returns whether it was.
        """

        def back(image: Image, _member: Member | None) -> Image:
            if image.status is Status.SAVING:
                return transition(image, Status.QUEUED, Conflict, self.guard.now())
            return image

        try:
            change = await self.guard.metadata.modify(image_id, back, name="restore_upload")
        except ImageNotFound:
            return False
        return change.changed

    async def delete_blob(self, image_id: str, location: str) -> None:
        """Remove an image's bytes; a failure is logged, not raised (the record is gone)."""
        try:
            await self.blobs.delete(location)
        except Exception:
            # Leftover bytes are an operator's cleanup (imaged-manage scrub), not the
            # caller's error.
            self.log.failure(
                "could not delete data of image {image_id} at {location}",
                image_id=image_id,
                location=location,
            )

    async def download(
        self, context: RequestContext, image_id: str, byte_range: ByteRange | None = None
    ) -> Download:
        image = await self.guard.visible(context, image_id)
        policy.check_download(context, image)
        if image.status is Status.DEACTIVATED and not context.is_admin:
            raise Forbidden(
                "The requested image has been deactivated. Image data download is forbidden."
            )
        if not image.has_data or image.size is None or image.location is None:
            return Download(image=image, producer=None)
        offset, length = 0, image.size
        if byte_range is not None:
            resolved = byte_range.resolve(image.size)
            if resolved is None:
                raise RangeNotSatisfiable(
                    f"Requested range not satisfiable for an image of {image.size} bytes.",
                    image.size,
                )
            offset, length = resolved
        try:
            producer = await self.blobs.read(image.location, offset, length)
        except NotFound:
            self.log.error(
                "data of active image {image_id} is missing at {location}",
                image_id=image_id,
                location=image.location,
            )
            return Download(image=image, producer=None)
        return Download(
            image=image, producer=producer, offset=offset, length=length,
            ranged=byte_range is not None,
        )


__all__ = ["Uploads"]
