"""
The named blob stores of a deployment (Glance's ``enabled_backends``) and which copy to use.

A deployment has one or more stores, each an ``IBlobStore`` with a name, a type, a description
and a weight, and one of them the default.  ``Stores`` is the one place that knows them: it
finds the store holding a copy (by the name recorded with the copy, or by its address for a
copy recorded before its store had a name), orders copies for reading (highest weight first,
as Glance's ``weight``), and is itself an ``IBlobStore`` over all of them, so that recovery
and orphan removal see every store and a single-store deployment reads as before.

``multi`` is whether the configuration names its stores (``[stores.<name>]`` tables): only
then does imaged speak Glance's multi-store API (``/v2/info/stores``, ``stores`` on images,
``X-Image-Meta-Store``, versions 2.8 and 2.10 to 2.13), as Glance does with ``enabled_backends``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from .coroutines import deferred
from .errors import BadRequest, NotFound, StoreFailure
from .interfaces import IBlobStore
from .metrics import STORE_ERRORS
from .model import Location, StoredBlob

#: The store name of a single-store deployment (its configuration names no stores).
DEFAULT_NAME = "default"


@attrs.frozen
class NamedStore:
    """One configured store: its name, what it is, and its blob store."""

    name: str
    type: str
    blobs: IBlobStore
    description: str = ""
    #: Copies in stores of higher weight are read first (Glance's ``weight``).
    weight: int = 0
    #: What ``/v2/info/stores/detail`` shows of its configuration (never a secret).
    properties: Mapping[str, Any] = attrs.field(factory=dict)
    #: Where its bytes are kept, in words, for logs.
    where: str = ""

    @property
    def overwrites(self) -> bool:
        """Whether data written under an image's name replaces the data held under it (a
        file, an object); an RBD image of that name must first go, so data waiting for an
        import is kept there under another name (``Uploads.write_copies``)."""
        return self.type != "rbd"

    @property
    def refuses_deletes(self) -> bool:
        """Whether a delete may be refused because something depends on the data (an RBD
        image with clones): such a copy is deleted before the record, so that a refusal
        changes nothing."""
        return self.type == "rbd"


@implementer(IBlobStore)
class Stores:
    """Every store of the deployment, by name; an ``IBlobStore`` over all of them."""

    def __init__(self, stores: Sequence[NamedStore], default: str, multi: bool) -> None:
        if not stores:
            raise ValueError("a deployment needs at least one store")
        self._stores = {store.name: store for store in stores}
        if default not in self._stores:
            raise ValueError(f"the default store {default!r} is not configured")
        self.default = default
        self.multi = multi

    @classmethod
    def single(cls, blobs: IBlobStore, type: str = "file", where: str = "") -> Stores:
        """A deployment of one unnamed store (today's single-store options)."""
        return cls([NamedStore(DEFAULT_NAME, type, blobs, where=where)], DEFAULT_NAME, False)

    # -- the stores ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[NamedStore]:
        return iter(self._stores.values())

    def __len__(self) -> int:
        return len(self._stores)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._stores)

    def named(self, name: str) -> NamedStore:
        """The store called ``name``; ``BadRequest`` if none is."""
        try:
            return self._stores[name]
        except KeyError:
            raise BadRequest(f"Unknown store: {name}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._stores

    def target(self, name: str | None) -> NamedStore:
        """Where new data goes: the store asked for (multi-store only), else the default."""
        if name is None or not self.multi:
            return self._stores[self.default]
        return self.named(name)

    def store_of(self, location: Location) -> NamedStore | None:
        """The configured store holding ``location``: by its recorded name when that store
        owns the address, else the first store that does (``None``: no configured store)."""
        named = self._stores.get(location.store)
        if named is not None and named.blobs.owns(location.url):
            return named
        for store in self._stores.values():
            if store.blobs.owns(location.url):
                return store
        return None

    def named_locations(self, locations: Iterable[Location]) -> tuple[Location, ...]:
        """``locations`` with the names of the stores that hold them (as stored otherwise)."""
        named = []
        for location in locations:
            store = self.store_of(location)
            named.append(
                location if store is None or store.name == location.store
                else Location(location.url, store.name)
            )
        return tuple(named)

    def for_reading(
        self, locations: Iterable[Location], prefer: Sequence[str] = ()
    ) -> builtins.list[tuple[NamedStore, Location]]:
        """The readable copies, best first: the stores in ``prefer`` in that order, then by
        weight (highest first), then as recorded."""
        found = []
        for index, location in enumerate(locations):
            store = self.store_of(location)
            if store is not None:
                rank = prefer.index(store.name) if store.name in prefer else len(prefer)
                found.append((rank, -store.weight, index, store, location))
        found.sort(key=lambda item: item[:3])
        return [(store, location) for *_, store, location in found]

    # -- IBlobStore over every store ---------------------------------------------------------

    def write(
        self,
        image_id: str,
        producer: IBodyProducer,
        hash_algo: str,
        size_cap: int | None = None,
    ) -> Deferred[StoredBlob]:
        """Into the default store."""
        return self._stores[self.default].blobs.write(image_id, producer, hash_algo, size_cap)

    @deferred
    async def read(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> IBodyProducer:
        store = self.store_of(Location(location))
        if store is None:
            raise NotFound(f"No configured store holds {location}")
        return await store.blobs.read(location, offset, length)

    @deferred
    async def delete_copy(self, location: Location) -> None:
        """Remove one copy from the store that holds it (by its recorded store first: two
        stores may hand out alike addresses); a copy no configured store holds is left."""
        store = self.store_of(location)
        if store is not None:
            await store.blobs.delete(location.url)

    def delete(self, location: str) -> Deferred[None]:
        return self.delete_copy(Location(location))

    def owns(self, location: str) -> bool:
        return self.store_of(Location(location)) is not None

    @deferred
    async def ping(self) -> None:
        """Every store answers; ``StoreFailure`` naming those that do not."""
        failing = await self.unhealthy()
        if failing:
            raise StoreFailure("; ".join(f"store {name}: {why}" for name, why in failing))

    @deferred
    async def unhealthy(self) -> builtins.list[tuple[str, str]]:
        """The stores that do not answer, with why."""
        names = list(self._stores)
        results: list[tuple[bool, Any]] = await DeferredList(
            [self._stores[name].blobs.ping() for name in names], consumeErrors=True
        )
        failing = [
            (name, str(getattr(outcome.value, "message", None) or outcome.value))
            for name, (ok, outcome) in zip(names, results, strict=True)
            if not ok
        ]
        for name, _why in failing:
            STORE_ERRORS.labels(name, "ping").inc()
        return failing

    @deferred
    async def stored_before(self, timestamp: float) -> builtins.list[str]:
        found: list[str] = []
        for store in self._stores.values():
            found.extend(await store.blobs.stored_before(timestamp))
        return found

    def close(self) -> Deferred[None]:
        closing = [store.blobs.close() for store in self._stores.values()]
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    def __repr__(self) -> str:
        return f"<Stores {', '.join(self._stores)} (default {self.default})>"


def one_store(blobs: IBlobStore) -> Stores:
    """``blobs`` as a deployment's only store (tests and embedding programs pass one)."""
    if isinstance(blobs, Stores):
        return blobs
    return Stores.single(blobs)


__all__ = ["DEFAULT_NAME", "NamedStore", "Stores", "one_store"]
