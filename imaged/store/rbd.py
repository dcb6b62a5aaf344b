"""
Image bytes in a Ceph RBD pool, laid out exactly as glance_store lays them.

Why that layout: Nova and Cinder on the same Ceph cluster do not download an image they can
clone.  They parse its location, ``rbd://<fsid>/<pool>/<image>/snap`` (each part quoted as
``urllib.parse.quote(part, "")``), and when the fsid is their own cluster's they make a
copy-on-write clone of ``pool/image@snap``.  So each Glance image is one format-2 RBD image
named by the image id, with the ``layering`` feature, objects of ``chunk_size`` bytes
(order = log2 of it) and a protected snapshot named ``snap``, as glance_store makes them.

How an upload goes: into a temporary image ``<id>.partial-<uuid>``, created empty and grown by a
doubling amount as data arrives (per upload; never past a declared length the data has not
passed), trimmed to the bytes received, snapshotted, the snapshot protected, then renamed to
``<id>``: snapshots and their protection travel with the rename, so an image named by an id is
always complete.  Any failure (a cancelled write too) removes the partial image.  The data goes
in chunk-aligned writes of ``chunk_size`` bytes, several at once in the store's threads
(disjoint offsets), while md5 and the multihash are computed in the hashing threads; ``consume``
pauses the client when the writes fall behind.  A download opens the snapshot read-only and
reads chunk-aligned pieces, one ahead of the consumer.  Deleting follows glance_store: unprotect
the snapshot (refused while clones exist: ``InUse``, and nothing is changed), remove it, remove
the image.

Every librados and librbd call runs in the store's threads, never in the reactor's.  Ceph's
Python bindings are not on PyPI: they come from Debian (python3-rados, python3-rbd) and are
imported when a store is made, so this module imports without them; a virtualenv that lacks
them (imaged's Debian package, built on Debian's python3) gets Debian's two extension modules
loaded by path when their ABI is the interpreter's.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import sysconfig
import threading
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from ..coroutines import deferred
from ..errors import Duplicate, ImageServiceError, InUse, NotFound, StoreFailure, TooLarge
from ..hashing import Digests, HashingLanes
from ..interfaces import IBlobStore
from ..logcontext import Logger
from ..model import StoredBlob
from ..streams import ChunkProducer, consume
from ..threads import ThreadRunner, all_done
from .http import Gather, Shared

T = TypeVar("T")

#: glance_store's snapshot name (``DEFAULT_SNAPNAME``): Nova and Cinder clone ``image@snap``.
SNAPSHOT = "snap"

#: What marks a temporary image: ``<image id>.partial-<uuid>``.
PARTIAL = ".partial-"

#: Where Debian's python3-rados and python3-rbd put their extension modules.
DEBIAN_BINDINGS = "/usr/lib/python3/dist-packages"

#: How many chunks a download reads ahead of its consumer.
READ_AHEAD = 1

#: The most an image grows by at once as an upload's data arrives (glance_store's bound).
MAX_GROWTH = 8 * 1024**3

_MISSING = "the rbd store needs Ceph's Python bindings: apt install python3-rbd python3-rados"


class RBDUnavailable(Exception):
    """The RBD store cannot be used at all: no bindings, or no cluster at start.  One line."""


def _bindings() -> tuple[Any, Any]:
    """Ceph's ``rados`` and ``rbd`` modules, imported now; ``RBDUnavailable`` without them."""
    try:
        return importlib.import_module("rados"), importlib.import_module("rbd")
    except ImportError as e:
        loaded = _debian_bindings()
        if loaded is None:
            raise RBDUnavailable(f"{_MISSING} ({e})") from None
        return loaded


