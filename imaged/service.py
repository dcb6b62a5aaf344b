"""
The image service: ``IImageService``, Glance's rules over a metadata store and a blob store.

``ImageService`` is the facade.  It decides *what* may happen (policy, the status state
machine, defaults) for the operations on image records, and hands data to ``Uploads``, sharing
to ``Members``, limits to ``Quotas`` and json-patch semantics to ``patching``; the stores decide
*how*.  It knows nothing of HTTP: callers hand it a ``RequestContext`` and ``imaged.model``
values.  Time comes from the injected clock.
"""

from __future__ import annotations

import builtins
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from . import policy
from .clock import default_clock
from .context import RequestContext
from .coroutines import deferred
from .errors import BadRequest, Conflict, Forbidden, InUse, NotFound
from .guards import ImageGuard
from .hashing import check_algorithm
from .imports import (
    GLANCE_DOWNLOAD_PROPERTIES,
    IMPLEMENTED_METHODS,
    Fetcher,
    ImportPlugins,
    Imports,
    URIRules,
)
from .interfaces import IBlobStore, IImageService, IMetadataStore, ITaskStore
from .lifecycle import transition
from .logcontext import Logger
from .members import Members
from .model import (
    ByteRange,
    Change,
    CreateImageRequest,
    Download,
    Health,
    Image,
    ImageQuery,
    ImportRequest,
    Location,
    Member,
    MemberStatus,
    Page,
    QuotaUsage,
    Scrubbed,
    Status,
    StoreInfo,
    Task,
    TaskStatus,
    Visibility,
)
from .patching import apply_changes, coerce_base
from .quotas import Limits, Quotas
from .recovery import release_dead_uploads, remove_orphans, scrub
from .stores import Stores
from .uploads import Uploads


def _nothing(_: object) -> None:
    """What operations that answer with nothing fire with."""


#: How often a running node repairs (``ImageService.sweep``), in seconds.
SWEEP_INTERVAL = 30.0
#: A node silent for this long is dead, and so are its uploads (several missed heartbeats).
UPLOAD_LEASE = 120.0
#: Orphan blobs are looked for every this many sweeps (listing a remote store costs), and
#: only those older than ``ORPHAN_MARGIN`` seconds: an upload's blob is published a moment
#: before the transaction that makes its image refer to it.
ORPHAN_SWEEPS = 10
ORPHAN_MARGIN = 3600.0
#: Staged data never imported is removed after this many seconds (``--stage-expiry``).
STAGE_EXPIRY = 86400.0


