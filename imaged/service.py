"""
The image service: Glance's rules over a metadata store and a blob store.

``ImageService`` implements ``IImageService``.  It decides *what* may happen (policy, the
status state machine, quotas, defaults) and leaves *how* to the stores.  It knows nothing of
HTTP: callers hand it a ``RequestContext`` and values from ``imaged.model``.
Every read-check-write is one ``IMetadataStore.modify`` call, so two requests racing on the same
image (two uploads, a delete during an upload) are decided by the database, not by luck.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

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
from .hashing import check_algorithm
from .interfaces import IBlobStore, IImageService, IMetadataStore
from .lifecycle import transition
from .model import (
    ByteRange,
    Change,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    Download,
    Image,
    ImageQuery,
    Member,
    MemberStatus,
    Page,
    PatchOp,
    ProjectUsage,
    QuotaUsage,
    Status,
    Visibility,
    utcnow,
)
from .schemas import MAX_INT, SETTABLE
from .streams import TeeProducer


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



def _storage_quota_message(size: int | None, remaining: int) -> str:
    """Glance's ``StorageQuotaFull`` wording."""
    attempted = "The size of the data" if size is None else f"The size of the data {size}"
    return (
        "Denying attempt to upload image because it exceeds the quota: "
        f"{attempted} will exceed the limit. {remaining} bytes remaining."
    )


def _coerce_base(name: str, value: Any) -> Any:
    """A base attribute's wire value (already schema-valid) as the model's type."""
    if name == "visibility":
        return Visibility(value)
    if name == "disk_format":
        return None if value is None else DiskFormat(value)
    if name == "container_format":
        return None if value is None else ContainerFormat(value)
    if name == "tags":
        return frozenset(value)
    if name in ("min_disk", "min_ram") and (
        not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT
    ):
        raise BadRequest(f"Invalid value '{value}' for {name}.")
    return value


