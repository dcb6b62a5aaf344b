"""
The interoperable import (API 2.6): staging, ``glance-direct`` and ``web-download``, as tasks.

Why it is built this way:

- Staged data goes to the configured blob store like an upload (same streaming, hashing,
  inspection, cap and quotas), under the image's own name: any node can run the import (no
  ``os_glance_stage_host``, no worker-to-worker proxying as Glance needs), and a
  ``glance-direct`` import only publishes what is already in place: no second pass over the
  data, on any store.
- An import is a task row before it is anything else, and the image holds the task's claim
  (``upload_node``) while it is ``importing``: a node that dies mid-import is found by the
  same recovery that releases dead uploads (``imaged.recovery``), its image goes back to
  ``queued`` and its task ends as ``failure`` with a message: never lost, never run twice.
- ``web-download`` streams the remote body straight into the store through
  ``imaged.fetch`` (SSRF-safe: schemes, hosts, ports and the resolved addresses are
  checked at every redirect), with no staging copy unless a plugin must see the whole data
  first (conversion).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.web.iweb import IBodyProducer

from . import policy
from .context import RequestContext
from .conversion import ConversionLimits, convert
from .decompression import decompresses, decompressing
from .errors import BadRequest, Conflict, ImageServiceError, NotFound
from .guards import ImageGuard
from .interfaces import ITaskStore
from .lifecycle import transition
from .logcontext import Logger
from .model import (
    ContainerFormat,
    DiskFormat,
    Image,
    ImportRequest,
    Location,
    Member,
    Status,
    Task,
    TaskStatus,
    claim_node,
)
from .stores import NamedStore
from .streams import TeeProducer, consume
from .uploads import (
    FETCH,
    FETCH_FOR_PLUGINS,
    IMPORT_LOCK,
    REWRITE,
    STAGE,
    STAGE_FOR_PLUGINS,
    Adjust,
    Formats,
    Uploads,
    import_done,
)

#: Every method Glance names, and those imaged runs (``--enabled-import-methods``).
GLANCE_METHODS = ("glance-direct", "web-download", "copy-image", "glance-download")
IMPLEMENTED_METHODS = GLANCE_METHODS
#: What ``glance-download`` copies from the remote image (Glance's
#: ``glance_download_properties``), besides its disk and container formats.
GLANCE_DOWNLOAD_PROPERTIES = ("hw_*", "trait:*", "os_distro", "os_secure_boot", "os_type")
#: The largest remote image document ``glance-download`` reads.
REMOTE_DOCUMENT_LIMIT = 1024 * 1024
#: Glance's ``api_image_import`` task type, and how long a finished task is kept.
TASK_TYPE = "api_image_import"
TASK_TIME_TO_LIVE = timedelta(hours=48)
#: How often a running import writes its progress to its task.
PROGRESS_INTERVAL = 2.0
#: Glance's import plugins imaged runs (``--import-plugins``), by Glance's names.
PLUGINS = ("image_decompression", "image_conversion", "inject_image_metadata")
#: Disk formats ``image_conversion`` converts from and to (qemu-img's).
CONVERTIBLE = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi")


@attrs.frozen
class ImportPlugins:
    """
    Glance's ``image_import_plugins`` and their options.  They run on every import, in a
    fixed order: ``image_decompression`` (gzip and zip, streamed), ``image_conversion``
    (``qemu-img convert`` to ``output_format``, the result inspected again: the image's
    ``disk_format``, size, checksums and virtual size become the converted data's), then
    ``inject_image_metadata`` (``inject`` properties set on imports by users with none of
    ``ignore_user_roles``).
    """

    names: tuple[str, ...] = ()
    output_format: str = "raw"
    inject: Mapping[str, str] = attrs.field(factory=dict)
    ignore_user_roles: frozenset[str] = frozenset({"admin"})
    #: Where conversion writes its temporary files (a local directory with room).
    workdir: str | None = None
    limits: ConversionLimits = ConversionLimits()

    @property
    def transform(self) -> bool:
        """Whether the data passes through a plugin before it is the image's."""
        return "image_decompression" in self.names or "image_conversion" in self.names

    def injected(self, context: RequestContext) -> dict[str, str]:
        if "inject_image_metadata" not in self.names or not self.inject:
            return {}
        if context.roles & self.ignore_user_roles:
            return {}
        return dict(self.inject)


class _NothingToCopy(Exception):
    """copy-image with ``all_stores`` of an image every store holds already."""


@attrs.frozen
class Into:
    """The stores an import writes to (the default store if none), and whether every one of
    them must succeed (Glance's ``all_stores_must_succeed``)."""

    targets: tuple[NamedStore, ...] = ()
    must_succeed: bool = True


def _names(stores: Sequence[NamedStore]) -> str:
    return ",".join(store.name for store in stores)


class Fetched(Protocol):
    @property
    def producer(self) -> IBodyProducer: ...

    @property
    def length(self) -> int | None: ...

    @property
    def uri(self) -> str: ...


class Fetcher(Protocol):
    """What ``web-download`` needs of ``imaged.fetch.Fetcher``."""

    async def open(
        self, uri: str, headers: Mapping[bytes, bytes] | None = None
    ) -> Fetched: ...


class URIRules(Protocol):
    def check_uri(self, uri: str) -> None: ...


async def spool(producer: IBodyProducer, workdir: str, cap: int) -> str:
    """``producer``'s bytes in a new file under ``workdir`` (written in a thread)."""
    os.makedirs(workdir, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix="imaged-import-", dir=workdir)
    out = os.fdopen(handle, "wb")

    def write(chunk: bytes) -> Deferred[None]:
        return deferToThread(out.write, chunk).addCallback(lambda _: None)

    try:
        await consume(producer, write, cap)
        await deferToThread(out.flush)
    except BaseException:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    out.close()
    return path


def file_producer(path: str) -> IBodyProducer:
    """A local file as a producer (read in bounded chunks by Twisted's cooperator)."""
    from twisted.web.client import FileBodyProducer

    producer: IBodyProducer = FileBodyProducer(open(path, "rb"))
    return producer


def remote_endpoint(catalog: Sequence[Any], region: str, interface: str) -> str | None:
    """The image service's URL in a Keystone v3 catalog (unversioned, no trailing slash)."""
    for service in catalog:
        if not isinstance(service, dict) or service.get("type") != "image":
            continue
        for endpoint in service.get("endpoints") or ():
            if not isinstance(endpoint, dict):
                continue
            where = str(endpoint.get("region_id") or endpoint.get("region") or "")
            if where.lower() != region.lower():
                continue
            if "interface" in endpoint:  # Keystone v3's catalog
                url = endpoint.get("url") if endpoint["interface"] == interface else None
            else:  # v2's, as keystonemiddleware's X-Service-Catalog has it
                url = endpoint.get(f"{interface}URL")
            if url:
                url = str(url).rstrip("/")
                return url[: -len("/v2")] if url.endswith("/v2") else url
    return None


async def read_json(fetched: Fetched, limit: int) -> Any:
    """A fetched body, at most ``limit`` bytes, as JSON (a ``BadRequest`` otherwise)."""
    chunks: list[bytes] = []

    def keep(chunk: bytes) -> Deferred[None]:
        chunks.append(chunk)
        return succeed(None)

    await consume(fetched.producer, keep, limit)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise BadRequest("The remote image service's answer is not JSON.") from None


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def _stopped_on_failure(producer: IBodyProducer) -> Iterator[None]:
    """Stop a fetched body nobody will read to its end (its connection closes with it)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            producer.stopProducing()
        raise


def _container(image: Image) -> str | None:
    return None if image.container_format is None else image.container_format.value


def task_failure_message(error: BaseException) -> str:
    if isinstance(error, ImageServiceError):
        return error.message
    return str(error) or type(error).__name__


class Imports:
    """Staging and imports for the image service."""

    log = Logger()

    def __init__(
        self,
        guard: ImageGuard,
        uploads: Uploads,
        tasks: ITaskStore,
        methods: Sequence[str] = IMPLEMENTED_METHODS,
        fetcher: Fetcher | None = None,
        uri_rules: URIRules | None = None,
        plugins: ImportPlugins = ImportPlugins(),
        remote: Fetcher | None = None,
        download_properties: Sequence[str] = GLANCE_DOWNLOAD_PROPERTIES,
        rules: policy.Rules = policy.Rules(),
    ) -> None:
        self.guard = guard
        self.rules = rules
        #: What fetches from another region's image service (``glance-download``): its
        #: endpoint comes from Keystone's catalog, the operator's, not from the caller.
        self.remote = remote
        self.download_properties = tuple(download_properties)
        self.plugins = plugins
        self.uploads = uploads
        self.tasks = tasks
        # web-download and glance-download need something to fetch with, and copy-image
        # more than one store: without, they are not offered.
        self.methods = tuple(
            m for m in methods
            if (m != "web-download" or fetcher is not None)
            and (m != "glance-download" or remote is not None)
            and (m != "copy-image" or uploads.stores.multi)
        )
        self.fetcher = fetcher
        self.uri_rules = uri_rules
        #: Imports this process runs, by task id (tests wait on them), and their claims.
        self.running: dict[str, Deferred[None]] = {}
        self.claims: dict[str, str] = {}

    @property
    def clock(self) -> IReactorTime:
        return self.guard.clock

    @property
    def processes(self) -> Any:
        """What runs ``qemu-img``: the reactor (the service's clock may be a test's)."""
        from twisted.internet import reactor

        return reactor

    # -- stage ----------------------------------------------------------------------------

    async def stage(
        self, context: RequestContext, image_id: str, producer: IBodyProducer, size: int | None
    ) -> Image:
        if "glance-direct" not in self.methods:
            raise NotFound("'glance-direct' method is not available at this site.")
        intake = STAGE_FOR_PLUGINS if self.plugins.transform else STAGE
        return await self.uploads.upload(context, image_id, producer, size, intake)

    # -- import ---------------------------------------------------------------------------

    def check_method(self, request: ImportRequest) -> None:
        if request.method not in self.methods:
            raise BadRequest(f"Import method {request.method} is not valid at this site.")
        if request.method == "web-download":
            if not request.uri:
                raise BadRequest("URI for web-download does not pass filtering: no uri given")
            if self.uri_rules is not None:
                self.uri_rules.check_uri(request.uri)
        if request.method == "glance-download":
            if not request.glance_image_id or not request.glance_region:
                raise BadRequest(
                    "glance-download needs 'glance_image_id' and 'glance_region'."
                )
            try:
                uuid.UUID(request.glance_image_id)
            except ValueError:
                raise BadRequest("Requested image id does not look like a UUID.") from None

    def targets(self, request: ImportRequest, image: Image | None = None) -> tuple[NamedStore, ...]:
        """
        The stores an import writes to: those named (409 for one not configured, as Glance),
        every store with ``all_stores``, else the default.  For ``copy-image``, the stores
        ``image`` is not in yet (400 for one named that holds it already).
        """
        stores = self.uploads.stores
        if not stores.multi:
            return (stores.target(None),)
        if request.all_stores:
            names: tuple[str, ...] = stores.names
        elif request.stores:
            names = tuple(dict.fromkeys(request.stores))
            for name in names:
                if name not in stores:
                    raise Conflict(f"Store {name} is not available on this node.")
        else:
            names = (stores.default,)
        if request.method == "copy-image" and image is not None:
            holding = {loc.store for loc in stores.named_locations(image.locations)}
            if not request.all_stores:
                for name in names:
                    if name in holding:
                        raise BadRequest(f"Image is already present at store '{name}'.")
            # With all_stores, what is there already is skipped (nothing left: a task that
            # has nothing to do, as Glance's).
            names = tuple(name for name in names if name not in holding)
        # Written at the same time, the copies have no order of their own: by name, as
        # tempest's waiters compare an image's ``stores`` with the sorted store ids.
        return tuple(stores.named(name) for name in sorted(names))

    async def begin(
        self,
        context: RequestContext,
        image_id: str,
        request: ImportRequest,
        task_type: str = TASK_TYPE,
        task_input: Mapping[str, Any] | None = None,
    ) -> Task:
        """
        Check and lock the image for ``request`` and record its task; the work runs in the
        background (``running``).  The codes are Glance's: 400 for the request, 404/403 for
        the image, 409 for its state.
        """
        self.check_method(request)
        targets = self.targets(request)  # unknown stores: before anything is recorded
        if request.method == "copy-image":
            return await self._begin_copy(context, image_id, request, task_type, task_input)
        now = self.guard.now()
        claim = self.uploads.new_claim()
        task_id = str(uuid.uuid4())
        direct = request.method == "glance-direct"
        # The task first: if recording it fails, nothing has happened to the image (staged
        # data included); if the image then refuses the lock, the task goes again.
        task = Task(
            id=task_id,
            type=task_type,
            status=TaskStatus.PENDING,
            owner=context.project_id,
            created_at=now,
            updated_at=now,
            image_id=image_id,
            input=task_input if task_input is not None
            else _task_input(image_id, request, targets),
            request_id=context.request_id,
            user_id=context.user_id,
            node=claim,
        )
        stale = await self.stale_lock(image_id)
        await self.tasks.insert_task(task)

        def lock(image: Image) -> Image:
            if IMPORT_LOCK in image.properties and image.properties[IMPORT_LOCK] != stale:
                raise Conflict(
                    f"Image {image.id} has active task {image.properties[IMPORT_LOCK]}"
                )
            if image.status is Status.ACTIVE:
                raise Conflict("Image has already been imported.")
            if direct and (
                image.status is not Status.UPLOADING
                or image.location is None
                or image.upload_node is not None  # still arriving, or being expired
            ):
                raise Conflict(
                    f"Image {image.id} is not ready for import with glance-direct: "
                    f"its status is {image.status.value} (stage its data first)."
                )
            if not direct and image.status is not Status.QUEUED:
                raise Conflict(
                    f"Image {image.id} is not ready for import with {request.method}: "
                    f"its status is {image.status.value}, not queued."
                )
            if image.disk_format is None or image.container_format is None:
                raise Conflict(
                    "'disk_format' and 'container_format' must be set prior to import."
                )
            properties = {
                **image.properties,
                IMPORT_LOCK: task_id,
                "os_glance_importing_to_stores": _names(targets),
                "os_glance_failed_import": "",
            }
            return transition(
                image, Status.IMPORTING, Conflict, now, upload_node=claim, properties=properties
            )

        try:
            change = await self.guard.modify(context, image_id, "import", lock, "start_import")
        except Exception:
            await self.tasks.delete_task(task_id)
            raise
        self.log.info(
            "import of image {image_id} by {method} started as task {task_id}",
            image_id=image_id, method=request.method, task_id=task_id,
        )
        inject = self.plugins.injected(context)
        self._start(task, claim, self._run(task, change.after, request, inject, context, targets))
        return task

    def _start(self, task: Task, claim: str, work: Any) -> None:
        """Run an import's work in the background, known to this process until it ends."""
        task_id = task.id
        self.claims[task_id] = claim
        done = ensureDeferred(work)
        if not done.called:
            self.running[task_id] = done

            def forget(_: object) -> None:
                self.running.pop(task_id, None)
                self.claims.pop(task_id, None)

            done.addBoth(forget)
        else:
            self.claims.pop(task_id, None)

    # -- copy-image ---------------------------------------------------------------------------

    async def _begin_copy(
        self,
        context: RequestContext,
        image_id: str,
        request: ImportRequest,
        task_type: str,
        task_input: Mapping[str, Any] | None,
    ) -> Task:
        """
        ``copy-image``: an active image's data copied to more stores.  The image stays
        ``active`` (and downloadable) throughout; the task's claim is in the task, the lock
        in ``os_glance_import_task`` (a dead node's is released by ``end_orphaned``).
        """
        image = await self.guard.visible(context, image_id)
        policy.check_copy(context, image, self.rules)
        if image.status is not Status.ACTIVE:
            raise Conflict(
                f"Image {image_id} is not active; only active images can be copied "
                f"(its status is {image.status.value})."
            )
        targets = self.targets(request, image)
        now = self.guard.now()
        claim = self.uploads.new_claim()
        task = Task(
            id=str(uuid.uuid4()), type=task_type, status=TaskStatus.PENDING,
            owner=context.project_id, created_at=now, updated_at=now, image_id=image_id,
            input=task_input if task_input is not None
            else _task_input(image_id, request, targets),
            request_id=context.request_id, user_id=context.user_id, node=claim,
        )
        stale = await self.stale_lock(image_id)
        await self.tasks.insert_task(task)

        def lock(current: Image) -> Image:
            if IMPORT_LOCK in current.properties and current.properties[IMPORT_LOCK] != stale:
                raise Conflict(
                    f"Image {current.id} has active task {current.properties[IMPORT_LOCK]}"
                )
            if current.status is not Status.ACTIVE:
                raise Conflict(f"Image {current.id} is not active; it cannot be copied.")
            if current.locations != image.locations:
                raise Conflict(f"The data of image {current.id} changed; try again.")
            return attrs.evolve(current, updated_at=now, properties={
                **current.properties,
                IMPORT_LOCK: task.id,
                "os_glance_importing_to_stores": _names(targets),
                "os_glance_failed_import": "",
            })

        try:
            change = await self.guard.modify(context, image_id, "import", lock, "start_copy")
        except Exception:
            await self.tasks.delete_task(task.id)
            raise
        self.log.info(
            "copy of image {image_id} to {stores} started as task {task_id}",
            image_id=image_id, stores=_names(targets), task_id=task.id,
        )
        self._start(task, claim, self._copy(task, change.after, targets, request))
        return task

    async def _copy(
        self, task: Task, image: Image, targets: tuple[NamedStore, ...], request: ImportRequest
    ) -> None:
        """Read the best copy once, write every target store at once, check the bytes are
        the image's (size and both digests), and record the new copies."""
        made: tuple[tuple[NamedStore, Any], ...] = ()
        failed: tuple[str, ...] = ()
        try:
            await self._update(task.id, status=TaskStatus.PROCESSING, total=image.size)
            assert image.size is not None
            if not targets:
                await self._release_copy(task, "")
                raise _NothingToCopy()
            producer = await self.uploads.open_copy(image, 0, image.size, ())
            if producer is None:
                raise Conflict(f"The data of image {image.id} is missing from every store.")
            # The orphan sweep (on any node) keeps what this writes while the image holds
            # the copy's lock (``recovery._being_copied``).
            copies = await self.uploads.write_copies(
                image.id, producer, targets, image.size, request.all_stores_must_succeed
            )
            made, failed = copies.made, copies.failed
            blob = copies.blob
            if (blob.size, blob.checksum) != (image.size, image.checksum) or (
                blob.hash_algo == image.os_hash_algo and blob.hash_value != image.os_hash_value
            ):
                raise Conflict(
                    f"The data read for image {image.id} does not match its checksums; "
                    "no copy was kept."
                )
            added = copies.locations

            def record(current: Image, _member: Member | None) -> Image:
                if current.status not in (Status.ACTIVE, Status.DEACTIVATED) or (
                    current.properties.get(IMPORT_LOCK) != task.id
                ):
                    raise Conflict(f"Image {image.id} changed during the copy.")
                return attrs.evolve(
                    current, updated_at=self.guard.now(),
                    properties=import_done(current.properties, failed),
                    locations=current.locations + added,
                )

            await self.guard.metadata.modify(image.id, record, name="finish_copy")
        except _NothingToCopy:
            await self._update(
                task.id, status=TaskStatus.SUCCESS, result={"image_id": image.id},
                done=0, total=0, expires_at=self.guard.now() + TASK_TIME_TO_LIVE,
            )
            return
        except Exception as e:
            await self._discard_copies(image.id, made)
            message = task_failure_message(e)
            self.log.warn(
                "copy of image {image_id} (task {task_id}) failed: {why}",
                image_id=image.id, task_id=task.id, why=message,
            )
            await self._release_copy(task, _names(targets))
            await self._update(
                task.id, status=TaskStatus.FAILURE, message=message,
                expires_at=self.guard.now() + TASK_TIME_TO_LIVE,
            )
            return
        await self._update(
            task.id, status=TaskStatus.SUCCESS, result={"image_id": image.id},
            done=image.size or 0, total=image.size,
            expires_at=self.guard.now() + TASK_TIME_TO_LIVE,
        )
        self.log.info(
            "copy of image {image_id} (task {task_id}) to {stores} succeeded",
            image_id=image.id, task_id=task.id,
            stores=",".join(store.name for store, _blob in made),
        )

    async def _discard_copies(
        self, image_id: str, made: tuple[tuple[NamedStore, Any], ...]
    ) -> None:
        """The copies a failed copy made, removed unless the image refers to them (its
        record may have been written after all, or a later copy put the same address
        there); when the database cannot say, they stay for the orphan sweep."""
        if not made:
            return
        try:
            current = await self.guard.metadata.get(image_id)
        except Exception:
            self.log.warn("copies of image {image_id} are left to the orphan sweep",
                          image_id=image_id)
            return
        referenced = {loc.url for loc in current.locations} if current is not None else set()
        for store, blob in made:
            if blob.location not in referenced:
                await self.uploads.delete_blob(image_id, Location(blob.location, store.name))

    async def stale_lock(self, image_id: str) -> str | None:
        """The import lock of an image whose task is gone or finished (its process died
        between the two, say): a new import may take it over, as Glance's lock-busting."""
        image = await self.guard.metadata.get(image_id)
        lock = image.properties.get(IMPORT_LOCK) if image is not None else None
        if lock is None:
            return None
        task = await self.tasks.get_task(lock)
        return lock if task is None or task.finished else None

    async def _release_copy(self, task: Task, failed: str) -> None:
        """A copy that ended without its result: the image's lock released, the stores it
        did not reach named in ``os_glance_failed_import``.  The image is untouched else."""
        if task.image_id is None:
            return

        def release(current: Image, _member: Member | None) -> Image:
            if current.properties.get(IMPORT_LOCK) != task.id:
                return current
            properties = import_done(current.properties, [failed] if failed else [])
            return attrs.evolve(current, updated_at=self.guard.now(), properties=properties)

        try:
            await self.guard.metadata.modify(task.image_id, release, name="release_copy")
        except NotFound:
            pass
        except Exception:
            self.log.failure("could not release image {image_id}", image_id=task.image_id)

    def live_claims(self) -> set[str]:
        """The claims of the imports this process runs: not for recovery to release."""
        return set(self.claims.values())

    async def _run(
        self,
        task: Task,
        importing: Image,
        request: ImportRequest,
        inject: dict[str, str],
        context: RequestContext,
        targets: tuple[NamedStore, ...] = (),
    ) -> None:
        claim = importing.upload_node
        assert claim is not None
        into = Into(targets, request.all_stores_must_succeed)

        def adjust(image: Image) -> Image:
            if not inject:
                return image
            return attrs.evolve(image, properties={**image.properties, **inject})

        try:
            await self._update(task.id, status=TaskStatus.PROCESSING)
            if request.method == "glance-direct":
                staged = self.uploads.stores.store_of(importing.locations[0])
                in_place = len(targets) == 1 and staged is not None and (
                    targets[0].name == staged.name and staged.overwrites
                )
                if self.plugins.transform or not in_place:
                    image = await self._transform(importing, claim, adjust, into=into)
                else:
                    image = await self._publish_staged(importing, claim, adjust)
            elif request.method == "glance-download":
                image = await self._glance_download(
                    importing, claim, request, adjust, context, into
                )
            else:
                image = await self._web_download(task, importing, claim, request, adjust, into)
        except Exception as e:
            message = task_failure_message(e)
            self.log.warn(
                "import of image {image_id} (task {task_id}) failed: {why}",
                image_id=importing.id, task_id=task.id, why=message,
            )
            await self._fail(task, importing, claim, message)
            return
        await self._update(
            task.id,
            status=TaskStatus.SUCCESS,
            result={"image_id": image.id},
            done=image.size or 0,
            total=image.size,
            expires_at=self.guard.now() + TASK_TIME_TO_LIVE,
        )
        self.log.info(
            "import of image {image_id} (task {task_id}) succeeded",
            image_id=image.id, task_id=task.id,
        )

    async def _publish_staged(self, importing: Image, claim: str, adjust: Adjust) -> Image:
        """``glance-direct``: the staged data is the image's data already; make it active."""

        def finish(image: Image, _member: Member | None) -> Image:
            if image.status is not Status.IMPORTING or image.upload_node != claim:
                raise Conflict(f"Image {image.id} changed status during import.")
            image = adjust(image)
            properties = import_done(image.properties)
            return transition(
                image, Status.ACTIVE, Conflict, self.guard.now(), properties=properties
            )

        change = await self.guard.metadata.modify(importing.id, finish, name="finish_import")
        return change.after

    async def _web_download(
        self,
        task: Task,
        importing: Image,
        claim: str,
        request: ImportRequest,
        adjust: Adjust,
        into: Into,
    ) -> Image:
        if self.fetcher is None or request.uri is None:
            raise BadRequest("web-download is not available at this site.")
        fetched = await self.fetcher.open(request.uri)
        received = [0]

        def count(chunk: bytes) -> None:
            received[0] += len(chunk)

        progress = LoopingCall(
            lambda: self._progress(task.id, received[0], fetched.length)
        )
        progress.clock = self.clock
        progress.start(PROGRESS_INTERVAL, now=False)
        try:
            with _stopped_on_failure(fetched.producer):
                return await self._fetched(importing, claim, fetched, count, adjust, into)
        finally:
            progress.stop()

    async def _fetched(
        self,
        importing: Image,
        claim: str,
        fetched: Fetched,
        count: Callable[[bytes], None],
        adjust: Adjust,
        into: Into,
    ) -> Image:
        """A web-download's body into the image, through the plugins that apply."""
        producer: IBodyProducer = TeeProducer(fetched.producer, count)
        if "image_conversion" in self.plugins.names:
            # Converting needs the whole data first: fetched, then transformed.
            held = await self.uploads.receive(
                importing, claim, importing.updated_at, producer, fetched.length,
                FETCH_FOR_PLUGINS,
            )
        elif "image_decompression" in self.plugins.names and decompresses(
            _container(importing)
        ):
            # Decompressed as it arrives: one pass, the result inspected and stored.
            # Bombs stop at the size cap; no ratio limit, as a mostly empty disk inflates
            # past any ratio a bomb check could set.
            cap = self.uploads.quotas.limits.image_size_cap
            return await self.uploads.receive(
                importing, claim, importing.updated_at,
                decompressing(producer, max_output=cap, max_ratio=None), None, FETCH,
                adjust, targets=into.targets, must_succeed=into.must_succeed,
            )
        else:
            return await self.uploads.receive(
                importing, claim, importing.updated_at, producer, fetched.length, FETCH,
                adjust, targets=into.targets, must_succeed=into.must_succeed,
            )
        return await self._transform(held, claim, adjust, into=into)

    async def _glance_download(
        self,
        importing: Image,
        claim: str,
        request: ImportRequest,
        adjust: Adjust,
        context: RequestContext,
        into: Into,
    ) -> Image:
        """
        ``glance-download``: another region's image (found in the caller's Keystone catalog,
        fetched with the caller's token, as Glance does) becomes this image: its data through
        the upload pipeline, its formats and the properties ``download_properties`` match.
        """
        assert self.remote is not None and request.glance_image_id and request.glance_region
        base = remote_endpoint(
            context.service_catalog, request.glance_region, request.glance_service_interface
        )
        if base is None:
            raise BadRequest(
                f"No image service in region '{request.glance_region}' with interface "
                f"'{request.glance_service_interface}' in the caller's catalog."
            )
        headers = {b"X-Auth-Token": (context.auth_token or "").encode("latin-1", "replace"),
                   b"Accept": b"application/json"}
        path = f"{base}/v2/images/{request.glance_image_id}"
        document = await read_json(await self.remote.open(path, headers), REMOTE_DOCUMENT_LIMIT)
        if not isinstance(document, dict) or document.get("status") != "active":
            raise Conflict(f"The remote image {request.glance_image_id} is not active.")
        try:
            disk = DiskFormat(document["disk_format"])
            container = ContainerFormat(document["container_format"])
        except (KeyError, ValueError):
            raise BadRequest("The remote image has no disk and container format imaged "
                             "knows.") from None
        copied = {
            key: value for key, value in document.items()
            if isinstance(value, str) and any(
                fnmatch.fnmatchcase(key, pattern) for pattern in self.download_properties
            )
        }

        def copy(image: Image) -> Image:
            image = attrs.evolve(
                image, disk_format=disk, container_format=container,
                properties={**image.properties, **copied},
            )
            return adjust(image)

        data = await self.remote.open(f"{path}/file", {b"X-Auth-Token": headers[b"X-Auth-Token"]})
        saving = attrs.evolve(importing, disk_format=disk, container_format=container)
        claimed = (importing.disk_format, importing.container_format)
        with _stopped_on_failure(data.producer):
            if self.plugins.transform:
                held = await self.uploads.receive(
                    saving, claim, importing.updated_at, data.producer, data.length,
                    FETCH_FOR_PLUGINS, formats=claimed,
                )
            else:
                return await self.uploads.receive(
                    saving, claim, importing.updated_at, data.producer, data.length, FETCH,
                    copy, formats=claimed, targets=into.targets,
                    must_succeed=into.must_succeed,
                )
        # The plugins see the remote formats; the local image takes them at the end.
        return await self._transform(
            attrs.evolve(held, disk_format=disk, container_format=container), claim, copy,
            formats=(held.disk_format, held.container_format), into=into,
        )

    async def _transform(
        self,
        importing: Image,
        claim: str,
        adjust: Adjust,
        formats: Formats | None = None,
        into: Into | None = None,
    ) -> Image:
        """
        The data at ``importing.location`` (staged, or fetched) stored anew in the import's
        stores (``into``) through the upload pipeline (hashes, inspection, cap), which makes
        the image active, on the way through the import plugins that rewrite data:
        decompressed as it is read, converted through a local file.  The data it came from is
        removed either way, unless it is where the result went.
        """
        into = into or Into()
        source = importing.location
        assert source is not None
        plugins = self.plugins
        spooled: list[str] = []
        try:
            producer: IBodyProducer = await self.uploads.blobs.read(source)
            cap = self.uploads.quotas.limits.image_size_cap
            if "image_decompression" in plugins.names and decompresses(_container(importing)):
                producer = decompressing(producer, max_output=cap, max_ratio=None)
            disk_format = importing.disk_format
            size: int | None = None
            if (
                "image_conversion" in plugins.names
                and disk_format is not None
                and disk_format.value != plugins.output_format
                and disk_format.value in CONVERTIBLE
            ):
                workdir = plugins.workdir or tempfile.gettempdir()
                path = await spool(producer, workdir, cap)
                spooled.append(path)
                converted = await convert(
                    self.processes, path, disk_format.value, plugins.output_format, workdir,
                    plugins.limits,
                )
                if converted is not None:
                    spooled.append(converted.path)
                    producer = file_producer(converted.path)
                    size = converted.size
                    disk_format = DiskFormat(plugins.output_format)
                else:
                    producer = file_producer(path)
            target_format = disk_format

            def adjusted(image: Image) -> Image:
                return adjust(attrs.evolve(image, disk_format=target_format))

            image = await self.uploads.receive(
                attrs.evolve(importing, disk_format=target_format), claim,
                importing.updated_at, producer, size, REWRITE, adjusted,
                formats=formats or (importing.disk_format, importing.container_format),
                targets=into.targets, must_succeed=into.must_succeed,
            )
        except BaseException:
            await self.uploads.delete_blob(importing.id, source)
            raise
        finally:
            for path in spooled:
                await deferToThread(_unlink, path)
        # A store that names data after its image (the file store) wrote over the source:
        # only a source elsewhere is removed.
        if source not in {location.url for location in image.locations}:
            await self.uploads.delete_blob(importing.id, source)
        return image

    def _progress(self, task_id: str, done: int, total: int | None) -> Deferred[None]:
        def ignore(_: object) -> None:
            return None

        def set_progress(task: Task) -> Task:
            return attrs.evolve(task, done=done, total=total)

        return self.tasks.modify_task(task_id, set_progress).addBoth(ignore)

    async def _fail(self, task: Task, importing: Image, claim: str, message: str) -> None:
        """The image back to ``queued`` (as Glance), its data gone; the task says why."""
        try:
            current = await self.guard.metadata.get(importing.id)
            if current is not None and current.upload_node == claim and current.location:
                await self.uploads.delete_blob(importing.id, current.location)
            await self.uploads.restore(importing.id, claim)
        except Exception:
            self.log.failure("could not put image {image_id} back", image_id=importing.id)
        try:
            await self._update(
                task.id,
                status=TaskStatus.FAILURE,
                message=message,
                expires_at=self.guard.now() + TASK_TIME_TO_LIVE,
            )
        except Exception:
            self.log.failure("could not record the failure of task {task_id}", task_id=task.id)

    async def _update(self, task_id: str, **changes: Any) -> Task:
        now = self.guard.now()

        def apply(task: Task) -> Task:
            return attrs.evolve(task, updated_at=now, **changes)

        return await self.tasks.modify_task(task_id, apply)

    # -- recovery -------------------------------------------------------------------------

    async def expire_staged(self, before: datetime) -> list[str]:
        """
        Staged data never imported: images ``uploading`` with data, unchanged since
        ``before``, lose it and are ``queued`` again (``--stage-expiry``).  Returns their ids.
        """
        expired = []
        for image_id in await self.guard.metadata.ids_with_status(Status.UPLOADING):
            image = await self.guard.metadata.get(image_id)
            if image is None or image.upload_node is not None or image.location is None:
                continue  # being staged right now, or nothing kept
            if image.updated_at >= before:
                continue
            location = image.location
            claim = self.uploads.new_claim()

            def take(current: Image, _member: Member | None, location: str = location,
                     claim: str = claim) -> Image:
                # Held under a claim of ours first: no import (which needs a staged image
                # no one holds) and no new staging can begin while the data goes.
                if current.status is not Status.UPLOADING or current.location != location or (
                    current.upload_node is not None or current.updated_at >= before
                ):
                    return current  # imported, staged again or touched meanwhile
                return attrs.evolve(current, upload_node=claim)

            change = await self.guard.metadata.modify(image_id, take, name="expire_stage")
            if change.after.upload_node != claim:
                continue
            await self.uploads.delete_blob(image_id, location)
            await self.uploads.restore(image_id, claim)
            expired.append(image_id)
            self.log.warn(
                "staged data of image {image_id} was never imported; it is removed and "
                "the image queued again", image_id=image_id,
            )
        return expired

    async def end_orphaned(
        self,
        node: str,
        running: Callable[[], set[str]],
        dead_before: datetime | None = None,
    ) -> list[str]:
        """
        Fail the tasks no one runs any more: their image is not importing under their claim
        (recovery queued it again after its node died), or this node's claim with no import
        of it running here.  A copy (the image stays active, locked by the task) is released
        when its node is this one and does not run it, or was last heard of before
        ``dead_before``.  Returns their ids.
        """
        ended = []
        for task, seen in await self.tasks.unfinished_tasks():
            if task.id in self.running or task.image_id is None:
                continue
            image = await self.guard.metadata.get(task.image_id)
            copying = image is not None and image.status is not Status.IMPORTING and (
                image.properties.get(IMPORT_LOCK) == task.id
            )
            if copying and task.node is not None:
                mine = claim_node(task.node) == node
                dead = dead_before is not None and (seen is None or seen < dead_before)
                if (mine and task.node in running()) or (not mine and not dead):
                    continue
                assert image is not None
                await self._release_copy(
                    task, image.properties.get("os_glance_importing_to_stores", "")
                )
            held = image is not None and image.status is Status.IMPORTING and (
                image.upload_node == task.node
            )
            if held:
                assert task.node is not None
                if claim_node(task.node) != node or task.node in running():
                    continue  # running here, or another node's (released when it dies)
                await self.uploads.restore(task.image_id, task.node)
            now = self.guard.now()

            def interrupted(current: Task, seen: Task = task, now: datetime = now) -> Task:
                # Only if nothing happened to it since it was read: its node may have just
                # finished it (the image went active between our two reads).
                if current.finished or current.node != seen.node:
                    return current
                return attrs.evolve(
                    current, status=TaskStatus.FAILURE, updated_at=now,
                    message="The import was interrupted: the imaged process running it "
                    "stopped.",
                    expires_at=now + TASK_TIME_TO_LIVE,
                )

            result = await self.tasks.modify_task(task.id, interrupted)
            if result.status is not TaskStatus.FAILURE or result.updated_at != now:
                continue  # finished meanwhile by its own node
            ended.append(task.id)
            self.log.warn(
                "import task {task_id} of image {image_id} was interrupted; it failed",
                task_id=task.id, image_id=task.image_id,
            )
        return ended

    # -- reading tasks --------------------------------------------------------------------

    async def image_tasks(self, context: RequestContext, image_id: str) -> list[Task]:
        await self.guard.visible(context, image_id)
        return await self.tasks.image_tasks(image_id)

    async def get_task(self, context: RequestContext, task_id: str) -> Task:
        task = await self.tasks.get_task(task_id)
        if task is None or not (context.is_admin or task.owner == context.project_id):
            raise NotFound(f"Task with identifier {task_id} not found")
        return task


def _task_input(
    image_id: str, request: ImportRequest, targets: Sequence[NamedStore] = ()
) -> Mapping[str, Any]:
    method: dict[str, Any] = {"name": request.method}
    if request.uri is not None:
        method["uri"] = request.uri
    if request.method == "glance-download":
        method.update(
            glance_image_id=request.glance_image_id,
            glance_region=request.glance_region,
            glance_service_interface=request.glance_service_interface,
        )
    import_req: dict[str, Any] = {"method": method}
    if request.stores:
        import_req["stores"] = list(request.stores)
    if request.all_stores:
        import_req["all_stores"] = True
        import_req["all_stores_must_succeed"] = request.all_stores_must_succeed
    return {
        "image_id": image_id,
        "import_req": import_req,
        "backend": [store.name for store in targets] if len(targets) > 1 or request.stores
        or request.all_stores else None,
    }


def parse_methods(text: str) -> tuple[str, ...]:
    """``--enabled-import-methods``: Glance's names; those imaged does not run are refused."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in GLANCE_METHODS:
            raise ValueError(f"'{name}' is not an import method ({', '.join(GLANCE_METHODS)})")
    return names


__all__ = [
    "IMPLEMENTED_METHODS",
    "ImportRequest",
    "Imports",
    "parse_methods",
]
