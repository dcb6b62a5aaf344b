"""
In-memory parts for tests, for imaged's and for programs that embed imaged.

``memory_image_service()`` is a complete ``IImageService`` (the real rules, SQLite in memory,
bytes in a dict) that runs without threads: every ``Deferred`` it returns has already fired
unless a producer makes it wait, so tests need no reactor.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from .errors import InUse, NotFound, StoreFailure
from .hashing import Digests
from .interfaces import IBlobStore, IMetadataStore
from .model import StoredBlob
from .policy import Rules
from .quotas import Limits
from .service import ImageService
from .store.sql import SQLMetadataStore
from .stores import NamedStore, Stores
from .streams import ChunkProducer, consume


@implementer(IBlobStore)
class MemoryBlobStore:
    """
    ``IBlobStore`` in a dict; ``blobs`` maps locations to bytes for inspection.  Locations are
    ``memory://<store>/<image>/<serial>``, ``<store>`` unique to the instance (or ``name``), so
    several of them make a multi-store deployment.  ``broken`` makes every call fail as a store
    that is down (``StoreFailure``), and ``in_use`` makes deletes of those locations refused
    as an RBD image with clones is.
    """

    def __init__(self, name: str | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.written_at: dict[str, float] = {}
        self._serial = 0
        self.name = name or uuid.uuid4().hex[:8]
        self.broken = False
        self.in_use: set[str] = set()

    def copy(self) -> MemoryBlobStore:
        """Another store holding the same blobs (to try things on a snapshot)."""
        copied = MemoryBlobStore(self.name)
        copied.blobs, copied.written_at = dict(self.blobs), dict(self.written_at)
        copied._serial = self._serial
        return copied

    def _down(self) -> Deferred[Any] | None:
        if self.broken:
            return fail(StoreFailure(f"memory store {self.name} is down"))
        return None

    def write(
        self,
        image_id: str,
        producer: IBodyProducer,
        hash_algo: str,
        size_cap: int | None = None,
    ) -> Deferred[StoredBlob]:
        down = self._down()
        if down is not None:
            return down
        digests = Digests(hash_algo)
        chunks: list[bytes] = []
        self._serial += 1
        location = f"memory://{self.name}/{image_id}/{self._serial}"

        def write_chunk(data: bytes) -> Deferred[None]:
            digests.update(data)
            chunks.append(data)
            return succeed(None)

        def publish(_: object) -> StoredBlob:
            self.blobs[location] = b"".join(chunks)
            self.written_at[location] = time.time()
            return StoredBlob(
                size=digests.size,
                checksum=digests.checksum,
                hash_algo=hash_algo,
                hash_value=digests.hash_value,
                location=location,
            )

        return consume(producer, write_chunk, size_cap).addCallback(publish)

    def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> Deferred[IBodyProducer]:
        down = self._down()
        if down is not None:
            return down
        if location not in self.blobs:
            return fail(NotFound(f"Image data at {location} is missing"))
        data = self.blobs[location]
        count = max(0, len(data) - offset) if length is None else length
        return succeed(
            ChunkProducer(lambda position, size: succeed(data[position : position + size]),
                          offset, count, chunk=64 * 1024)
        )

    def delete(self, location: str) -> Deferred[None]:
        down = self._down()
        if down is not None:
            return down
        if location in self.in_use:
            return fail(InUse(f"Image data at {location} is in use by the store."))
        self.blobs.pop(location, None)
        self.written_at.pop(location, None)
        return succeed(None)

    def owns(self, location: str) -> bool:
        return location.startswith(f"memory://{self.name}/")

    def ping(self) -> Deferred[None]:
        return self._down() or succeed(None)

    def stored_before(self, timestamp: float) -> Deferred[list[str]]:
        return succeed([loc for loc, at in self.written_at.items() if at < timestamp])

    def close(self) -> Deferred[None]:
        return succeed(None)


def memory_image_service(
    hash_algo: str = "sha512",
    limits: Limits = Limits(),
    metadata: IMetadataStore | None = None,
    blobs: IBlobStore | None = None,
    clock: IReactorTime | None = None,
    require_format_match: bool = True,
    node: str | None = None,
    rules: Rules = Rules(),
    **imports: Any,
) -> ImageService:
    """
    The real ``ImageService`` over in-memory stores (or the ``metadata``/``blobs`` given),
    reading time from ``clock`` (the reactor unless a test passes a ``Clock``); ``imports``
    are the service's import arguments (``import_methods``, ``fetcher``, ``uri_rules``).
    """
    return ImageService(
        metadata if metadata is not None else SQLMetadataStore.in_memory(),
        blobs if blobs is not None else MemoryBlobStore(),
        hash_algo,
        limits,
        require_format_match=require_format_match,
        clock=clock,
        node=node,
        rules=rules,
        **imports,
    )


def producer_of(data: bytes, chunk: int = 64 * 1024) -> IBodyProducer:
    """An ``IBodyProducer`` of ``data`` that needs no reactor (for uploads in tests)."""
    return ChunkProducer(
        lambda position, size: succeed(data[position : position + size]), 0, len(data),
        chunk=chunk,
    )


# -- the daemon as users run it ---------------------------------------------------------------

#: The peer of an in-memory connection (``StringTransport(peerAddress=LOCAL_PEER)``): a client
#: on this host, whose identity headers the default authentication believes.
LOCAL_PEER = IPv4Address("TCP", "127.0.0.1", 40000)

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
# The API's listener (not the metrics listener, whose description ends "(metrics)").
_LISTENING = re.compile(r"imaged listening on (?:(?!\(metrics\)).)* \(127\.0\.0\.1:(\d+)\)")



class TwistdDaemon:
    """A ``twistd -n`` process; ``url`` is where it listens once ``start`` returns."""

    def __init__(self, workdir: str, args: Sequence[str] = (), tac: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.args = list(args)
        self.tac = tac
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path = os.path.join(workdir, "twistd.log")

    def start(self, timeout: float = 30) -> TwistdDaemon:
        listen = ["--listen", "tcp:0:interface=127.0.0.1"]
        if self.tac:
            command = [TWISTD, "-n", "--pidfile=", "-y", self.tac]
            env = dict(os.environ, IMAGED_ARGS=" ".join(listen + self.args), **(self.env or {}))
        else:
            command = [TWISTD, "-n", "--pidfile=", "imaged", *listen, *self.args]
            env = dict(os.environ, **(self.env or {}))
        log = open(self.log_path, "a")
        offset = log.tell()
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=log,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                f.seek(offset)
                found = _LISTENING.findall(f.read())
            if found:
                self.url = f"http://127.0.0.1:{found[-1]}"
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("imaged did not start:\n" + self.log())

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        """The log once ``text`` is in it (an event the daemon reports, never a set time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared in the log:\n" + self.log())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code


def memory_stores(*names: str, default: str | None = None, rbd: tuple[str, ...] = ()) -> Stores:
    """A multi-store deployment of in-memory stores called ``names`` (weights falling in
    that order: the first is read first); those in ``rbd`` say they are of type ``rbd``
    (deletes first, as an RBD store that may refuse them)."""
    return Stores(
        [
            NamedStore(
                name=name, type="rbd" if name in rbd else "memory", blobs=MemoryBlobStore(name),
                description=f"store {name}", weight=100 - index,
            )
            for index, name in enumerate(names)
        ],
        default or names[0],
        multi=True,
    )
