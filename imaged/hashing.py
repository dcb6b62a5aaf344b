"""
The digests every stored image carries: md5 (``checksum``) and the configured multihash.

Blob stores feed bytes through a ``Digests`` while they write them, so the data is read once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred

from .errors import BadRequest
from .threads import ThreadRunner, all_done


def check_algorithm(name: str) -> str:
    """Refuse, at configuration time, an algorithm hashlib does not provide."""
    try:
        hashlib.new(name)
    except (ValueError, TypeError):
        raise BadRequest(f"Unknown hashing algorithm {name!r}") from None
    return name


class Digests:
    """md5 plus one multihash, updated together."""

    def __init__(self, hash_algo: str) -> None:
        self.hash_algo = hash_algo
        # md5 here is Glance's data checksum, not a security measure.
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._multihash = hashlib.new(hash_algo)
        self.size = 0

    def update(self, data: bytes) -> None:
        self._md5.update(data)
        self._multihash.update(data)
        self.size += len(data)

    # The two halves of ``update``, for stores that run them in parallel threads (hashlib
    # releases the GIL on large buffers, so md5 and the multihash use two cores).

    def update_checksum(self, data: bytes) -> None:
        self._md5.update(data)

    def update_multihash(self, data: bytes) -> None:
        self._multihash.update(data)
        self.size += len(data)

    @property
    def checksum(self) -> str:
        return self._md5.hexdigest()

    @property
    def hash_value(self) -> str:
        return self._multihash.hexdigest()


class HashingLanes:
    """
    md5 and the multihash of uploads, each in a thread of its own: the two run in parallel
    (hashlib releases the GIL on large buffers), and each lane sees an upload's chunks in the
    order they are given, off the reactor thread.  Every blob store that writes uploads has
    one.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self._checksum = ThreadRunner(reactor, 1, f"imaged-{name}-md5")
        self._multihash = ThreadRunner(reactor, 1, f"imaged-{name}-multihash")

    def update(self, digests: Digests, data: bytes) -> Deferred[None]:
        """Feed ``data`` to both digests; fires when both have it."""
        return all_done(
            [
                self._checksum.run(digests.update_checksum, data),
                self._multihash.run(digests.update_multihash, data),
            ]
        )

    def stop(self) -> None:
        self._checksum.stop()
        self._multihash.stop()
