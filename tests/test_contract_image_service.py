"""
The IImageService contract, run against every implementation: the in-memory service of
imaged.testing and the SQLite + file store service that twistd runs.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from imaged.api import (
    ByteRange,
    Change,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    IImageService,
    ImageQuery,
    ImageService,
    PatchOp,
    RequestContext,
    Status,
    Visibility,
)
from imaged.errors import Conflict, Forbidden, Gone, ImageNotFound, RangeNotSatisfiable, TooLarge
from imaged.service import Limits
from imaged.store.files import FileBlobStore
from imaged.store.sql import SQLMetadataStore
from imaged.testing import producer_of

OWNER = RequestContext.from_roles("p1", "u1", frozenset({"member"}))
OTHER = RequestContext.from_roles("p2", "u2", frozenset({"member"}))
ADMIN = RequestContext.from_roles("p0", "root", frozenset({"admin"}))
LIMITS = Limits(image_size_cap=1024 * 1024)


@pytest.fixture(params=["memory", "sqlite+files"])
def service(request: Any, tmp_path: Any, services: Any) -> Any:
    if request.param == "memory":
        yield services(limits=LIMITS)
        return
    metadata = SQLMetadataStore.open(f"sqlite:///{tmp_path}/meta.sqlite", reactor)
    blobs = FileBlobStore(str(tmp_path / "images"), reactor)
    yield ImageService(metadata, blobs, limits=LIMITS)
    blobs.close()
    metadata.close()


async def new_image(service: Any, **kw: Any) -> Any:
    kw.setdefault("disk_format", DiskFormat.RAW)
    kw.setdefault("container_format", ContainerFormat.BARE)
    return await service.create(OWNER, CreateImageRequest(**kw))


async def read_all(download: Any) -> bytes:
    chunks: list[bytes] = []

    @implementer(IConsumer)
    class Collect:
        def registerProducer(self, producer, streaming):
            pass

        def unregisterProducer(self):
            pass

        def write(self, data):
            chunks.append(data)

    await download.producer.startProducing(Collect())
    return b"".join(chunks)


@implementer(IBodyProducer)
class HeldProducer:
    """Writes its data only when ``release`` is called: an upload still in flight."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.done: Deferred[None] = Deferred()
        self.consumer: Any = None
        self.stopped = False
        self.started: Deferred[None] = Deferred()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        self.started.callback(None)
        return self.done

    def release(self) -> None:
        self.consumer.write(self.data)
        self.done.callback(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


def test_provides_interface(service: Any) -> None:
    assert verifyObject(IImageService, service)


@pytest_twisted.ensureDeferred
async def test_create_get_defaults(service: Any) -> None:
    image = await service.create(OWNER, CreateImageRequest(name="n", tags=("a",),
                                                          properties={"k": "v"}))
    assert image.status is Status.QUEUED and image.visibility is Visibility.SHARED
    assert image.owner == "p1" and image.tags == frozenset({"a"})
    got = await service.get(OWNER, image.id)
    assert got == image
    with pytest.raises(ImageNotFound):
        await service.get(OTHER, image.id)
    with pytest.raises(ImageNotFound):
        await service.get(OWNER, str(uuid.uuid4()))


@pytest_twisted.ensureDeferred
async def test_duplicate_id(service: Any) -> None:
    image = await new_image(service)
    with pytest.raises(Conflict):
        await new_image(service, id=image.id)


@pytest_twisted.ensureDeferred
async def test_list_pages(service: Any) -> None:
    made = [(await new_image(service, name=f"i{n}")).id for n in range(7)]
    seen: list[str] = []
    marker = None
    while True:
        page = await service.list(OWNER, ImageQuery(limit=3, marker=marker))
        seen.extend(i.id for i in page.images)
        if not page.full:
            break
        marker = page.images[-1].id
    assert seen == list(reversed(made))
    assert (await service.list(OTHER, ImageQuery(limit=10))).images == []


@pytest_twisted.ensureDeferred
async def test_update_is_all_or_nothing(service: Any) -> None:
    image = await new_image(service, name="before", properties={"a": "1"})
    with pytest.raises(Conflict):
        await service.update(OWNER, image.id, [
            Change(PatchOp.REPLACE, "name", "after"),
            Change(PatchOp.REMOVE, "missing"),
        ])
    assert (await service.get(OWNER, image.id)).name == "before"
    updated = await service.update(OWNER, image.id, [
        Change(PatchOp.REPLACE, "name", "after"),
        Change(PatchOp.ADD, "b", "2"),
        Change(PatchOp.REMOVE, "a"),
    ])
    assert updated.name == "after" and updated.properties == {"b": "2"}
    assert await service.get(OWNER, image.id) == updated
    with pytest.raises(ImageNotFound):
        await service.update(OTHER, image.id, [Change(PatchOp.REPLACE, "name", "x")])


@pytest_twisted.ensureDeferred
async def test_upload_download_roundtrip(service: Any) -> None:
    data = os.urandom(200_000)
    image = await new_image(service)
    active = await service.upload(OWNER, image.id, producer_of(data, 7000), len(data))
    assert active.status is Status.ACTIVE and active.size == len(data)
    assert active.checksum == hashlib.md5(data).hexdigest()
    assert active.os_hash_value == hashlib.sha512(data).hexdigest()
    assert await read_all(await service.download(OWNER, image.id)) == data
    part = await service.download(OWNER, image.id, ByteRange(first=10, last=19))
    assert (part.offset, part.length, part.ranged) == (10, 10, True)
    assert await read_all(part) == data[10:20]
    with pytest.raises(RangeNotSatisfiable):
        await service.download(OWNER, image.id, ByteRange(first=len(data)))
    with pytest.raises(Conflict):
        await service.upload(OWNER, image.id, producer_of(b"again"))


@pytest_twisted.ensureDeferred
async def test_upload_over_cap_restores_queued(service: Any) -> None:
    image = await new_image(service)
    with pytest.raises(TooLarge):
        await service.upload(OWNER, image.id, producer_of(b"\0" * (LIMITS.image_size_cap + 1)))
    after = await service.get(OWNER, image.id)
    assert after.status is Status.QUEUED and after.location is None
    assert (await service.download(OWNER, image.id)).producer is None


@pytest_twisted.ensureDeferred
async def test_second_upload_while_saving_conflicts(service: Any) -> None:
    image = await new_image(service)
    held = HeldProducer(b"first")
    first = service.upload(OWNER, image.id, held)
    await held.started
    saving = await service.get(OWNER, image.id)
    assert saving.status is Status.SAVING
    with pytest.raises(Conflict):
        await service.upload(OWNER, image.id, producer_of(b"second"))
    held.release()
    await first
    assert await read_all(await service.download(OWNER, image.id)) == b"first"


@pytest_twisted.ensureDeferred
async def test_delete_during_upload_is_gone_and_leaves_no_data(service: Any) -> None:
    image = await new_image(service)
    held = HeldProducer(b"doomed bytes")
    upload = service.upload(OWNER, image.id, held)
    await held.started
    await service.delete(OWNER, image.id)
    held.release()
    with pytest.raises(Gone):
        await upload
    with pytest.raises(ImageNotFound):
        await service.get(OWNER, image.id)


@pytest_twisted.ensureDeferred
async def test_failed_producer_restores_queued(service: Any) -> None:
    image = await new_image(service)
    held = HeldProducer(b"")
    upload = service.upload(OWNER, image.id, held)
    await held.started
    held.consumer.write(b"partial")
    held.done.errback(ConnectionError("client went away"))
    with pytest.raises(ConnectionError):
        await upload
    assert (await service.get(OWNER, image.id)).status is Status.QUEUED
    done = await service.upload(OWNER, image.id, producer_of(b"retry"))
    assert done.size == 5


@pytest_twisted.ensureDeferred
async def test_tags_and_actions(service: Any) -> None:
    image = await new_image(service)
    await service.add_tag(OWNER, image.id, "t")
    assert (await service.get(OWNER, image.id)).tags == frozenset({"t"})
    await service.remove_tag(OWNER, image.id, "t")
    with pytest.raises(Forbidden):
        await service.deactivate(ADMIN, image.id)
    await service.upload(OWNER, image.id, producer_of(b"x"))
    await service.deactivate(OWNER, image.id)  # the owning project's members may (Glance 33)
    await service.reactivate(OWNER, image.id)
    await service.deactivate(ADMIN, image.id)
    with pytest.raises(Forbidden):
        await service.download(OWNER, image.id)
    await service.reactivate(ADMIN, image.id)
    assert (await service.get(OWNER, image.id)).status is Status.ACTIVE


@pytest_twisted.ensureDeferred
async def test_delete(service: Any) -> None:
    image = await new_image(service, protected=True)
    with pytest.raises(Forbidden):
        await service.delete(OWNER, image.id)
    await service.update(OWNER, image.id, [Change(PatchOp.REPLACE, "protected", False)])
    await service.upload(OWNER, image.id, producer_of(b"data"))
    with pytest.raises(ImageNotFound):
        await service.delete(OTHER, image.id)
    await service.delete(OWNER, image.id)
    with pytest.raises(ImageNotFound):
        await service.get(OWNER, image.id)


@pytest_twisted.ensureDeferred
async def test_recover_after_unclean_stop(service: Any) -> None:
    import time

    kept = await new_image(service)
    await service.upload(OWNER, kept.id, producer_of(b"keep me"))
    stuck = await new_image(service)
    held = HeldProducer(b"never finished")
    dangling = service.upload(OWNER, stuck.id, held)  # the "crash": it never completes
    await held.started
    # ... and the process that ran it is gone: after a restart no upload of it runs here.
    service.uploads.live.pop(stuck.id)
    orphan = await new_image(service)
    await service.upload(OWNER, orphan.id, producer_of(b"orphan"))
    orphan_location = (await service.metadata.get(orphan.id)).location
    # The record forgets its data without the blob store hearing of it (a crash in between).
    await service.metadata.modify(orphan.id, lambda i, _: __import__("attrs").evolve(
        i, status=Status.QUEUED, locations=(), size=None))
    # Every blob completed so far is older than a start one second from now.
    recovered = await service.recover(time.time() + 1)
    assert list(recovered.reset) == [stuck.id]
    assert list(recovered.removed) == [orphan_location]
    assert (await service.get(OWNER, stuck.id)).status is Status.QUEUED
    assert await read_all(await service.download(OWNER, kept.id)) == b"keep me"
    again = await service.recover(time.time() + 1)
    assert (list(again.reset), list(again.removed)) == ([], [])
    dangling.addErrback(lambda _: None)
    dangling.cancel()