def _debian_bindings() -> tuple[Any, Any] | None:
    """Debian's two extension modules, loaded by path when built for this interpreter's ABI
    (a virtualenv without system site-packages cannot import them, and nothing else of
    ``dist-packages`` should leak into it)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = []
    for name in ("rados", "rbd"):
        path = os.path.join(DEBIAN_BINDINGS, f"{name}{suffix}")
        spec = importlib.util.spec_from_file_location(name, path)
        if not os.path.exists(path) or spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # rbd imports rados
        try:
            spec.loader.exec_module(module)
        except ImportError:
            del sys.modules[name]
            return None
        modules.append(module)
    return modules[0], modules[1]


class _Work:
    """
    The thread work of one upload or download: results as ``Deferred``s that can be cancelled
    (a client going away) without cutting the work short, and ``idle()`` for when none runs,
    so that an image is closed or removed only once nothing uses it.
    """

    def __init__(self, runner: ThreadRunner) -> None:
        self._runner = runner
        self._running = 0
        self._idle: list[Deferred[None]] = []

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        self._running += 1
        shared = Shared(self._runner.run(fn, *args))
        shared.get().addBoth(self._finished)  # before the caller's waiter fires
        return shared.get()

    def _finished(self, _: object) -> None:
        self._running -= 1
        if not self._running:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def idle(self) -> Deferred[None]:
        if not self._running:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter


@implementer(IBlobStore)
class RBDBlobStore:
    """
    ``IBlobStore`` in one RBD pool (see the module's docstring).

    Made without touching the cluster; ``start()`` (or ``connect``) connects, synchronously,
    once at daemon start, and raises ``RBDUnavailable`` with one line saying why it cannot.
    Later failures (the cluster gone) are ``StoreFailure`` per request: ``connect_timeout``
    bounds every monitor and OSD operation, so a dead cluster never holds a request forever.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        *,
        pool: str = "images",
        user: str = "imaged",
        conf: str = "",
        chunk_size: int = 8 * 1024 * 1024,
        features: int | None = None,
        connect_timeout: float = 10.0,
        threads: int = 4,
    ) -> None:
        self._rados, self._rbd = _bindings()
        if chunk_size & (chunk_size - 1) or not 4096 <= chunk_size <= 32 * 1024 * 1024:
            raise ValueError(f"the RBD chunk size must be a power of 2, 4 KiB to 32 MiB, "
                             f"not {chunk_size}")
        if threads < 1:
            raise ValueError(f"the RBD store needs at least one thread, not {threads}")
        self.reactor = reactor
        self.pool = pool
        self.user = user
        self.conf = conf
        self.chunk_size = chunk_size
        self.order = chunk_size.bit_length() - 1
        self.features: int = self._rbd.RBD_FEATURE_LAYERING if features is None else features
        self.connect_timeout = connect_timeout
        self.threads = threads
        self.fsid: str | None = None
        self._cluster: Any = None
        self._ioctx: Any = None
        self._runner: ThreadRunner | None = None
        self._pinger: ThreadRunner | None = None
        self._hashing: HashingLanes | None = None
        # Images held open across thread calls (uploads, downloads): closed by close().
        self._images: set[Any] = set()
        self._images_lock = threading.Lock()

    @classmethod
    def connect(cls, reactor: IReactorFromThreads, **options: Any) -> RBDBlobStore:
        """A store, connected (see ``start``)."""
        return cls(reactor, **options).start()

    @property
    def where(self) -> str:
        """The store, for logs: ``RBD pool images (cluster <fsid>)``."""
        return f"RBD pool {self.pool} (cluster {self.fsid or 'not connected'})"

    def _conf_name(self) -> str:
        return self.conf or "the default ceph.conf"

    # -- connection ------------------------------------------------------------------------

    def start(self) -> RBDBlobStore:
        """
        Connect to the cluster and open the pool, synchronously (before the reactor runs):
        ``RBDUnavailable`` with one line naming the conf, pool, user and cause when it fails.
        """
        if self._runner is not None:
            return self
        rados = self._rados
        stage = "configuration"
        cluster = ioctx = None
        try:
            cluster = rados.Rados(conffile=self.conf, rados_id=self.user)
            # librbd's cache helps small random I/O (a VM's), not whole-image streams: without
            # it reads run about half as fast again here, and a write returns once stored.
            cluster.conf_set("rbd_cache", "false")
            if self.connect_timeout > 0:
                for option in ("rados_osd_op_timeout", "rados_mon_op_timeout",
                               "client_mount_timeout"):
                    cluster.conf_set(option, f"{self.connect_timeout:g}")
            stage = "monitors"
            cluster.connect()
            stage = "pool"
            ioctx = cluster.open_ioctx(self.pool)
            stage = "OSDs"
            try:
                ioctx.stat("rbd_directory")  # an answer from the OSD serving the pool
            except rados.ObjectNotFound:
                pass  # a pool with no image yet
            fsid = cluster.get_fsid()
        except rados.Error as e:
            if ioctx is not None:
                ioctx.close()
            if cluster is not None:
                cluster.shutdown()
            raise RBDUnavailable(
                f"cannot use RBD pool {self.pool} as client.{self.user} with "
                f"{self._conf_name()}: {self._why(stage, e)}"
            ) from None
        self._cluster, self._ioctx, self.fsid = cluster, ioctx, fsid
        self._runner = ThreadRunner(self.reactor, self.threads, "imaged-rbd")
        self._pinger = ThreadRunner(self.reactor, 1, "imaged-rbd-ping")
        self._hashing = HashingLanes(self.reactor, "rbd")
        self.log.info("connected to {where} as client.{user}", where=self.where, user=self.user)
        return self

    def _why(self, stage: str, e: Exception) -> str:
        rados = self._rados
        if isinstance(e, rados.TimedOut):
            return f"no answer from the {stage} in {self.connect_timeout:g} s"
        if isinstance(e, rados.PermissionDeniedError):
            return f"the {stage} refused access (is the keyring right, and the user's caps?)"
        if stage == "pool" and isinstance(e, rados.ObjectNotFound):
            return f"there is no pool {self.pool}"
        return f"{stage}: {e}"

    def close(self) -> Deferred[None]:
        for runner in (self._runner, self._pinger):
            if runner is not None:
                runner.stop()  # lets queued calls finish: no thread uses an image after this
        if self._hashing is not None:
            self._hashing.stop()
        self._runner = self._pinger = self._hashing = None
        with self._images_lock:
            images, self._images = self._images, set()
        for image in images:  # of uploads and downloads cut short
            image.close()
        if self._ioctx is not None:
            self._ioctx.close()
        if self._cluster is not None:
            self._cluster.shutdown()
        self._ioctx = self._cluster = None
        return succeed(None)

    def _open(self, name: str, snapshot: str | None = None, read_only: bool = False) -> Any:
        """An image opened for longer than one thread call (in a store thread)."""
        image = self._rbd.Image(self._ioctx, name, snapshot=snapshot, read_only=read_only)
        with self._images_lock:
            self._images.add(image)
        return image

    def _close(self, image: Any) -> None:
        with self._images_lock:
            self._images.discard(image)
        image.close()

    def _work(self) -> _Work:
        if self._runner is None:
            raise StoreFailure(f"The RBD image store is unavailable ({self.where}).")
        return _Work(self._runner)

    def _guarded(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` (in a store thread), reporting Ceph's failures as the store's."""
        try:
            return fn(*args)
        except ImageServiceError:
            raise
        except (self._rbd.NoSpace, self._rbd.DiskQuotaExceeded,
                self._rados.NoSpace) as e:
            raise TooLarge("Image storage media is full.") from e
        except (self._rbd.Error, self._rados.Error) as e:
            raise StoreFailure(f"The RBD image store is unavailable ({what}: {e}).") from None

    # -- locations ---------------------------------------------------------------------------

    def _location(self, name: str) -> str:
        parts = (self.fsid or "", self.pool, name, SNAPSHOT)
        return "rbd://" + "/".join(quote(part, "") for part in parts)

    def _image_of(self, location: str) -> tuple[str, str | None]:
        """
        The image and snapshot a location of this store names (glance_store's parsing: four
        parts, or the legacy ``rbd://<image>`` in the default pool with no snapshot);
        ``NotFound`` for anything else.
        """
        if location.startswith("rbd://"):
            parts = [unquote(part) for part in location[len("rbd://"):].split("/")]
            if all(parts):
                if len(parts) == 1:
                    return parts[0], None
                if len(parts) == 4 and (parts[0], parts[1]) == (self.fsid, self.pool):
                    return parts[2], parts[3]
        raise NotFound(f"Location {location!r} is not in this store")

    def owns(self, location: str) -> bool:
        try:
            self._image_of(location)
        except NotFound:
            return False
        return True

    # -- IBlobStore ----------------------------------------------------------------------------

    @deferred
    async def write(
        self,
        image_id: str,
        producer: IBodyProducer,
        hash_algo: str,
        size_cap: int | None = None,
    ) -> StoredBlob:
        length = None if producer.length is UNKNOWN_LENGTH else int(producer.length)
        upload = _Upload(self, image_id, length, Digests(hash_algo), self._work())
        try:
            await upload.run("create", upload.create)
            await consume(producer, upload.write, size_cap, chunk=self.chunk_size,
                          high_water=self.threads * self.chunk_size)
            await upload.finish()
        except Exception:  # not GeneratorExit: a coroutine being closed must not await
            await upload.remove()
            raise
        digests = upload.digests
        return StoredBlob(
            size=digests.size,
            checksum=digests.checksum,
            hash_algo=hash_algo,
            hash_value=digests.hash_value,
            location=self._location(image_id),
        )

    @deferred
    async def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> IBodyProducer:
        name, snapshot = self._image_of(location)
        work = self._work()

        def open_image() -> tuple[Any, int]:
            try:
                image = self._open(name, snapshot, read_only=True)
            except self._rbd.ImageNotFound:
                raise NotFound(f"Image data at {location} is missing") from None
            try:
                return image, int(image.size())
            except BaseException:
                self._close(image)
                raise

        image, size = await work.run(self._guarded, "open", open_image)
        available = max(0, size - offset)
        count = available if length is None else max(0, min(length, available))
        reader = _ReadAhead(self, image, work, offset + count)
        return ChunkProducer(reader.read, offset, count, on_close=reader.close,
                             chunk=self.chunk_size)

    @deferred
    async def delete(self, location: str) -> None:
        name, snapshot = self._image_of(location)
        await self._work().run(self._guarded, "delete", self._remove, name, snapshot)

    def _remove(self, name: str, snapshot: str | None) -> None:
        """
        glance_store's order, in a store thread: unprotect the snapshot, remove it, remove the
        image.  Clones of the snapshot make librbd refuse the unprotect: ``InUse``, nothing
        changed.  So do other snapshots (nothing is touched) and other users of the image
        (the snapshot is put back as it was: the image's data is the snapshot's).
        """
        rbd = self._rbd
        in_use = f"Image data {name} is in use by the store (RBD clones depend on it)"
        removed_snapshot = False
        try:
            with rbd.Image(self._ioctx, name) as image:
                names = [snap["name"] for snap in image.list_snaps()]
                others = [other for other in names if other != snapshot]
                if others:
                    raise InUse(f"Image data {name} is in use by the store (it has other RBD "
                                f"snapshots: {', '.join(others)})")
                if snapshot in names:
                    try:
                        image.unprotect_snap(snapshot)
                    except rbd.InvalidArgument:
                        pass  # not protected
                    except rbd.ImageBusy:
                        raise InUse(in_use) from None
                    image.remove_snap(snapshot)
                    removed_snapshot = True
            rbd.RBD().remove(self._ioctx, name)
        except rbd.ImageNotFound:
            return
        except (rbd.ImageBusy, rbd.ImageHasSnapshots):
            # Someone has the image open, or snapshotted it meanwhile.
            if removed_snapshot:
                with rbd.Image(self._ioctx, name) as image:
                    image.create_snap(snapshot)
                    image.protect_snap(snapshot)
            raise InUse(f"Image data {name} is in use by the store (RBD clients have it "
                        "open)") from None

    @deferred
    async def stored_before(self, timestamp: float) -> list[str]:
        return await self._work().run(self._guarded, "list", self._stored_before, timestamp)

    def _stored_before(self, timestamp: float) -> list[str]:
        """
        Complete images (with their snapshot) whose snapshot, taken as the upload completed,
        is older than ``timestamp``, and partial images (crash leftovers; their names start
        with the image id) created before it.  librbd gives whole seconds, rounded down, so an
        image counts only once its time is a whole second before ``timestamp``.
        """
        rbd = self._rbd
        found = []
        for name in rbd.RBD().list(self._ioctx):
            try:
                with rbd.Image(self._ioctx, name, read_only=True) as image:
                    if PARTIAL in name:
                        when = image.create_timestamp()
                    else:
                        snaps = [s for s in image.list_snaps() if s["name"] == SNAPSHOT]
                        if not snaps:
                            continue  # not an image this store made (a clone, say)
                        when = image.get_snap_timestamp(snaps[0]["id"])
            except rbd.ImageNotFound:
                continue  # removed meanwhile
            if when.replace(tzinfo=UTC).timestamp() + 1.0 <= timestamp:
                found.append(self._location(name))
        return found

    def ping(self) -> Deferred[None]:
        def probe() -> None:
            try:
                self._ioctx.stat("rbd_directory")
            except self._rados.ObjectNotFound:
                pass  # the OSD answered: there is no image yet

        def failed(failure: Any) -> None:
            raise StoreFailure(f"RBD pool {self.pool} at {self._conf_name()}: "
                               f"{failure.getErrorMessage()}")

        if self._pinger is None:
            return fail(StoreFailure(f"RBD pool {self.pool} at {self._conf_name()}: "
                                     "not connected"))
        return self._pinger.run(probe).addErrback(failed)


class _Upload:
    """
    One image being written: a partial image, chunk-aligned writes at disjoint offsets in the
    store's threads, growth under a lock (only ever up: writes below the size go on meanwhile).

    The image grows with the data even when its length was declared, up to that length: a
    declared terabyte that never comes must not make an image whose removal (or trim) walks a
    terabyte of objects (without the object-map feature librbd must try every object).
    """

    def __init__(self, store: RBDBlobStore, image_id: str, length: int | None, digests: Digests,
                 work: _Work) -> None:
        if "/" in image_id or not image_id:
            raise ValueError(f"unsafe image id {image_id!r}")
        self.store = store
        self.rbd = store._rbd
        self.image_id = image_id
        self.length = length
        self.name = f"{image_id}{PARTIAL}{uuid.uuid4().hex}"
        self.digests = digests
        self.work = work
        assert store._hashing is not None  # started, as work says
        self.hashing = store._hashing
        self.image: Any = None
        self.buffer = Gather()
        self.offset = 0  # where the next chunk goes
        self.size = 0  # the image's size (under the lock)
        self.growth = store.chunk_size
        self.lock = threading.Lock()
        self.created = False
        self.published = False

    def run(self, what: str, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return self.work.run(self.store._guarded, what, fn, *args)

    # In the store's threads:

    def create(self) -> None:
        rbd, ioctx = self.rbd, self.store._ioctx
        try:
            rbd.Image(ioctx, self.image_id, read_only=True).close()
        except rbd.ImageNotFound:
            pass
        else:
            raise Duplicate(f"Image {self.image_id} has data in {self.store.where} already")
        rbd.RBD().create(ioctx, self.name, 0, order=self.store.order, old_format=False,
                         features=self.store.features)
        self.created = True
        self.image = self.store._open(self.name)

    def write_at(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        with self.lock:
            if end > self.size:
                size = self.size
                while size < end:  # glance_store's _resize_on_write, per upload
                    self.growth = min(self.growth * 2, MAX_GROWTH)
                    size += self.growth
                if self.length is not None and end <= self.length:
                    size = min(size, self.length)
                self.image.resize(size)
                self.size = size
        self.image.write(data, offset)

    def publish(self, size: int) -> None:
        with self.lock:
            if self.size != size:
                self.image.resize(size)
                self.size = size
        self.image.create_snap(SNAPSHOT)
        self.image.protect_snap(SNAPSHOT)
        image, self.image = self.image, None
        self.store._close(image)
        try:
            self.rbd.RBD().rename(self.store._ioctx, self.name, self.image_id)
        except self.rbd.ImageExists:
            raise Duplicate(
                f"Image {self.image_id} has data in {self.store.where} already") from None
        self.published = True

    def discard(self) -> None:
        if self.image is not None:
            image, self.image = self.image, None
            self.store._close(image)
        if self.published:  # and then the write was cancelled
            self.store._remove(self.image_id, SNAPSHOT)
        elif self.created:
            self.store._remove(self.name, SNAPSHOT)

    # In the reactor's thread:

    def write(self, data: bytes) -> Deferred[None]:
        work = [self.hashing.update(self.digests, data)]
        self.buffer.add(data)
        while self.buffer.size >= self.store.chunk_size:
            work.append(self._send(self.buffer.take(self.store.chunk_size)))
        return work[0] if len(work) == 1 else all_done(work)

    def _send(self, data: bytes) -> Deferred[None]:
        offset, self.offset = self.offset, self.offset + len(data)
        return self.run("write", self.write_at, data, offset)

    async def finish(self) -> None:
        if self.buffer.size:
            await self._send(self.buffer.take())
        await self.run("publish", self.publish, self.offset)

    async def remove(self) -> None:
        """Best effort, once no write runs: take away the partial image."""
        await self.work.idle()
        try:
            await self.run("remove", self.discard)
        except Exception as e:
            self.store.log.warn(
                "could not remove the partial image {name} from {where}: {error}",
                name=self.name, where=self.store.where, error=e,
            )


class _ReadAhead:
    """
    Reads of one open snapshot for a ``ChunkProducer``: chunk-aligned (a ranged read's first
    piece ends at a chunk boundary), with the next chunk already being read while the consumer
    takes this one.  The image is closed once the producer is done and no read runs.
    """

    def __init__(self, store: RBDBlobStore, image: Any, work: _Work, end: int) -> None:
        self.store = store
        self.image = image
        self.work = work
        self.end = end
        self.ahead: dict[int, tuple[int, Shared[bytes]]] = {}

    def _start(self, position: int) -> tuple[int, Shared[bytes]]:
        chunk = self.store.chunk_size
        size = min(chunk - position % chunk, self.end - position)
        read = self.work.run(self.store._guarded, "read", self.image.read, position, size)
        return size, Shared(read)

    def read(self, position: int, _size: int) -> Deferred[bytes]:
        ready = self.ahead.pop(position, None)
        size, data = ready if ready is not None else self._start(position)
        following = position + size
        for _ in range(READ_AHEAD):
            if following >= self.end:
                break
            if following not in self.ahead:
                self.ahead[following] = self._start(following)
            following += self.ahead[following][0]
        return data.get()

    def close(self) -> None:
        self.ahead.clear()

        def close_image(_: object) -> Deferred[None]:
            return self.work.run(self.store._close, self.image)

        closed = self.work.idle().addCallback(close_image)
        closed.addErrback(lambda failure: self.store.log.failure(
            "closing an RBD image after reading", failure))


__all__ = ["DEBIAN_BINDINGS", "SNAPSHOT", "RBDBlobStore", "RBDUnavailable"]
