"""Database trouble as clients see it: 503 (or 413 when full), never 500, and nothing left stuck."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from imaged.api import APIConfig, Limits, routes
from imaged.context import RequestContext
from imaged.errors import BadRequest, MetadataUnavailable, TooLarge
from imaged.model import Status
from imaged.store.database import make_engine, upgrade_schema
from imaged.store.sql import SQLMetadataStore, database_trouble
from imaged.testing import MemoryBlobStore, memory_image_service
from imaged.threads import InlineRunner

from .conftest import PROJECT_A, Client, fired
from .test_contract_image_service import HeldProducer

#: How long the file store waits for another process's lock in these tests (the daemon: 5 s).
BUSY = 0.05


class SQLiteFile:
    """A migrated SQLite file, a store on it run inline, and an outside process's connection."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        migrated = make_engine(self.url)
        upgrade_schema(migrated)
        migrated.dispose()
        self.store = SQLMetadataStore(make_engine(self.url, busy_timeout=BUSY), InlineRunner())
        self.outsider = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def lock(self) -> None:
        """Take the write lock as ``sqlite3 db 'BEGIN EXCLUSIVE'`` or a backup tool would."""
        self.outsider.execute("BEGIN EXCLUSIVE")

    def unlock(self) -> None:
        self.outsider.execute("ROLLBACK")


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[SQLiteFile]:
    database = SQLiteFile(tmp_path / "imaged.sqlite")
    yield database
    database.outsider.close()
    database.store.close()


@pytest.fixture
def parts(sqlite_file: SQLiteFile, clock: Clock) -> tuple[Any, Client, MemoryBlobStore]:
    blobs = MemoryBlobStore()
    service = memory_image_service(
        metadata=sqlite_file.store, blobs=blobs, clock=clock, limits=Limits()
    )
    client = Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
    return service, client, blobs


def images_of(client: Client) -> list[dict[str, Any]]:
    reply = client.get("/v2/images", headers=PROJECT_A)
    assert reply.code == 200
    return sorted(reply.json()["images"], key=lambda image: image["id"])


# -- the meaning of driver errors ------------------------------------------------------------


def test_driver_errors_have_a_meaning_for_clients() -> None:
    locked = sqlite3.OperationalError("database is locked")
    full = sqlite3.OperationalError("database or disk is full")
    assert isinstance(database_trouble(locked, write=True), MetadataUnavailable)
    assert isinstance(database_trouble(full, write=True), TooLarge)
    assert isinstance(database_trouble(full, write=False), MetadataUnavailable)
    overflow = OverflowError("Python int too large to convert to SQLite INTEGER")
    assert isinstance(database_trouble(overflow, write=True), BadRequest)
    assert isinstance(
        database_trouble(ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
                         write=True),
        BadRequest,
    )
    # Not the database's: a bug stays a bug (500), it is not dressed up as 503.
    assert database_trouble(KeyError("x"), write=True) is None
    assert database_trouble(ValueError("something else"), write=True) is None
    assert database_trouble(OverflowError("date value out of range"), write=True) is None
    assert database_trouble(sqlite3.ProgrammingError("no such column: x"), write=False) is None


# -- SQLite locked by another process ----------------------------------------------------------


def test_locked_sqlite_reads_go_on_and_writes_answer_503(
    sqlite_file: SQLiteFile, parts: tuple[Any, Client, MemoryBlobStore]
) -> None:
    _service, client, _blobs = parts
    image = client.create(name="before", _headers=PROJECT_A)
    before = images_of(client)
    sqlite_file.lock()
    try:
        # Reads: WAL lets them see the last committed state while the lock is held.
        shown = client.get(f"/v2/images/{image['id']}", headers=PROJECT_A)
        assert shown.code == 200 and shown.json()["name"] == "before"
        health = client.get("/healthcheck")
        assert health.code == 200
        # Writes: 503 with Retry-After, in Glance's format, and nothing changed.
        created = client.post("/v2/images", json={"name": "during"},
                              headers={**PROJECT_A, "Accept": "application/json"})
        assert created.code == 503, created.body
        assert created.header("Retry-After") == "5"
        assert created.json()["message"].startswith(
            "The image metadata database is unavailable.")
        patched = client.patch(f"/v2/images/{image['id']}",
                               [{"op": "replace", "path": "/name", "value": "x"}],
                               headers=PROJECT_A)
        assert patched.code == 503
        deleted = client.delete(f"/v2/images/{image['id']}", headers=PROJECT_A)
        assert deleted.code == 503
    finally:
        sqlite_file.unlock()
    assert images_of(client) == before
    assert client.post("/v2/images", json={"name": "after"}, headers=PROJECT_A).code == 201