@implementer(IImageService)
class ImageService:
    """``IImageService`` over an ``IMetadataStore`` and an ``IBlobStore``."""

    log = Logger()

    def __init__(
        self,
        metadata: IMetadataStore,
        blobs: IBlobStore,
        hash_algo: str = "sha512",
        limits: Limits = Limits(),
        require_format_match: bool = True,
    ) -> None:
        self.metadata = metadata
        self.blobs = blobs
        self.hash_algo = check_algorithm(hash_algo)
        self.limits = limits
        #: Glance's ``require_image_format_match``: refuse data that is not its disk_format.
        #: Unsafe images (backing files, external extents) are refused either way.
        self.require_format_match = require_format_match

    # -- quotas ---------------------------------------------------------------------------

    def _check_quotas(self, image: Image) -> Image:
        if len(image.properties) > self.limits.image_property_quota:
            raise TooLarge(
                f"Attempted: {len(image.properties)}, "
                f"Maximum: {self.limits.image_property_quota}: too many image properties."
            )
        if len(image.tags) > self.limits.image_tag_quota:
            raise TooLarge(
                f"Attempted: {len(image.tags)}, "
                f"Maximum: {self.limits.image_tag_quota}: too many image tags."
            )
        for tag in image.tags:
            if len(tag) > 255:
                raise BadRequest(f"Tag '{tag[:32]}...' is longer than 255 characters.")
        return image

    @property
    def _counts_projects(self) -> bool:
        limits = self.limits
        return (
            limits.user_storage_quota is not None
            or limits.image_count_total is not None
            or limits.image_count_uploading is not None
        )

    async def _check_count(self, owner: str | None) -> None:
        limit = self.limits.image_count_total
        if limit is None or owner is None:
            return
        usage = await self.metadata.usage(owner)
        if usage.image_count >= limit:
            raise TooLarge(
                f"Attempted: {usage.image_count + 1}, Maximum: {limit}: "
                f"project {owner} has too many images (image_count_total)."
            )

    async def _upload_allowance(self, owner: str | None, size: int | None) -> int | None:
        """
        How many bytes project ``owner`` may still store (``None``: no project quota), or
        ``TooLarge`` when the declared ``size`` or one more upload would exceed a quota.

        The check and the upload are not one transaction, as in Glance: two uploads racing
        in one project can together overshoot the storage quota by at most the second one.
        """
        limits = self.limits
        if owner is None or not self._counts_projects:
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
            raise TooLarge(_storage_quota_message(size, remaining))
        return remaining

    def health(self) -> Deferred[str | None]:
        return Deferred.fromCoroutine(self._health())

    async def _health(self) -> str | None:
        try:
            await self.metadata.ping()
        except Exception as e:
            self.log.error("health check: the database does not answer: {error}", error=e)
            return "DATABASE UNREACHABLE"
        return None

    def usage(self, context: RequestContext) -> Deferred[QuotaUsage]:
        return Deferred.fromCoroutine(self._usage(context))

    async def _usage(self, context: RequestContext) -> QuotaUsage:
        policy.check_list(context)  # a reader of the project, as Glance's get_usage
        project = context.project_id
        usage = await self.metadata.usage(project) if project is not None else ProjectUsage()
        return QuotaUsage(
            usage=usage,
            size_limit=self.limits.user_storage_quota,
            count_limit=self.limits.image_count_total,
            uploading_limit=self.limits.image_count_uploading,
        )

    async def _load_visible(self, context: RequestContext, image_id: str) -> Image:
        image = await self.metadata.get(image_id)
        if image is None:
            raise ImageNotFound(image_id)
        member = None
        if not policy.can_see(context, image) and image.visibility is Visibility.SHARED:
            member = await self._membership(context, image_id)
        return policy.check_visible(context, image, member)

    async def _membership(self, context: RequestContext, image_id: str) -> Member | None:
        """The caller's project's membership of an image, if it has one."""
        if context.is_admin or context.project_id is None:
            return None
        return await self.metadata.get_member(image_id, context.project_id)

    def _guarded_modify(
        self,
        context: RequestContext,
        image_id: str,
        action: str,
        mutate: Callable[[Image], Image],
    ) -> Deferred[Image]:
        """``metadata.modify`` after the policy check for ``action`` (404 or 403)."""

        async def run() -> Image:
            member = await self._membership(context, image_id)

            def guarded(image: Image) -> Image:
                policy.check_modify(context, image, action, member)
                return mutate(image)

            return await self.metadata.modify(image_id, guarded)

        return Deferred.fromCoroutine(run())

    # -- IImageService --------------------------------------------------------------------

    def create(self, context: RequestContext, request: CreateImageRequest) -> Deferred[Image]:
        return Deferred.fromCoroutine(self._create(context, request))

    async def _create(self, context: RequestContext, request: CreateImageRequest) -> Image:
        policy.check_create(
            context, request.owner if request.owner is not None else context.project_id
        )
        visibility = request.visibility or Visibility.SHARED
        policy.check_visibility_change(context, visibility)
        now = utcnow()
        image = Image(
            id=request.id or str(uuid.uuid4()),
            status=Status.QUEUED,
            visibility=visibility,
            created_at=now,
            updated_at=now,
            name=request.name,
            owner=request.owner if request.owner is not None else context.project_id,
            protected=bool(request.protected),
            os_hidden=bool(request.os_hidden),
            disk_format=request.disk_format,
            container_format=request.container_format,
            min_disk=_coerce_base("min_disk", request.min_disk or 0),
            min_ram=_coerce_base("min_ram", request.min_ram or 0),
            tags=frozenset(request.tags),
            properties=dict(request.properties),
        )
        self._check_quotas(image)
        await self._check_count(image.owner)
        stored = await self.metadata.insert(image)
        self.log.info(
            "created image {image_id} for {owner}", image_id=stored.id, owner=stored.owner
        )
        return stored

    def list(self, context: RequestContext, query: ImageQuery) -> Deferred[Page]:
        try:
            policy.check_list(context)
        except Forbidden:
            return fail()
        return self.metadata.list(policy.list_scope(context, query.member_status), query)

    def get(self, context: RequestContext, image_id: str) -> Deferred[Image]:
        return Deferred.fromCoroutine(self._load_visible(context, image_id))

    def update(
        self, context: RequestContext, image_id: str, changes: Sequence[Change]
    ) -> Deferred[Image]:
        def mutate(image: Image) -> Image:
            updated = image
            for change in changes:
                updated = self._apply(context, updated, change)
            if updated == image:
                return image
            return self._check_quotas(attrs.evolve(updated, updated_at=utcnow()))

        return self._guarded_modify(context, image_id, "modify", mutate)

    def _apply(self, context: RequestContext, image: Image, change: Change) -> Image:
        """One json-patch step, with Glance's semantics for base and extra properties."""
        name = change.name
        if name in SETTABLE:
            if change.op is PatchOp.REMOVE:
                raise Forbidden(f"Property {name} may not be removed.")
            value = _coerce_base(name, change.value)
            if name == "visibility":
                policy.check_visibility_change(context, value)
            elif name == "owner" and not context.is_admin and value != image.owner:
                raise Forbidden("Owner can't be updated by non-admin.")
            elif (
                name in ("disk_format", "container_format")
                and value != getattr(image, name)
                and image.status not in (Status.QUEUED, Status.IMPORTING)
            ):
                raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
            return attrs.evolve(image, **{name: value})
        properties = dict(image.properties)
        if change.op is PatchOp.REMOVE:
            if name not in properties:
                raise Conflict(f"Property {name} does not exist.")
            del properties[name]
        elif change.op is PatchOp.REPLACE:
            if name not in properties:
                raise Conflict(f"Property {name} does not exist.")
            properties[name] = str(change.value)
        else:
            if change.strict_add and name in properties:
                raise Conflict(f"Property {name} already present.")
            properties[name] = str(change.value)
        return attrs.evolve(image, properties=properties)

    def delete(self, context: RequestContext, image_id: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._delete(context, image_id))

    async def _delete(self, context: RequestContext, image_id: str) -> None:
        before: list[Image] = []

        def mutate(image: Image) -> Image:
            if image.protected:
                raise Forbidden(f"Image {image.id} is protected and cannot be deleted.")
            before.append(image)
            return transition(image, Status.DELETED, BadRequest)

        await self._guarded_modify(context, image_id, "delete", mutate)
        location = before[0].location
        self.log.info("deleted image {image_id}", image_id=image_id)
        if location is not None:
            await self._delete_blob(image_id, location)

    async def _delete_blob(self, image_id: str, location: str) -> None:
        try:
            await self.blobs.delete(location)
        except Exception:
            # The record is already gone; leftover bytes are an operator's cleanup, not the
            # caller's error.
            self.log.failure(
                "could not delete data of image {image_id} at {location}",
                image_id=image_id,
                location=location,
            )

    def upload(
        self,
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
    ) -> Deferred[Image]:
        return Deferred.fromCoroutine(self._upload(context, image_id, producer, size))

    async def _upload(
        self,
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None,
    ) -> Image:
        cap = self.limits.image_size_cap
        if size is not None and size > cap:
            raise TooLarge(f"Image size {size} exceeds the size cap of {cap} bytes.")

        def start(image: Image) -> Image:
            if image.status is not Status.QUEUED:
                raise Conflict(
                    f"Image status transition from {image.status.value} to saving is not "
                    "allowed: image data can only be uploaded to a queued image."
                )
            return transition(image, Status.SAVING, Conflict)

        saving = await self._guarded_modify(context, image_id, "upload data to", start)
        try:
            allowance = await self._upload_allowance(saving.owner, size)
        except Exception:
            failure = Failure()
            await self._restore(image_id)
            failure.raiseException()
        limit = cap if allowance is None else min(cap, allowance)
        self.log.info("receiving data for image {image_id}", image_id=image_id)
        # Glance inspects the content of bare images only; others are opaque containers.
        inspector: FormatInspector | None = None
        if saving.container_format is ContainerFormat.BARE:
            inspector = FormatInspector()
            producer = TeeProducer(producer, inspector.feed)
        try:
            blob = await self.blobs.write(image_id, producer, self.hash_algo, limit)
        except Exception:  # not GeneratorExit: a coroutine being closed must not await
            failure = Failure()
            if failure.check(TooLarge) and allowance is not None and allowance < cap:
                failure = Failure(TooLarge(_storage_quota_message(None, allowance)))
            await self._restore(image_id)
            self.log.warn(
                "upload of image {image_id} failed: {why}",
                image_id=image_id,
                why=failure.getErrorMessage(),
            )
            failure.raiseException()
        if size is not None and blob.size != size:
            await self._discard_upload(image_id, blob.location)
            raise BadRequest(f"Image data was {blob.size} bytes but {size} bytes were declared.")
        virtual_size = blob.size if saving.disk_format is DiskFormat.RAW else None
        # Zero bytes point nowhere and are no format at all: glanceclient sends an empty body
        # when run without --file and without a terminal on stdin, as Glance accepts it.
        if inspector is not None and blob.size > 0:
            inspection = inspector.result(blob.size)
            declared = saving.disk_format.value if saving.disk_format else None
            problem = (
                inspection.problem(declared) if self.require_format_match else (inspection.unsafe)
            )
            if problem is not None:
                await self._discard_upload(image_id, blob.location)
                self.log.warn(
                    "refused data for image {image_id}: {problem}",
                    image_id=image_id,
                    problem=problem,
                )
                raise InvalidImageData(problem)
            if declared != DiskFormat.RAW.value and inspection.format == declared:
                virtual_size = inspection.virtual_size

        def finish(image: Image) -> Image:
            if image.status is not Status.SAVING:
                raise Gone(f"Image {image_id} changed status during upload.")
            return transition(
                image,
                Status.ACTIVE,
                Conflict,
                size=blob.size,
                virtual_size=virtual_size,
                checksum=blob.checksum,
                os_hash_algo=blob.hash_algo,
                os_hash_value=blob.hash_value,
                location=blob.location,
            )

        try:
            image = await self.metadata.modify(image_id, finish)
        except (Gone, ImageNotFound):
            await self._delete_blob(image_id, blob.location)
            raise Gone(f"Image {image_id} was deleted during upload.") from None
        self.log.info(
            "image {image_id} is active: {size} bytes, {algo} {digest}",
            image_id=image_id,
            size=blob.size,
            algo=blob.hash_algo,
            digest=blob.hash_value,
        )
        return image

    async def _discard_upload(self, image_id: str, location: str) -> None:
        """Drop bytes the upload stored but may not keep, and queue the image again."""
        await self._delete_blob(image_id, location)
        await self._restore(image_id)

    async def _restore(self, image_id: str) -> bool:
        """
        Put an image whose upload failed back to ``queued`` (Glance v2's ``_restore``).

        Checked inside the transaction: only an image still ``saving`` is changed.
        Returns whether it was.
        """
        changed: list[bool] = []

        def back(image: Image) -> Image:
            if image.status is Status.SAVING:
                changed.append(True)
                return transition(image, Status.QUEUED, Conflict)
            return image

        try:
            await self.metadata.modify(image_id, back)
        except ImageNotFound:
            pass
        return bool(changed)

    def download(
        self,
        context: RequestContext,
        image_id: str,
        byte_range: ByteRange | None = None,
    ) -> Deferred[Download]:
        return Deferred.fromCoroutine(self._download(context, image_id, byte_range))

    async def _download(
        self, context: RequestContext, image_id: str, byte_range: ByteRange | None
    ) -> Download:
        image = await self._load_visible(context, image_id)
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
            image=image,
            producer=producer,
            offset=offset,
            length=length,
            ranged=byte_range is not None,
        )

    def add_tag(self, context: RequestContext, image_id: str, tag: str) -> Deferred[None]:
        def mutate(image: Image) -> Image:
            if tag in image.tags:
                return image
            return self._check_quotas(
                attrs.evolve(image, tags=image.tags | {tag}, updated_at=utcnow())
            )

        modified = self._guarded_modify(context, image_id, "update tags for", mutate)
        return modified.addCallback(lambda _: None)

    def remove_tag(self, context: RequestContext, image_id: str, tag: str) -> Deferred[None]:
        def mutate(image: Image) -> Image:
            if tag not in image.tags:
                raise NotFound(f"Tag {tag} not found.")
            return attrs.evolve(image, tags=image.tags - {tag}, updated_at=utcnow())

        modified = self._guarded_modify(context, image_id, "update tags for", mutate)
        return modified.addCallback(lambda _: None)

    def _switch(
        self,
        context: RequestContext,
        image_id: str,
        action: str,
        source: Status,
        target: Status,
    ) -> Deferred[None]:
        def mutate(image: Image) -> Image:
            policy.check_admin(context, image, action)
            if image.status is target:
                return image
            if image.status is not source:
                raise Forbidden(f"Not allowed to {action} image in status '{image.status.value}'")
            return transition(image, target, Forbidden)

        return self._guarded_modify(context, image_id, action, mutate).addCallback(lambda _: None)

    def recover(self, started_at: float) -> Deferred[tuple[builtins.list[str], builtins.list[str]]]:
        return Deferred.fromCoroutine(self._scrub(None, started_at))

    def scrub(
        self, saving_since_before: datetime, blobs_before: float
    ) -> Deferred[tuple[builtins.list[str], builtins.list[str]]]:
        """
        What ``imaged-manage scrub`` does on a shared deployment, where other nodes may be
        uploading: images ``saving`` whose record has not changed since before
        ``saving_since_before`` go back to ``queued``; blobs stored before ``blobs_before``
        (seconds since the epoch) that no image refers to are deleted.

        @return: ``Deferred`` firing with ``(image ids reset, locations removed)``.
        """
        return Deferred.fromCoroutine(self._scrub(saving_since_before, blobs_before))

    async def _scrub(
        self, saving_since_before: datetime | None, blobs_before: float
    ) -> tuple[builtins.list[str], builtins.list[str]]:
        reset: builtins.list[str] = []
        for image_id in await self.metadata.ids_with_status(Status.SAVING):
            if saving_since_before is not None:
                image = await self.metadata.get(image_id)
                if image is None or image.updated_at >= saving_since_before:
                    continue  # recent: an upload may well be running on some node
            if await self._restore(image_id):
                reset.append(image_id)
        # Blobs first, references second: a blob published after the listing is not looked
        # at, and one published before it is referenced by the time references are read
        # (uploads in progress now started after blobs_before, so their blobs are younger).
        candidates = await self.blobs.stored_before(blobs_before)
        referenced = await self.metadata.locations()
        removed = [location for location in candidates if location not in referenced]
        for location in removed:
            await self.blobs.delete(location)
        for image_id in reset:
            self.log.warn(
                "upload of image {image_id} was interrupted; it is queued again", image_id=image_id
            )
        for location in removed:
            self.log.warn("removed image data no image refers to: {location}", location=location)
        return reset, removed

    # -- members ------------------------------------------------------------------------------

    async def _image_for_members(self, context: RequestContext, image_id: str) -> Image:
        image = await self._load_visible(context, image_id)
        if image.visibility is not Visibility.SHARED:
            raise Forbidden("Only shared images have members.")
        return image

    def add_member(
        self, context: RequestContext, image_id: str, member_id: str
    ) -> Deferred[Member]:
        return Deferred.fromCoroutine(self._add_member(context, image_id, member_id))

    async def _add_member(self, context: RequestContext, image_id: str, member_id: str) -> Member:
        image = await self._image_for_members(context, image_id)
        if not policy.can_modify(context, image):
            raise Forbidden(f"You are not permitted to add members to image {image_id}.")
        existing = await self.metadata.list_members(image_id)
        if any(m.member_id == member_id for m in existing):
            raise Conflict(f"Member {member_id} already associated with image {image_id}.")
        if len(existing) >= self.limits.image_member_quota:
            raise TooLarge(
                f"Attempted: {len(existing) + 1}, Maximum: {self.limits.image_member_quota}: "
                "too many image members."
            )
        now = utcnow()
        member = Member(image_id, member_id, MemberStatus.PENDING, now, now)
        return await self.metadata.add_member(member)

    def list_members(
        self, context: RequestContext, image_id: str
    ) -> Deferred[builtins.list[Member]]:
        return Deferred.fromCoroutine(self._list_members(context, image_id))

    async def _list_members(self, context: RequestContext, image_id: str) -> builtins.list[Member]:
        image = await self._image_for_members(context, image_id)
        return await self._visible_members(context, image)

    async def _visible_members(
        self, context: RequestContext, image: Image
    ) -> builtins.list[Member]:
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

    def get_member(
        self, context: RequestContext, image_id: str, member_id: str
    ) -> Deferred[Member]:
        return Deferred.fromCoroutine(self._get_member(context, image_id, member_id))

    async def _get_member(self, context: RequestContext, image_id: str, member_id: str) -> Member:
        image = await self._image_for_members(context, image_id)
        return await self._visible_member(context, image, member_id)

    def update_member(
        self, context: RequestContext, image_id: str, member_id: str, status: MemberStatus
    ) -> Deferred[Member]:
        return Deferred.fromCoroutine(self._update_member(context, image_id, member_id, status))

    async def _update_member(
        self, context: RequestContext, image_id: str, member_id: str, status: MemberStatus
    ) -> Member:
        image = await self._image_for_members(context, image_id)
        await self._visible_member(context, image, member_id)
        policy.check_member_decides(context, member_id)
        return await self.metadata.update_member(image_id, member_id, status, utcnow())

    def delete_member(
        self, context: RequestContext, image_id: str, member_id: str
    ) -> Deferred[None]:
        return Deferred.fromCoroutine(self._delete_member(context, image_id, member_id))

    async def _delete_member(self, context: RequestContext, image_id: str, member_id: str) -> None:
        image = await self._load_visible(context, image_id)
        await self._visible_member(context, image, member_id)
        if not policy.can_modify(context, image):
            raise Forbidden(f"You are not permitted to delete members of image {image_id}.")
        if not await self.metadata.delete_member(image_id, member_id):
            raise NotFound(f"Member {member_id} not found for image {image_id}.")

    def deactivate(self, context: RequestContext, image_id: str) -> Deferred[None]:
        return self._switch(context, image_id, "deactivate", Status.ACTIVE, Status.DEACTIVATED)

    def reactivate(self, context: RequestContext, image_id: str) -> Deferred[None]:
        return self._switch(context, image_id, "reactivate", Status.DEACTIVATED, Status.ACTIVE)
