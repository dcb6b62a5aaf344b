"""
Image data in and out: an upload's path from ``queued`` to ``active``, and downloads.

The same path takes data in for the interoperable import (``Intake``): staging
(``queued -> uploading``, the data kept in the blob store for a later ``glance-direct``
import) and ``web-download`` (``importing -> active``, the body of a remote URL).

An upload claims the image (``queued -> saving``, one transaction that also checks policy),
checks the project's quotas, streams the bytes into the blob store while the format inspector
looks at them, and publishes the result (``saving -> active``) only if the image is still
``saving``.  Any failure puts the image back to ``queued`` and removes what was stored, so a
client can simply try again; when the metadata database is what failed, that repair is retried
in the background until the database answers again (``_repair``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
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
    MetadataUnavailable,
    NotFound,
    RangeNotSatisfiable,
    StoreFailure,
    TooLarge,
)
from .formats import FormatInspector
from .guards import ImageGuard
from .interfaces import IBlobStore
from .lifecycle import transition
from .logcontext import Logger
from .metrics import STORE_ERRORS
from .model import (
    ByteRange,
    ContainerFormat,
    DiskFormat,
    Download,
    Image,
    ImageChange,
    Location,
    Member,
    Status,
    StoredBlob,
)
from .quotas import Quotas, storage_quota_message
from .stores import NamedStore, Stores, one_store
from .streams import FanOut, TeeProducer


@attrs.frozen
class Intake:
    """
    How data comes into an image: the status that holds it while bytes arrive (with the
    receiving node's claim in ``upload_node``), and the status it ends in.
    """

    name: str
    receiving: Status
    final: Status
    #: Whether the data in ends an import: its lock goes, and its progress properties say
    #: it is done (``import_done``).
    ends_import: bool = False
    #: Whether the claim still holds the image once its data is in (more work follows).
    keeps_claim: bool = False
    #: Whether the data is inspected (its format checked) now; not when an import's plugins
    #: transform it first (decompression): their result is inspected instead.
    inspects: bool = True


#: ``PUT /file``: ``queued -> saving -> active``.
UPLOAD = Intake("upload", Status.SAVING, Status.ACTIVE)
#: ``PUT /stage``: ``queued -> uploading``, the data kept for a ``glance-direct`` import.
STAGE = Intake("stage", Status.UPLOADING, Status.UPLOADING)
#: Glance's import lock and progress properties, shown while an import runs.
IMPORT_LOCK = "os_glance_import_task"
IMPORT_PROPERTIES = (IMPORT_LOCK, "os_glance_importing_to_stores", "os_glance_failed_import")


def import_done(properties: Mapping[str, str], failed: Sequence[str] = ()) -> dict[str, str]:
    """An image's properties once an import or copy ended with its data in: the lock gone,
    no store left to import to, those that failed named, as Glance leaves them (tempest's
    copy waiter waits for ``os_glance_importing_to_stores`` to be empty, not absent)."""
    kept = {k: v for k, v in properties.items() if k not in IMPORT_PROPERTIES}
    kept["os_glance_importing_to_stores"] = ""
    kept["os_glance_failed_import"] = ",".join(failed)
    return kept
#: An import fetching its data (``web-download``): ``importing -> active``.
FETCH = Intake("import", Status.IMPORTING, Status.ACTIVE, ends_import=True)
#: An import fetching data that its plugins transform next: it stays ``importing``.
FETCH_FOR_PLUGINS = Intake(
    "import", Status.IMPORTING, Status.IMPORTING, keeps_claim=True, inspects=False
)
#: Staging for a site whose import plugins transform the data (inspected at import).
STAGE_FOR_PLUGINS = Intake("stage", Status.UPLOADING, Status.UPLOADING, inspects=False)
#: An import's plugins writing the transformed data: ``importing -> active``.
REWRITE = Intake("import", Status.IMPORTING, Status.ACTIVE, ends_import=True)
#: The statuses a node's claim may hold an image in while data arrives.
RECEIVING = frozenset({Status.SAVING, Status.UPLOADING, Status.IMPORTING})

#: A change made to an image as its data is published (see ``Uploads.receive``).
Adjust = Callable[[Image], Image]
#: An image's disk and container formats.
Formats = tuple[DiskFormat | None, ContainerFormat | None]



@attrs.frozen
class Copies:
    """What writing one stream to several stores gave: the copies made, and the stores
    that failed (only when the caller accepts a partial result)."""

    made: tuple[tuple[NamedStore, StoredBlob], ...]
    failed: tuple[str, ...] = ()

    @property
    def blob(self) -> StoredBlob:
        """The data's attributes (every copy has the same: checked as they are made)."""
        return self.made[0][1]

    @property
    def locations(self) -> tuple[Location, ...]:
        return tuple(Location(blob.location, store.name) for store, blob in self.made)


#: Seconds between attempts to repair an image after the metadata database failed, doubling
#: up to the last; after ``REPAIR_ATTEMPTS`` the repair is left to the periodic recovery.
REPAIR_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
REPAIR_ATTEMPTS = 40


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
        node: str = "local",
    ) -> None:
        self.guard = guard
        #: The deployment's stores (one, unnamed, when ``blobs`` is a plain blob store).
        self.stores: Stores = one_store(blobs)
        #: Every store as one: reads and deletes go to the store that holds a location.
        self.blobs: IBlobStore = self.stores
        self.quotas = quotas
        self.hash_algo = hash_algo
        #: Glance's ``require_image_format_match``: refuse data that is not its disk_format.
        #: Unsafe images (backing files, external extents) are refused either way.
        self.require_format_match = require_format_match
        #: Repairs waiting for the metadata database to come back, by image id.
        self.repairs: dict[str, Deferred[None]] = {}
        #: This process's name in the database: each of its uploads holds its image
        #: ``saving`` under a claim of its own, ``<node>#<nonce>`` (``claim_node``).
        self.node = node
        #: The claims of the uploads this process is receiving data for, by image id.
        self.live: dict[str, str] = {}

    async def upload(
        self,
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
        intake: Intake = UPLOAD,
        store: str | None = None,
    ) -> Image:
        cap = self.quotas.limits.image_size_cap
        if size is not None and size > cap:
            raise TooLarge(f"Image size {size} exceeds the size cap of {cap} bytes.")
        target = self.stores.target(store)  # an unknown store: 400 before anything changes
        claimed = await self._claim(context, image_id, intake)
        saving, queued_at = claimed.after, claimed.before.updated_at
        claim = saving.upload_node
        assert claim is not None
        return await self.receive(
            saving, claim, queued_at, producer, size, intake, targets=(target,)
        )

    def new_claim(self) -> str:
        """A claim of this node on an image's incoming data, ``<node>#<nonce>``."""
        return f"{self.node}#{uuid.uuid4().hex[:12]}"

    async def receive(
        self,
        saving: Image,
        claim: str,
        queued_at: datetime,
        producer: IBodyProducer,
        size: int | None,
        intake: Intake = UPLOAD,
        adjust: Adjust | None = None,
        formats: Formats | None = None,
        targets: tuple[NamedStore, ...] = (),
        must_succeed: bool = True,
    ) -> Image:
        """Take in the data of an image already claimed (``saving`` is it, in
        ``intake.receiving`` under ``claim``); what ``upload`` does after its claim.
        The data goes to every store of ``targets`` (the default store if none) from one
        read of ``producer``; with ``must_succeed`` false, the stores that fail are left
        out (named in ``os_glance_failed_import``) as long as one works.
        ``adjust`` changes the image in the publishing transaction (an import's plugins:
        a new ``disk_format``, injected properties); ``saving``'s ``disk_format`` is what the
        data is inspected against.  ``formats`` are the image's formats when it was claimed
        (``saving``'s by default): if they changed meanwhile (allowed while ``importing``),
        the data is refused, as it was inspected for the others."""
        image_id = saving.id
        self.live[image_id] = claim
        try:
            return await self._receive(
                saving, claim, queued_at, producer, size, intake, adjust,
                formats or (saving.disk_format, saving.container_format),
                targets or (self.stores.target(None),), must_succeed,
            )
        finally:
            if self.live.get(image_id) == claim:
                del self.live[image_id]

    def busy(self) -> set[str]:
        """Images whose upload this process is running or repairing: not for recovery."""
        return set(self.live) | set(self.repairs)

    async def _receive(
        self,
        saving: Image,
        claim: str,
        queued_at: datetime,
        producer: IBodyProducer,
        size: int | None,
        intake: Intake,
        adjust: Adjust | None = None,
        formats: Formats | None = None,
        targets: tuple[NamedStore, ...] = (),
        must_succeed: bool = True,
    ) -> Image:
        """
        The rest of ``upload`` once the image is ``saving`` under ``claim``.  A refused
        upload leaves the image as it found it, ``updated_at`` (``queued_at``) included.
        """
        image_id = saving.id
        cap = self.quotas.limits.image_size_cap
        try:
            allowance = await self.quotas.upload_allowance(saving.owner, size)
        except Exception:  # not GeneratorExit: a coroutine being closed must not await
            await self._abandon(image_id, claim, (), queued_at)
            raise
        limit = cap if allowance is None else min(cap, allowance)
        self.log.info("receiving data for image {image_id}", image_id=image_id)
        # Glance inspects the content of bare images only; others are opaque containers.
        inspector: FormatInspector | None = None
        if saving.container_format is ContainerFormat.BARE and intake.inspects:
            inspector = FormatInspector()
            producer = TeeProducer(producer, inspector.feed)
        try:
            copies = await self.write_copies(
                image_id, producer, targets, limit, must_succeed,
                holding=intake.final is intake.receiving,
            )
        except Exception as e:
            await self._abandon(image_id, claim, (), queued_at)
            self.log.warn(
                "upload of image {image_id} failed: {why}", image_id=image_id, why=str(e)
            )
            if isinstance(e, TooLarge) and allowance is not None and allowance < cap:
                raise TooLarge(storage_quota_message(None, allowance)) from None
            raise
        # The bytes are stored: from here on, any failure must remove them and queue the image.
        blob = copies.blob
        try:
            if size is not None and blob.size != size:
                raise BadRequest(
                    f"Image data was {blob.size} bytes but {size} bytes were declared."
                )
            virtual_size = self._inspected_size(saving, blob, inspector)
        except Exception:
            await self._abandon(image_id, claim, copies.locations, queued_at)
            raise
        return await self._publish(
            image_id, claim, queued_at, copies, virtual_size, intake, adjust, formats
        )

    async def write_copies(
        self,
        image_id: str,
        producer: IBodyProducer,
        targets: tuple[NamedStore, ...],
        limit: int | None,
        must_succeed: bool = True,
        holding: bool = False,
    ) -> Copies:
        """
        ``producer`` read once into every store of ``targets`` at the same time (the
        slowest store setting the pace), each store hashing what it writes: the copies'
        digests must agree.  With ``must_succeed``, the first failure stops every write and
        removes what the others stored; otherwise the stores that fail are reported, as long
        as one succeeds.  ``holding``: the data waits for an import, whose result is written
        under the image's name later; a store that cannot write over a name it holds keeps
        it under ``<id>.staged``.
        """

        def name(store: NamedStore) -> str:
            return f"{image_id}.staged" if holding and not store.overwrites else image_id

        if len(targets) == 1:
            store = targets[0]
            try:
                blob = await store.blobs.write(name(store), producer, self.hash_algo, limit)
            except StoreFailure as e:
                STORE_ERRORS.labels(store.name, "write").inc()
                self.log.warn("store {store} failed: {why}", store=store.name, why=e.message)
                raise
            return Copies(((store, blob),))
        fan = FanOut(producer, len(targets))
        writes: list[Deferred[StoredBlob]] = []
        for store, branch in zip(targets, fan.branches, strict=True):
            written: Deferred[StoredBlob] = maybeDeferred(
                store.blobs.write, name(store), branch, self.hash_algo, limit
            )

            def drop(failure: Any, branch: Any = branch) -> Any:
                # This store is out: the others must not wait for it (or, when every store
                # must succeed, must not go on at all).
                if must_succeed:
                    fan.abort(failure)
                else:
                    branch.stopProducing()
                return failure

            writes.append(written.addErrback(drop))
        results: list[tuple[bool, Any]] = await DeferredList(writes, consumeErrors=True)
        made: list[tuple[NamedStore, StoredBlob]] = [
            (store, outcome) for store, (ok, outcome) in zip(targets, results, strict=True)
            if ok
        ]
        failed: list[tuple[NamedStore, Failure]] = [
            (store, outcome) for store, (ok, outcome) in zip(targets, results, strict=True)
            if not ok
        ]
        digests = {(blob.size, blob.hash_value) for _store, blob in made}
        if (failed and (must_succeed or not made)) or len(digests) > 1:
            for store, blob in made:
                await self.delete_blob(image_id, Location(blob.location, store.name))
            if len(digests) > 1:
                raise StoreFailure(f"The copies of image {image_id} differ; none was kept.")
            # The most telling failure: the data's (too large, refused) before a store's.
            errors: list[BaseException] = [
                why.value for _store, why in failed if why.value is not None
            ]
            raise next((e for e in errors if not isinstance(e, StoreFailure)), errors[0])
        for store, why in failed:
            if why.check(StoreFailure):
                STORE_ERRORS.labels(store.name, "write").inc()
        for store, why in failed:
            self.log.warn(
                "copy of image {image_id} to store {store} failed: {why}",
                image_id=image_id, store=store.name, why=str(why.value),
            )
        return Copies(tuple(made), tuple(store.name for store, _why in failed))

    async def _claim(
        self, context: RequestContext, image_id: str, intake: Intake
    ) -> ImageChange:
        """``queued -> saving`` (or ``uploading``): only one upload can win an image."""
        target = intake.receiving.value

        def start(image: Image) -> Image:
            if image.status is not Status.QUEUED:
                raise Conflict(
                    f"Image status transition from {image.status.value} to {target} is not "
                    f"allowed: image data can only be {intake.name}ed to a queued image."
                    if intake is not UPLOAD else
                    f"Image status transition from {image.status.value} to saving is not "
                    "allowed: image data can only be uploaded to a queued image."
                )
            return transition(
                image, intake.receiving, Conflict, self.guard.now(), upload_node=self.new_claim()
            )

        verb = "upload data to" if intake is UPLOAD else "stage data for"
        return await self.guard.modify(context, image_id, verb, start, f"start_{intake.name}")

    def _inspected_size(
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
            self.log.warn(
                "refused data for image {image_id}: {problem}", image_id=saving.id, problem=problem
            )
            raise InvalidImageData(problem)
        if declared != DiskFormat.RAW.value and inspection.format == declared:
            return inspection.virtual_size
        return virtual_size

    async def _publish(
        self,
        image_id: str,
        claim: str,
        queued_at: datetime,
        copies: Copies,
        virtual_size: int | None,
        intake: Intake,
        adjust: Adjust | None = None,
        formats: Formats | None = None,
    ) -> Image:
        """``saving -> active`` (``intake``'s statuses) with the data's attributes, unless the
        image moved on."""
        blob = copies.blob

        def finish(image: Image, _member: Member | None) -> Image:
            if image.status is not intake.receiving or image.upload_node != claim:
                # Deleted, or released by recovery as dead (this node was silent too long)
                # and perhaps claimed by another upload since.
                raise Gone(f"Image {image_id} changed status during upload.")
            if formats is not None and (image.disk_format, image.container_format) != formats:
                raise Conflict(
                    f"The formats of image {image_id} changed while its data arrived; it was "
                    "inspected for the others."
                )
            if intake.ends_import:
                image = attrs.evolve(
                    image, properties=import_done(image.properties, copies.failed)
                )
            if adjust is not None:
                image = adjust(image)
            data: dict[str, Any] = dict(
                size=blob.size,
                virtual_size=virtual_size,
                checksum=blob.checksum,
                os_hash_algo=blob.hash_algo,
                os_hash_value=blob.hash_value,
                locations=copies.locations,
            )
            if intake.final is intake.receiving:
                # Staged, or fetched for an import's plugins: the data waits for what follows.
                return attrs.evolve(
                    image, updated_at=self.guard.now(),
                    upload_node=claim if intake.keeps_claim else None, **data,
                )
            return transition(image, intake.final, Conflict, self.guard.now(), **data)

        try:
            change = await self.guard.metadata.modify(image_id, finish, name="finish_upload")
        except (Gone, ImageNotFound):
            current = await self.guard.metadata.get(image_id)
            for copy in copies.locations:
                if current is None or (
                    current.status is not intake.receiving
                    and copy.url not in {loc.url for loc in current.locations}
                ):
                    await self.delete_blob(image_id, copy)
            # else another upload holds the image now, and may have published to the same
            # location: the orphan sweep removes the bytes if nothing refers to them.
            raise Gone(f"Image {image_id} was deleted during upload.") from None
        except MetadataUnavailable:
            # Whether the commit happened is unknown (the connection may have gone during
            # it): the repair reads the image once the database answers, and keeps the bytes
            # if the image did become active with them.
            self._repair_later(image_id, claim, copies.locations)
            raise
        except Exception:
            # Refused (a value the database cannot hold, say): nothing was written.
            await self._abandon(image_id, claim, copies.locations, queued_at)
            raise
        self.log.info(
            "image {image_id} is active: {size} bytes, {algo} {digest}",
            image_id=image_id,
            size=blob.size,
            algo=blob.hash_algo,
            digest=blob.hash_value,
        )
        return change.after

    async def _abandon(
        self, image_id: str, claim: str, copies: tuple[Location, ...], queued_at: datetime
    ) -> None:
        """
        After a failed upload: the bytes stored as ``copies`` removed, the image ``queued``
        again if ``claim`` still holds it.  If the metadata database is unavailable, the
        repair goes on in the background and the caller reports its own failure at once.
        """
        for copy in copies:
            await self.delete_blob(image_id, copy)
        try:
            await self.restore(image_id, claim, queued_at)
        except MetadataUnavailable:
            self._repair_later(image_id, claim, ())

    def _repair_later(self, image_id: str, claim: str, copies: tuple[Location, ...]) -> None:
        """Retry ``_repair`` until the database answers (see ``REPAIR_DELAYS``)."""
        if image_id in self.repairs:
            return
        done = ensureDeferred(self._repair_with_retries(image_id, claim, copies))
        self.repairs[image_id] = done

        def forget(_: object) -> None:
            self.repairs.pop(image_id, None)

        done.addBoth(forget)

    async def _repair_with_retries(
        self, image_id: str, claim: str, copies: tuple[Location, ...]
    ) -> None:
        self.log.warn(
            "image {image_id} will be repaired when the metadata database answers again",
            image_id=image_id,
        )
        for attempt in range(REPAIR_ATTEMPTS):
            delay = REPAIR_DELAYS[min(attempt, len(REPAIR_DELAYS) - 1)]
            await deferLater(self.guard.clock, delay, lambda: None)
            try:
                await self._repair(image_id, claim, copies)
            except MetadataUnavailable:
                continue
            except Exception:
                self.log.failure("repairing image {image_id} failed", image_id=image_id)
                return
            self.log.info("image {image_id} repaired after a failed upload", image_id=image_id)
            return
        self.log.error(
            "image {image_id} could not be repaired; recovery will queue it again",
            image_id=image_id,
        )

    async def _repair(self, image_id: str, claim: str, copies: tuple[Location, ...]) -> None:
        """
        Make an interrupted upload's outcome whole: an image still ``saving`` under ``claim``
        goes back to ``queued``; the bytes of ``copies`` are kept if the image refers to them
        (the publishing commit did happen; it may have been deactivated since).
        """
        image = await self.guard.metadata.get(image_id)
        urls = {copy.url for copy in copies}
        if image is not None and urls & {loc.url for loc in image.locations}:
            return
        if image is not None and image.upload_node is not None and image.upload_node != claim:
            return  # another upload holds it now: its bytes may be at the same location
        # Bytes first, then the state: once the image is queued, a new upload may claim it.
        for copy in copies:
            await self.delete_blob(image_id, copy)
        if image is not None and image.upload_node == claim:
            await self.restore(image_id, claim)

    async def restore(
        self, image_id: str, claim: str | None = None, updated_at: datetime | None = None
    ) -> bool:
        """
        Put an image whose upload failed back to ``queued`` (Glance v2's ``_restore``), with
        ``updated_at`` (the time it was queued before: nothing changed) or now.

        Checked inside the transaction: only an image still receiving data (``saving``, or
        staging or importing under a claim) is changed (and, with ``claim``, only if that
        claim still holds it); an import's lock goes with it.  Returns whether it was.
        """

        def back(image: Image, _member: Member | None) -> Image:
            receiving = image.status is Status.SAVING or (
                image.status in RECEIVING and image.upload_node is not None
            )
            if receiving and (claim is None or image.upload_node == claim):
                when = updated_at if updated_at is not None else self.guard.now()
                properties = {
                    k: v for k, v in image.properties.items() if k not in IMPORT_PROPERTIES
                }
                return transition(image, Status.QUEUED, Conflict, when, properties=properties)
            return image

        try:
            change = await self.guard.metadata.modify(image_id, back, name="restore_upload")
        except ImageNotFound:
            return False
        return change.changed

    async def delete_blob(self, image_id: str, location: str | Location) -> None:
        """Remove an image's bytes (a copy, from its recorded store, or an address); a
        failure is logged, not raised (the record is gone)."""
        copy = location if isinstance(location, Location) else Location(location)
        try:
            await self.stores.delete_copy(copy)
        except Exception:
            # Leftover bytes are an operator's cleanup (imaged-manage scrub), not the
            # caller's error.
            store = self.stores.store_of(copy)
            STORE_ERRORS.labels(store.name if store else "unknown", "delete").inc()
            self.log.failure(
                "could not delete data of image {image_id} at {location}",
                image_id=image_id,
                location=location,
            )

    async def download(
        self,
        context: RequestContext,
        image_id: str,
        byte_range: ByteRange | None = None,
        prefer: tuple[str, ...] = (),
    ) -> Download:
        if prefer:
            if not self.stores.multi:
                raise BadRequest("Multi backend is not supported at this site.")
            for name in prefer:
                self.stores.named(name)
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
        producer = await self.open_copy(image, offset, length, prefer)
        if producer is None:
            return Download(image=image, producer=None)
        return Download(
            image=image, producer=producer, offset=offset, length=length,
            ranged=byte_range is not None,
        )

    async def open_copy(
        self, image: Image, offset: int, length: int, prefer: tuple[str, ...]
    ) -> IBodyProducer | None:
        """The best copy that opens: preferred stores, then by weight; a store that fails
        is passed over for the next.  ``None`` when every copy is missing; ``StoreFailure``
        when none is missing but every store holding one failed."""
        failure: StoreFailure | None = None
        for store, location in self.stores.for_reading(image.locations, prefer):
            try:
                return await store.blobs.read(location.url, offset, length)
            except NotFound:
                self.log.error(
                    "data of active image {image_id} is missing at {location}",
                    image_id=image.id, location=location.url,
                )
            except StoreFailure as e:
                failure = e
                STORE_ERRORS.labels(store.name, "read").inc()
                self.log.warn(
                    "store {store} could not serve image {image_id}: {why}; trying the next",
                    store=store.name, image_id=image.id, why=e.message,
                )
        if failure is not None:
            raise failure
        return None


__all__ = [
    "FETCH",
    "FETCH_FOR_PLUGINS",
    "IMPORT_LOCK",
    "IMPORT_PROPERTIES",
    "RECEIVING",
    "REWRITE",
    "STAGE",
    "STAGE_FOR_PLUGINS",
    "UPLOAD",
    "Adjust",
    "Copies",
    "Intake",
    "Uploads",
]
