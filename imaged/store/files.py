"""
Image bytes as local files: the embedded default blob store.

A blob is written under ``<root>/.partial/`` with a unique name, hashed as it is written,
fsynced, then renamed to ``<root>/<image id>`` and the directory fsynced: a crash never leaves a
partial file that looks complete, and leftovers in ``.partial`` are removed at start.  All file
work runs in the store's own threads.
"""

from __future__ import annotations

import errno
import os
import uuid
from typing import Any
from urllib.parse import unquote, urlparse

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from ..errors import NotFound, StoreFailure, TooLarge
from ..hashing import Digests, HashingLanes
from ..interfaces import IBlobStore
from ..model import StoredBlob
from ..streams import ChunkProducer, consume
from ..threads import ThreadRunner, all_done

_PARTIAL = ".partial"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _store_errors(fn: Any, *args: Any) -> Any:
    """Run ``fn``, reporting the file system's failures as the store's (disk full: 413)."""
    try:
        return fn(*args)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TooLarge("Image storage media is full.") from e
        raise StoreFailure(f"Could not store image data: {e.strerror or e}") from e


@implementer(IBlobStore)
class FileBlobStore:
    """``IBlobStore`` in a local directory."""

    log = Logger()

    def __init__(self, root: str, reactor: Any, threads: int = 4) -> None:
        self.root = os.path.abspath(root)
        self._partial = os.path.join(self.root, _PARTIAL)
        os.makedirs(self._partial, exist_ok=True)
        self._runner = ThreadRunner(reactor, threads, "imaged-files")
        self._hashing = HashingLanes(reactor, "files")
        self._write_lane = ThreadRunner(reactor, 1, "imaged-write")
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Partial files can only be left by a crash; they belong to no image."""
        for name in os.listdir(self._partial):
            os.unlink(os.path.join(self._partial, name))
            self.log.warn("removed partial upload {name} left by an earlier run", name=name)

    def close(self) -> Deferred[None]:
        for runner in (self._runner, self._write_lane):
            runner.stop()
        self._hashing.stop()
        return succeed(None)

    # -- locations ---------------------------------------------------------------------------

    def _location(self, image_id: str) -> str:
        return "file://" + os.path.join(self.root, image_id)

    def _path(self, location: str) -> str:
        """The file behind a location, refusing anything outside this store's directory."""
        parsed = urlparse(location)
        path = os.path.abspath(unquote(parsed.path))
        if parsed.scheme != "file" or os.path.dirname(path) != self.root:
            raise NotFound(f"Location {location!r} is not in this store")
        return path

    # -- IBlobStore ----------------------------------------------------------------------------

    def write(
        self,
        image_id: str,
        producer: IBodyProducer,
        hash_algo: str,
        size_cap: int | None = None,
    ) -> Deferred[StoredBlob]:
        if os.sep in image_id or image_id.startswith("."):
            raise ValueError(f"unsafe image id {image_id!r}")
        digests = Digests(hash_algo)
        partial = os.path.join(self._partial, f"{image_id}.{uuid.uuid4().hex}")
        final = os.path.join(self.root, image_id)
        # The file is opened by the first chunk (or publish), in a store thread.
        fds: list[int] = []

        def opened() -> int:
            if not fds:
                fds.append(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
            return fds[0]

        def write_data(data: bytes) -> None:
            fd = opened()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]

        def publish() -> StoredBlob:
            fd = opened()
            os.fsync(fd)
            fds.clear()  # closed here, so discard() must not close the number again
            os.close(fd)
            os.rename(partial, final)
            _fsync_dir(self.root)
            return StoredBlob(
                size=digests.size,
                checksum=digests.checksum,
                hash_algo=hash_algo,
                hash_value=digests.hash_value,
                location=self._location(image_id),
            )

        def discard() -> None:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass

        def failed(failure: Any) -> Any:
            return self._runner.run(discard).addBoth(lambda _: failure)

        def write_chunk(data: bytes) -> Deferred[None]:
            # Three ordered lanes in parallel: md5, the multihash, the file.  Each lane is one
            # thread, so every lane sees this upload's chunks in order.
            return all_done(
                [
                    self._hashing.update(digests, data),
                    self._write_lane.run(_store_errors, write_data, data),
                ]
            )

        written: Deferred[Any] = consume(producer, write_chunk, size_cap)
        written.addCallback(lambda _: self._write_lane.run(_store_errors, publish))
        written.addErrback(failed)
        return written

    def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> Deferred[IBodyProducer]:
        def open_file() -> IBodyProducer:
            path = self._path(location)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise NotFound(f"Image data at {location} is missing") from None
            size = os.fstat(fd).st_size
            count = max(0, size - offset) if length is None else length

            def read_chunk(position: int, amount: int) -> Deferred[bytes]:
                return self._runner.run(os.pread, fd, amount, position)

            return ChunkProducer(read_chunk, offset, count, on_close=lambda: os.close(fd))

        return self._runner.run(open_file)

    def owns(self, location: str) -> bool:
        try:
            self._path(location)
        except NotFound:
            return False
        return True

    def ping(self) -> Deferred[None]:
        def check() -> None:
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StoreFailure(f"Image directory {self.root} is not writable.")

        return self._runner.run(check)

    def stored_before(self, timestamp: float) -> Deferred[list[str]]:
        def scan() -> list[str]:
            found = []
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    if entry.stat().st_mtime < timestamp:
                        found.append(self._location(entry.name))
            return found

        return self._runner.run(scan)

    def delete(self, location: str) -> Deferred[None]:
        def remove() -> None:
            try:
                os.unlink(self._path(location))
            except FileNotFoundError:
                pass

        return self._runner.run(remove)