def test_full_metadata_database_answers_413_for_writes(
    sqlite_file: SQLiteFile, parts: tuple[Any, Client, MemoryBlobStore]
) -> None:
    _service, client, _blobs = parts
    client.create(name="first", _headers=PROJECT_A)
    before = images_of(client)
    # The database may not grow by one more page: what a full disk does to SQLite.
    pages = sqlite_file.outsider.execute("PRAGMA page_count").fetchone()[0]
    with sqlite_file.store._engine.connect() as connection:
        connection.exec_driver_sql(f"PRAGMA max_page_count={pages}")
    tags = [f"tag-{n:03d}-" + "x" * 200 for n in range(100)]
    properties = {f"property_{n}": "y" * 4000 for n in range(100)}
    reply = client.post("/v2/images", json={"name": "big", "tags": tags, **properties},
                        headers=PROJECT_A)
    assert reply.code == 413, reply.body
    assert b"The image metadata database is full." in reply.body
    assert images_of(client) == before
    # Reads are fine meanwhile.
    assert client.get(f"/v2/images/{before[0]['id']}", headers=PROJECT_A).code == 200


def test_postgresql_down_answers_503() -> None:
    # Nothing listens on port 1: what a stopped PostgreSQL looks like to the driver.
    engine = make_engine("postgresql://imaged@127.0.0.1:1/imaged?connect_timeout=2")
    store = SQLMetadataStore(engine, InlineRunner())
    service = memory_image_service(metadata=store, limits=Limits())
    client = Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
    for method, path in (("GET", "/v2/images"), ("POST", "/v2/images"),
                         ("GET", "/v2/images/4d6e7a3a-1f5c-4a53-9b1e-1c3a4f3a2b10")):
        reply = client.request(method, path, json={} if method == "POST" else None,
                               headers=PROJECT_A)
        assert reply.code == 503, (method, path, reply.body)
        assert reply.header("Retry-After") == "5"
    store.close()


# -- an upload whose publication meets a locked database ------------------------------------------


class LockingProducer(HeldProducer):
    """Image bytes; before producing them, the database is locked from outside."""

    def __init__(self, data: bytes, lock: Any) -> None:
        super().__init__(data)
        self._lock = lock

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self._lock()
        done = super().startProducing(consumer)
        self.release()
        return done


def test_upload_meeting_a_locked_database_is_repaired_when_it_answers(
    sqlite_file: SQLiteFile, parts: tuple[Any, Client, MemoryBlobStore], clock: Clock
) -> None:
    service, client, blobs = parts
    image = client.create(name="u", disk_format="raw", container_format="bare",
                          _headers=PROJECT_A)
    context = RequestContext.from_roles("project-a", "alice", frozenset({"member"}))
    upload = service.upload(context, image["id"], LockingProducer(b"x" * 1000, sqlite_file.lock))
    failures: list[Any] = []
    upload.addErrback(failures.append)
    assert failures and failures[0].check(MetadataUnavailable)
    # The image is stuck ``saving`` while the lock is held, and its bytes are in the store.
    shown = fired(sqlite_file.store.get(image["id"]))
    assert shown.status is Status.SAVING
    assert service.uploads.repairs, "a repair is waiting for the database"
    clock.advance(1.5)  # still locked: the repair tries and waits again
    assert fired(sqlite_file.store.get(image["id"])).status is Status.SAVING
    sqlite_file.unlock()
    clock.advance(30)
    repaired = fired(sqlite_file.store.get(image["id"]))
    assert repaired.status is Status.QUEUED
    assert blobs.blobs == {}
    assert not service.uploads.repairs
    # And the client can simply upload again.
    again = client.upload(image["id"], b"y" * 10, **PROJECT_A)
    assert again.code == 204
    assert fired(sqlite_file.store.get(image["id"])).status is Status.ACTIVE


