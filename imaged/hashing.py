"""
The digests every stored image carries: md5 (``checksum``) and the configured multihash.

Blob stores feed bytes through a ``Digests`` while they write them, so the data is read once.
"""

from __future__ import annotations

import hashlib

from .errors import BadRequest


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
