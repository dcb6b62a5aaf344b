"""
Database hops per operation: every ``IMetadataStore`` call is one transaction and, on a real
database, one trip to the database thread and back.  A guarded write (update, tag, delete, the
two steps of an upload) reads the caller's membership and checks policy inside its ``modify``
transaction, so it is one call, where it used to be a ``get_member`` call plus the ``modify``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from imaged.api import (
    Change,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    ImageService,
    MemberStatus,
    PatchOp,
    RequestContext,
)
from imaged.store.sql import SQLMetadataStore
from imaged.testing import producer_of

from .conftest import fired

OWNER = RequestContext.from_roles("p1", "alice", frozenset({"member"}))
MEMBER = RequestContext.from_roles("p2", "bob", frozenset({"member"}))
ADMIN = RequestContext.from_roles("p0", "root", frozenset({"admin"}))


class CountingStore:
    """A metadata store that counts the calls made to it (each one transaction)."""

    def __init__(self, store: SQLMetadataStore) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def counted(services: Callable[..., ImageService], metadata_stores: Any) -> Any:
    store = CountingStore(metadata_stores())
    return store, services(metadata=store)


def hops(store: CountingStore, operation: Callable[[], Any]) -> dict[str, int]:
    store.calls.clear()
    fired(operation())
    return dict(store.calls)


def new_image(service: ImageService, shared_with: str | None = None) -> str:
    image = fired(service.create(OWNER, CreateImageRequest(
        disk_format=DiskFormat.RAW, container_format=ContainerFormat.BARE, tags=("t",))))
    if shared_with is not None:
        fired(service.add_member(OWNER, image.id, shared_with))
        fired(service.update_member(
            RequestContext.from_roles(shared_with, "u", frozenset({"member"})),
            image.id, shared_with, MemberStatus.ACCEPTED))
    return str(image.id)


#: operation -> what it may cost: one ``modify`` for each guarded write.
WRITES: dict[str, tuple[Callable[[ImageService, RequestContext, str], Any], dict[str, int]]] = {
    "update": (
        lambda s, c, i: s.update(c, i, [Change(op=PatchOp.REPLACE, name="name", value="n")]),
        {"modify": 1},
    ),
    "add tag": (lambda s, c, i: s.add_tag(c, i, "new"), {"modify": 1}),
    "remove tag": (lambda s, c, i: s.remove_tag(c, i, "t"), {"modify": 1}),
    "delete": (lambda s, c, i: s.delete(c, i), {"modify": 1}),
    "upload": (lambda s, c, i: s.upload(c, i, producer_of(b"x" * 1000)), {"modify": 2}),
}


@pytest.mark.parametrize("caller", ["owner", "admin"])
@pytest.mark.parametrize("operation", list(WRITES))
def test_a_guarded_write_is_one_transaction(counted: Any, operation: str, caller: str) -> None:
    store, service = counted
    image_id = new_image(service, shared_with="p2")
    run, expected = WRITES[operation]
    context = OWNER if caller == "owner" else ADMIN
    assert hops(store, lambda: run(service, context, image_id)) == expected


def test_a_member_refused_a_write_costs_one_transaction_too(counted: Any) -> None:
    """The accepted member of a shared image may see it but not change it: 403, one call."""
    from imaged.errors import Forbidden

    store, service = counted
    image_id = new_image(service, shared_with="p2")
    store.calls.clear()
    with pytest.raises(Forbidden):
        fired(service.add_tag(MEMBER, image_id, "mine"))
    assert dict(store.calls) == {"modify": 1}
    assert fired(service.get(OWNER, image_id)).tags == {"t"}


def test_reads(counted: Any) -> None:
    store, service = counted
    image_id = new_image(service, shared_with="p2")
    assert hops(store, lambda: service.get(OWNER, image_id)) == {"get": 1}
    # Another project's shared image: its membership decides whether it may be seen.
    assert hops(store, lambda: service.get(MEMBER, image_id)) == {"get": 1, "get_member": 1}