# -- dead uploads and orphans are repaired by the running nodes themselves ---------------------


MEMBER = RequestContext.from_roles("project-a", "alice", frozenset({"member"}))


@pytest.fixture
def two_nodes(clock: Clock) -> tuple[Any, Any, MemoryBlobStore]:
    """Two imaged processes sharing one database and one blob store."""
    metadata = SQLMetadataStore.in_memory()
    blobs = MemoryBlobStore()
    first, second = (
        memory_image_service(metadata=metadata, blobs=blobs, clock=clock, node=name)
        for name in ("node-a", "node-b")
    )
    return first, second, blobs


def _queued_image(service: Any) -> str:
    from imaged.model import ContainerFormat, CreateImageRequest, DiskFormat

    request = CreateImageRequest(name="u", disk_format=DiskFormat.RAW,
                                 container_format=ContainerFormat.BARE)
    image: Any = fired(service.create(MEMBER, request))
    return str(image.id)


def test_an_upload_of_a_silent_node_is_released_by_another(
    two_nodes: tuple[Any, Any, MemoryBlobStore], clock: Clock
) -> None:
    first, second, _blobs = two_nodes
    image_id = _queued_image(first)
    held = HeldProducer(b"data")
    upload = first.upload(MEMBER, image_id, held)
    saving = fired(first.metadata.get(image_id))
    assert saving.status is Status.SAVING and saving.upload_node.startswith("node-a#")
    fired(first.sweep())  # node-a's heartbeat
    clock.advance(100)
    fired(first.sweep())
    clock.advance(100)
    # node-a beat 100 s ago: alive, its upload is left alone even though it is old.
    assert fired(second.sweep()).reset == []
    assert fired(first.metadata.get(image_id)).status is Status.SAVING
    # node-a goes silent (killed) for longer than the lease.
    clock.advance(121)
    assert list(fired(second.sweep()).reset) == [image_id]
    released = fired(first.metadata.get(image_id))
    assert (released.status, released.upload_node) == (Status.QUEUED, None)
    assert not upload.called


def test_a_node_keeps_its_running_uploads_and_releases_its_dead_ones(
    two_nodes: tuple[Any, Any, MemoryBlobStore], clock: Clock
) -> None:
    first, _second, _blobs = two_nodes
    running, dead = _queued_image(first), _queued_image(first)
    # (Held in variables: an unreferenced coroutine waiting on nothing would be collected.)
    uploads = [first.upload(MEMBER, running, HeldProducer(b"data"))]
    # An upload whose request vanished without its repair (a bug, or a cancelled coroutine):
    # the image names this node but no upload of it runs here.
    uploads.append(first.upload(MEMBER, dead, HeldProducer(b"data")))
    del first.uploads.live[dead]
    assert fired(first.sweep()).reset == []  # too recent to judge
    clock.advance(200)
    assert list(fired(first.sweep()).reset) == [dead]
    assert fired(first.metadata.get(running)).status is Status.SAVING
    assert fired(first.metadata.get(dead)).status is Status.QUEUED


def test_a_finished_upload_is_not_released(
    two_nodes: tuple[Any, Any, MemoryBlobStore], clock: Clock
) -> None:
    first, second, blobs = two_nodes
    image_id = _queued_image(first)
    held = HeldProducer(b"data")
    uploaded = first.upload(MEMBER, image_id, held)
    held.release()
    assert fired(uploaded).status is Status.ACTIVE
    clock.advance(1000)
    assert fired(second.sweep()).reset == []
    assert fired(first.metadata.get(image_id)).status is Status.ACTIVE
    assert list(blobs.blobs) == [fired(first.metadata.get(image_id)).location]