def node_name() -> str:
    """A name for this process among those sharing a database: host, pid, and a nonce."""
    # At most 49 characters, so that a claim (``<node>#<12 hex>``) fits its 64.
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
        clock: IReactorTime | None = None,
        node: str | None = None,
        rules: policy.Rules = policy.Rules(),
        import_methods: Sequence[str] = IMPLEMENTED_METHODS,
        stage_expiry: float = STAGE_EXPIRY,
        fetcher: Fetcher | None = None,
        uri_rules: URIRules | None = None,
        import_plugins: ImportPlugins = ImportPlugins(),
        remote: Fetcher | None = None,
        download_properties: Sequence[str] = GLANCE_DOWNLOAD_PROPERTIES,
        node_lease: float = UPLOAD_LEASE,
    ) -> None:
        self.metadata = metadata
        #: Seconds of silence after which another node is taken for dead (``sweep``); the
        #: daemon sweeps (and beats) every quarter of it.
        self.node_lease = node_lease
        self.rules = rules
        #: Seconds staged data waits for its import before recovery removes it.
        self.stage_expiry = stage_expiry
        self.hash_algo = check_algorithm(hash_algo)
        self.limits = limits
        self.guard = ImageGuard(metadata, clock if clock is not None else default_clock())
        self.quotas = Quotas(metadata, limits)
        #: This process's name among the nodes sharing the database (see ``sweep``).
        self.node = node if node is not None else node_name()
        self.uploads = Uploads(
            self.guard, blobs, self.quotas, self.hash_algo, require_format_match, self.node
        )
        #: The deployment's stores by name (one unnamed store unless configured).
        self.stores: Stores = self.uploads.stores
        self._sweeps = 0
        self._orphans: Deferred[builtins.list[str]] | None = None
        #: Every blob location the background orphan removal removed (for tests and logs).
        self.orphans_removed: builtins.list[str] = []
        #: The blob store given: every store as one (``Stores``), or the only one.
        self.blobs: IBlobStore = blobs
        self.members = Members(self.guard, self.quotas)
        #: Tasks live in the metadata database (the SQL store is both).
        tasks = ITaskStore(metadata)
        self.imports = Imports(
            self.guard, self.uploads, tasks, import_methods, fetcher, uri_rules, import_plugins,
            remote, download_properties, rules,
        )

    # -- images ---------------------------------------------------------------------------

    @deferred
    async def create(self, context: RequestContext, request: CreateImageRequest) -> Image:
        owner = request.owner if request.owner is not None else context.project_id
        policy.check_create(context, owner)
        visibility = request.visibility or Visibility.SHARED
        policy.check_visibility_change(context, visibility)
        now = self.guard.now()
        image = Image(
            id=request.id or str(uuid.uuid4()),
            status=Status.QUEUED,
            visibility=visibility,
            created_at=now,
            updated_at=now,
            name=request.name,
            owner=owner,
            protected=bool(request.protected),
            os_hidden=bool(request.os_hidden),
            disk_format=request.disk_format,
            container_format=request.container_format,
            min_disk=coerce_base("min_disk", request.min_disk or 0),
            min_ram=coerce_base("min_ram", request.min_ram or 0),
            tags=frozenset(request.tags),
            properties=dict(request.properties),
        )
        self.quotas.check_image(image)
        await self.quotas.check_count(image.owner)
        stored = await self.metadata.insert(image)
        self.log.info("created image {image_id} for {owner}", image_id=stored.id, owner=owner)
        return stored

    def list(self, context: RequestContext, query: ImageQuery) -> Deferred[Page]:
        try:
            policy.check_list(context)
        except Forbidden:
            return fail()
        return self.metadata.list(policy.list_scope(context, query.member_status), query)

    @deferred
    async def get(self, context: RequestContext, image_id: str) -> Image:
        return await self.guard.visible(context, image_id)

    @deferred
    async def update(
        self, context: RequestContext, image_id: str, changes: Sequence[Change]
    ) -> Image:
        def mutate(image: Image) -> Image:
            updated = apply_changes(context, image, changes)
            if updated == image:
                return image
            return self.quotas.check_image(attrs.evolve(updated, updated_at=self.guard.now()))

        change = await self.guard.modify(context, image_id, "modify", mutate, "update_image")
        return change.after

    @deferred
    async def delete(self, context: RequestContext, image_id: str) -> None:
        def mutate(image: Image) -> Image:
            if image.protected:
                raise Forbidden(f"Image {image.id} is protected and cannot be deleted.")
            return transition(image, Status.DELETED, BadRequest, self.guard.now())

        refusing: builtins.list[Location] = []
        if any(store.refuses_deletes for store in self.stores):
            image = await self.guard.visible(context, image_id)
            refusing = self._refusing(image.locations)
        if refusing:
            # A store that may refuse (RBD, while clones of the image exist) goes first, and
            # only once the caller may delete the image: refused, nothing has changed (409).
            def check(current: Image) -> Image:
                mutate(current)
                return current

            await self.guard.modify(context, image_id, "delete", check, "check_delete")
            deleted: builtins.list[Location] = []
            for location in refusing:
                try:
                    await self.stores.delete_copy(location)
                except InUse:
                    # The copies already gone are no longer the image's: the record says so.
                    await self._forget_copies(image_id, deleted)
                    raise
                deleted.append(location)
        change = await self.guard.modify(context, image_id, "delete", mutate, "delete_image")
        self.log.info("deleted image {image_id}", image_id=image_id)
        for location in change.before.locations:
            if location not in refusing:
                await self.uploads.delete_blob(image_id, location)

    async def _forget_copies(self, image_id: str, gone: Sequence[Location]) -> None:
        if not gone:
            return

        def forget(current: Image, _member: Member | None) -> Image:
            kept = tuple(loc for loc in current.locations if loc not in gone)
            if kept == current.locations:
                return current
            return attrs.evolve(current, locations=kept, updated_at=self.guard.now())

        await self.metadata.modify(image_id, forget, name="forget_copies")

    def _refusing(self, locations: Sequence[Location]) -> builtins.list[Location]:
        """The copies in stores that may refuse to delete them (see ``NamedStore``)."""
        found = []
        for location in locations:
            store = self.stores.store_of(location)
            if store is not None and store.refuses_deletes:
                found.append(location)
        return found

    @property
    def store_info(self) -> tuple[StoreInfo, ...]:
        if not self.stores.multi:
            return ()
        stores = sorted(self.stores, key=lambda store: store.name != self.stores.default)
        return tuple(
            StoreInfo(
                id=store.name, description=store.description,
                default=store.name == self.stores.default, type=store.type,
                weight=store.weight, properties=dict(store.properties),
            )
            for store in stores
        )

    def describe_stores(self, context: RequestContext, detail: bool) -> tuple[StoreInfo, ...]:
        if not self.stores.multi:
            raise NotFound("Multi backend is not supported at this site.")
        if detail:
            policy.check_stores_detail(context)
        return self.store_info

    def named_locations(self, locations: Sequence[Location]) -> tuple[Location, ...]:
        return self.stores.named_locations(locations)

    @deferred
    async def delete_from_store(self, context: RequestContext, store: str, image_id: str) -> None:
        """
        ``DELETE /v2/stores/{store}/{image}`` (2.10): remove one copy of an active image's
        data, never the last one (delete the image instead); the codes are Glance's.  The
        record loses the copy first, in the transaction that checks it is not the last (two
        such deletes at once cannot remove both); a store that refuses (``InUse``) gets the
        copy back in the record, and the caller a 409.
        """
        if not self.stores.multi:
            raise NotFound("Multi backend is not supported at this site.")
        if store not in self.stores:
            raise Conflict(f"The selected store {store} is not available on this node.")
        image = await self.guard.visible(context, image_id)
        policy.check_delete_location(context)

        def copy_in_store(current: Image) -> Location:
            if current.status is not Status.ACTIVE:
                raise Conflict(
                    "It's not allowed to remove image data from store if image status is not "
                    "'active'"
                )
            if len(current.locations) <= 1:
                raise Forbidden(
                    "Cannot delete image data from the only store containing it. Consider "
                    "deleting the image instead."
                )
            named = self.stores.named_locations(current.locations)
            for index, location in enumerate(named):
                if location.store == store:
                    return current.locations[index]
            raise NotFound(f"Image {image_id} is not present in store {store}")

        copy_in_store(image)  # the refusals, before a transaction that writes

        def remove(current: Image) -> Image:
            copy = copy_in_store(current)
            return attrs.evolve(
                current, updated_at=self.guard.now(),
                locations=tuple(loc for loc in current.locations if loc != copy),
            )

        change = await self.guard.modify(context, image_id, "delete data of", remove,
                                         "delete_copy")
        [copy] = [loc for loc in change.before.locations if loc not in change.after.locations]
        if self._refusing([copy]):
            try:
                await self.stores.delete_copy(copy)
            except InUse:
                def restore(current: Image, _member: Member | None) -> Image:
                    if copy in current.locations or current.status is Status.DELETED:
                        return current
                    return attrs.evolve(current, locations=current.locations + (copy,))

                await self.metadata.modify(image_id, restore, name="restore_copy")
                raise
        else:
            await self.uploads.delete_blob(image_id, copy)
        self.log.info(
            "removed the copy of image {image_id} in store {store}", image_id=image_id,
            store=store,
        )

    def add_tag(self, context: RequestContext, image_id: str, tag: str) -> Deferred[None]:
        def mutate(image: Image) -> Image:
            if tag in image.tags:
                return image
            tagged = attrs.evolve(image, tags=image.tags | {tag}, updated_at=self.guard.now())
            return self.quotas.check_image(tagged)

        done = self.guard.modify(context, image_id, "update tags for", mutate, "add_tag")
        return done.addCallback(_nothing)

    def remove_tag(self, context: RequestContext, image_id: str, tag: str) -> Deferred[None]:
        def mutate(image: Image) -> Image:
            if tag not in image.tags:
                raise NotFound(f"Tag {tag} not found.")
            return attrs.evolve(image, tags=image.tags - {tag}, updated_at=self.guard.now())

        done = self.guard.modify(context, image_id, "update tags for", mutate, "remove_tag")
        return done.addCallback(_nothing)

    def _switch(
        self, context: RequestContext, image_id: str, action: str, source: Status, target: Status
    ) -> Deferred[None]:
        def mutate(image: Image) -> Image:
            policy.check_deactivate(context, image, action, self.rules)
            if image.status is target:
                return image
            if image.status is not source:
                raise Forbidden(f"Not allowed to {action} image in status '{image.status.value}'")
            return transition(image, target, Forbidden, self.guard.now())

        done = self.guard.modify(context, image_id, action, mutate, f"{action}_image")
        return done.addCallback(_nothing)

    def deactivate(self, context: RequestContext, image_id: str) -> Deferred[None]:
        return self._switch(context, image_id, "deactivate", Status.ACTIVE, Status.DEACTIVATED)

    def reactivate(self, context: RequestContext, image_id: str) -> Deferred[None]:
        return self._switch(context, image_id, "reactivate", Status.DEACTIVATED, Status.ACTIVE)

    # -- data -----------------------------------------------------------------------------

    @deferred
    async def upload(
        self,
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
        store: str | None = None,
    ) -> Image:
        return await self.uploads.upload(context, image_id, producer, size, store=store)

    @deferred
    async def stage(
        self,
        context: RequestContext,
        image_id: str,
        producer: IBodyProducer,
        size: int | None = None,
    ) -> Image:
        return await self.imports.stage(context, image_id, producer, size)

    @deferred
    async def import_image(
        self, context: RequestContext, image_id: str, request: ImportRequest
    ) -> Task:
        return await self.imports.begin(context, image_id, request)

    @property
    def import_methods(self) -> tuple[str, ...]:
        return self.imports.methods

    @deferred
    async def image_tasks(self, context: RequestContext, image_id: str) -> builtins.list[Task]:
        return await self.imports.image_tasks(context, image_id)

    @deferred
    async def list_tasks(
        self,
        context: RequestContext,
        status: TaskStatus | None,
        type: str | None,
        limit: int,
        marker: str | None,
        newest_first: bool,
    ) -> builtins.list[Task]:
        policy.check_tasks_api(context)
        return await self.imports.tasks.list_tasks(
            None, status, type, limit, marker, newest_first
        )

    @deferred
    async def create_task(
        self, context: RequestContext, uri: str, image: CreateImageRequest,
        task_input: Mapping[str, Any],
    ) -> Task:
        """
        Glance's legacy ``import`` task (``POST /v2/tasks``, an administrator's): a new image
        with ``image``'s attributes, its data fetched from ``uri`` as ``web-download`` does.
        """
        policy.check_tasks_api(context)
        request = ImportRequest(method="web-download", uri=uri)
        if "web-download" not in self.imports.methods:
            raise BadRequest("Importing from a URI is not available at this site.")
        self.imports.check_method(request)  # all of it before an image exists
        created = await self.create(context, image)
        try:
            return await self.imports.begin(
                context, created.id, request, task_type="import", task_input=task_input
            )
        except Exception:
            await self.delete(context, created.id)  # nothing is left of a refused task
            raise

    @deferred
    async def get_task(self, context: RequestContext, task_id: str) -> Task:
        policy.check_tasks_api(context)
        return await self.imports.get_task(context, task_id)

    @deferred
    async def download(
        self,
        context: RequestContext,
        image_id: str,
        byte_range: ByteRange | None = None,
        prefer: Sequence[str] = (),
    ) -> Download:
        return await self.uploads.download(context, image_id, byte_range, tuple(prefer))

    # -- members --------------------------------------------------------------------------

    @deferred
    async def add_member(self, context: RequestContext, image_id: str, member_id: str) -> Member:
        return await self.members.add(context, image_id, member_id)

    @deferred
    async def list_members(self, context: RequestContext, image_id: str) -> builtins.list[Member]:
        return await self.members.list(context, image_id)

    @deferred
    async def get_member(self, context: RequestContext, image_id: str, member_id: str) -> Member:
        return await self.members.get(context, image_id, member_id)

    @deferred
    async def update_member(
        self, context: RequestContext, image_id: str, member_id: str, status: MemberStatus
    ) -> Member:
        return await self.members.update(context, image_id, member_id, status)

    @deferred
    async def delete_member(self, context: RequestContext, image_id: str, member_id: str) -> None:
        await self.members.delete(context, image_id, member_id)

    # -- accounting and health ------------------------------------------------------------

    @deferred
    async def usage(self, context: RequestContext) -> QuotaUsage:
        return await self.quotas.usage(context)

    @deferred
    async def health(self) -> Health:
        try:
            await self.metadata.ping()
        except Exception as e:
            self.log.error("health check: the database does not answer: {error}", error=e)
            return Health("DATABASE UNREACHABLE")
        failing = await self.stores.unhealthy()
        for name, why in failing:
            self.log.error("health check: store {store} does not answer: {why}",
                           store=name, why=why)
        if failing and len(failing) == len(self.stores):
            # Nothing can be stored or served.
            return Health("STORE UNAVAILABLE: " + "; ".join(f"{n}: {w}" for n, w in failing))
        # One store down of several still serves (the other copies): said, not failed.
        return Health(notes=tuple(f"store {name}: {why}" for name, why in failing))

    @deferred
    async def recover(self, started_at: float) -> Scrubbed:
        scrubbed = await scrub(
            self.metadata, self.blobs, self.uploads.restore, None, started_at, self.uploads.busy
        )
        await self.imports.end_orphaned(self.node, set, self.guard.now())
        return scrubbed

    @deferred
    async def sweep(self) -> Scrubbed:
        """
        One round of self-repair, run every ``SWEEP_INTERVAL`` seconds by the daemon: this
        node's heartbeat, and dead uploads (this node's or a silent node's) released.  Every
        ``ORPHAN_SWEEPS`` rounds, blobs no image has referred to for ``ORPHAN_MARGIN``
        seconds are removed in the background: listing a large store must not hold up the
        next heartbeat, or other nodes would take this one for dead.  See
        ``imaged.recovery``.
        """
        now = self.guard.now()
        await self.metadata.heartbeat(self.node, now)
        uploads = self.uploads

        def running() -> set[str]:
            return (
                set(uploads.live.values()) | set(uploads.repairs) | self.imports.live_claims()
            )

        reset = await release_dead_uploads(
            self.metadata, uploads.restore, self.node, running,
            now - timedelta(seconds=self.node_lease), now - timedelta(seconds=ORPHAN_MARGIN),
        )
        await self.imports.end_orphaned(
            self.node, running, now - timedelta(seconds=self.node_lease)
        )
        await self.imports.expire_staged(now - timedelta(seconds=self.stage_expiry))
        if self._sweeps % ORPHAN_SWEEPS == ORPHAN_SWEEPS - 1:
            # Finished tasks are kept until their expires_at (Glance's task_time_to_live).
            await self.imports.tasks.purge_tasks(now)
        self._sweeps += 1
        if self._sweeps % ORPHAN_SWEEPS == 0 and self._orphans is None:
            removal = ensureDeferred(self._remove_orphans(now))
            if not removal.called:  # (in-memory stores finish at once)
                self._orphans = removal
        return Scrubbed(reset=reset, removed=[])

    async def _remove_orphans(self, now: datetime) -> builtins.list[str]:
        try:
            removed = await remove_orphans(
                self.metadata, self.blobs, self.guard.clock.seconds() - ORPHAN_MARGIN,
                self.uploads.busy,
            )
            await self.metadata.forget_nodes(now - timedelta(days=1))
        except Exception as e:
            self.log.warn("removing orphan blobs failed: {why}", why=str(e))
            removed = []
        finally:
            self._orphans = None
        self.orphans_removed.extend(removed)
        return removed

    @deferred
    async def scrub(self, saving_since_before: datetime, blobs_before: float) -> Scrubbed:
        """
        What ``imaged-manage scrub`` does on a shared deployment, where other nodes may be
        uploading: images ``saving`` whose record has not changed since before
        ``saving_since_before`` go back to ``queued``; blobs stored before ``blobs_before``
        (seconds since the epoch) that no image refers to are deleted.
        """
        return await scrub(
            self.metadata, self.blobs, self.uploads.restore, saving_since_before, blobs_before
        )


__all__ = ["ImageService", "Limits"]