def test_orphan_blobs_are_removed_now_and_then(
    two_nodes: tuple[Any, Any, MemoryBlobStore], clock: Clock
) -> None:
    from imaged.service import ORPHAN_MARGIN, ORPHAN_SWEEPS
    from imaged.testing import producer_of

    first, _second, blobs = two_nodes
    kept = _queued_image(first)
    assert fired(first.upload(MEMBER, kept, producer_of(b"kept"))).status is Status.ACTIVE
    orphan: Any = fired(blobs.write("gone-image", producer_of(b"orphan"), "sha512", 100))
    blobs.written_at[orphan.location] = clock.seconds()
    clock.advance(ORPHAN_MARGIN + 1)
    for _ in range(ORPHAN_SWEEPS):
        assert fired(first.sweep()).removed == []  # removal runs in the background
    assert first.orphans_removed == [orphan.location]
    assert orphan.location not in blobs.blobs
    assert fired(first.metadata.get(kept)).location in blobs.blobs


def test_the_sweeper_runs_on_its_clock_and_survives_failures(clock: Clock) -> None:
    from twisted.internet.defer import fail, succeed

    from imaged.recovery import Sweeper

    outcomes = [fail(MetadataUnavailable("down")), succeed(None), succeed(None)]
    calls: list[float] = []

    def sweep() -> Deferred[Any]:
        calls.append(clock.seconds())
        return outcomes.pop(0)

    sweeper = Sweeper(sweep, clock, 30.0)
    sweeper.startService()
    start = clock.seconds()
    clock.advance(30)
    clock.advance(30)
    sweeper.stopService()
    clock.advance(30)
    assert [round(t - start) for t in calls] == [30, 60]


def test_a_released_upload_that_finishes_late_does_not_touch_the_new_one(
    two_nodes: tuple[Any, Any, MemoryBlobStore], clock: Clock
) -> None:
    from imaged.errors import Gone

    first, second, blobs = two_nodes
    image_id = _queued_image(first)
    slow = HeldProducer(b"data")
    late = first.upload(MEMBER, image_id, slow)
    fired(first.sweep())
    clock.advance(UPLOAD_LEASE_PLUS)  # node-a falls silent (partitioned)
    assert list(fired(second.sweep()).reset) == [image_id]
    fresh = HeldProducer(b"data")
    retried = second.upload(MEMBER, image_id, fresh)  # the client retries on node-b
    claim = fired(second.metadata.get(image_id)).upload_node
    assert claim.startswith("node-b#")
    slow.release()  # node-a comes back and its upload completes
    failures: list[Any] = []
    late.addErrback(failures.append)
    assert failures and failures[0].check(Gone)
    image = fired(second.metadata.get(image_id))
    assert (image.status, image.upload_node) == (Status.SAVING, claim)  # untouched
    fresh.release()
    assert fired(retried).status is Status.ACTIVE
    kept = fired(second.metadata.get(image_id)).location
    # node-a's bytes were left to the orphan sweep (another upload held the image, perhaps
    # at the same location); the sweep removes them and keeps the image's.
    from imaged.recovery import remove_orphans

    leftovers = fired(ensure(remove_orphans(second.metadata, blobs, float("inf"))))
    assert kept not in leftovers and list(blobs.blobs) == [kept]


def test_restore_with_a_claim_leaves_another_claim_alone(
    two_nodes: tuple[Any, Any, MemoryBlobStore]
) -> None:
    first, _second, _blobs = two_nodes
    image_id = _queued_image(first)
    upload = first.upload(MEMBER, image_id, HeldProducer(b"data"))
    claim = fired(first.metadata.get(image_id)).upload_node
    assert fired(ensure(first.uploads.restore(image_id, "node-x#000000000000"))) is False
    assert fired(first.metadata.get(image_id)).status is Status.SAVING
    assert fired(ensure(first.uploads.restore(image_id, claim))) is True
    assert fired(first.metadata.get(image_id)).status is Status.QUEUED
    assert not upload.called


def ensure(coroutine: Any) -> Deferred[Any]:
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(coroutine)


UPLOAD_LEASE_PLUS = 121.0 + 120.0
