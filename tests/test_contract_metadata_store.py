"""
The IMetadataStore contract, run against SQLite in memory (inline) and SQLite on disk in its
own thread (as twistd runs it); plus the schema migrations.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest
import pytest_twisted
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from zope.interface.verify import verifyObject

from imaged.errors import BadRequest, Conflict, ImageNotFound
from imaged.interfaces import IMetadataStore
from imaged.model import (
    Image,
    ImageQuery,
    Location,
    Member,
    MemberStatus,
    Scope,
    SortDir,
    SortKey,
    Status,
    Visibility,
)
from imaged.store.database import make_engine, schema_revision, upgrade_schema
from imaged.store.sql import SQLMetadataStore
from imaged.store.tables import metadata as tables

from .conftest import STORE_KINDS, contract_store

EVERYTHING = Scope(everything=True, project=None)
NOW = datetime(2027, 1, 15, 8, 0, 0)


@pytest.fixture(params=STORE_KINDS)
def store(request: Any, tmp_path: Any) -> Any:
    yield from contract_store(
        request, tmp_path, "image_tags, image_properties, image_members, images")


def make(**kw: Any) -> Image:
    now = kw.pop("at", NOW)
    defaults = dict(id=str(uuid.uuid4()), status=Status.QUEUED, visibility=Visibility.SHARED,
                    created_at=now, updated_at=now)
    defaults.update(kw)
    return Image(**defaults)


def test_provides_interface(store: Any) -> None:
    assert verifyObject(IMetadataStore, store)


@pytest_twisted.ensureDeferred
async def test_ping(store: Any) -> None:
    assert await store.ping() is None


@pytest_twisted.ensureDeferred
async def test_insert_get_roundtrip(store: Any) -> None:
    image = make(name="n", tags=frozenset({"a", "b"}), properties={"k": "v", "x": "y"},
                 size=2**40, owner="p")
    assert await store.insert(image) == image
    assert await store.get(image.id) == image
    assert await store.get(str(uuid.uuid4())) is None
    with pytest.raises(Conflict):
        await store.insert(make(id=image.id))


@pytest_twisted.ensureDeferred
async def test_modify_writes_all_or_nothing(store: Any) -> None:
    image = await store.insert(make(tags=frozenset({"a"}), properties={"k": "v"}))

    def broken(old: Image, _member: Member | None) -> Image:
        raise Conflict("no")

    with pytest.raises(Conflict):
        await store.modify(image.id, broken)
    assert await store.get(image.id) == image
    change = await store.modify(image.id, lambda old, _: attrs.evolve(
        old, name="m", tags=frozenset({"b"}), properties={"k": "w", "z": "1"}))
    assert change.before == image and change.changed
    assert await store.get(image.id) == change.after
    assert change.after.name == "m" and change.after.tags == {"b"}
    unchanged = await store.modify(image.id, lambda old, _: old)
    assert unchanged.before == unchanged.after == change.after and not unchanged.changed
    with pytest.raises(ImageNotFound):
        await store.modify(str(uuid.uuid4()), lambda old, _: old)


@pytest_twisted.ensureDeferred
async def test_modify_reads_the_callers_membership_in_its_transaction(store: Any) -> None:
    """``member_of`` hands ``mutate`` that project's membership of a shared image it does not
    own, so a policy check needs no transaction of its own."""
    shared = await store.insert(make(owner="p1"))
    private = await store.insert(make(owner="p1", visibility=Visibility.PRIVATE))
    for image in (shared, private):
        await store.add_member(Member(image.id, "p2", MemberStatus.ACCEPTED, NOW, NOW))
    seen: list[Member | None] = []

    def look(image: Image, member: Member | None) -> Image:
        seen.append(member)
        return image

    await store.modify(shared.id, look, member_of="p2")
    await store.modify(shared.id, look, member_of="p3")
    await store.modify(shared.id, look, member_of="p1")  # the owner: membership is moot
    await store.modify(private.id, look, member_of="p2")  # not shared: moot too
    await store.modify(shared.id, look)
    assert [m.member_id if m else None for m in seen] == ["p2", None, None, None, None]
    assert seen[0] is not None and seen[0].status is MemberStatus.ACCEPTED


@pytest_twisted.ensureDeferred
async def test_deleted_rows_are_gone_but_ids_stay_taken(store: Any) -> None:
    image = await store.insert(make())
    await store.modify(image.id, lambda old, _: attrs.evolve(old, status=Status.DELETED))
    assert await store.get(image.id) is None
    with pytest.raises(ImageNotFound):
        await store.modify(image.id, lambda old, _: old)
    with pytest.raises(Conflict):
        await store.insert(make(id=image.id))
    assert (await store.list(EVERYTHING, ImageQuery(limit=10))).images == []


@pytest_twisted.ensureDeferred
async def test_concurrent_modifies_are_serialised(store: Any) -> None:
    image = await store.insert(make(properties={"n": "0"}))

    def bump(old: Image, _member: Member | None) -> Image:
        return attrs.evolve(old, properties={"n": str(int(old.properties["n"]) + 1)})

    await gatherResults([store.modify(image.id, bump) for _ in range(25)])
    assert (await store.get(image.id)).properties == {"n": "25"}


@pytest_twisted.ensureDeferred
async def test_keyset_pages_equal_python_sort(store: Any) -> None:
    rng = random.Random(7)
    base = NOW
    images = []
    for _i in range(40):
        images.append(await store.insert(make(
            name=rng.choice([None, "a", "b", "c"]),
            size=rng.choice([None, 1, 2, 3]),
            status=rng.choice([Status.QUEUED, Status.ACTIVE]),
            at=base + timedelta(microseconds=rng.choice([0, 1, 2])),
        )))
    for sort in (
        [SortKey("name", SortDir.ASC)],
        [SortKey("name", SortDir.DESC)],
        [SortKey("size", SortDir.DESC), SortKey("name", SortDir.ASC)],
        [SortKey("status", SortDir.ASC)],
        [],
    ):
        full = sort + [k for k in (SortKey("created_at", SortDir.DESC), SortKey("id", SortDir.DESC))
                       if k.key not in {s.key for s in sort}]

        def sort_value(image: Image, key: SortKey) -> Any:
            value = getattr(image, key.key)
            value = value.value if hasattr(value, "value") else value
            return (value is not None, value if value is not None else 0)

        expected = list(images)
        for key in reversed(full):
            expected.sort(key=lambda i: sort_value(i, key), reverse=key.direction is SortDir.DESC)
        got: list[str] = []
        marker = None
        while True:
            page = await store.list(EVERYTHING, ImageQuery(limit=7, sort=tuple(full),
                                                           marker=marker))
            got.extend(i.id for i in page.images)
            if not page.full:
                break
            marker = page.images[-1].id
        assert got == [i.id for i in expected], sort


@pytest_twisted.ensureDeferred
async def test_unknown_marker(store: Any) -> None:
    with pytest.raises(BadRequest):
        await store.list(EVERYTHING, ImageQuery(limit=5, marker=str(uuid.uuid4())))


def test_migrations_create_exactly_the_tables(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/mig.sqlite")
    assert schema_revision(engine)[0] is None
    upgrade_schema(engine)
    current, head = schema_revision(engine)
    assert current == head
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), tables)
    assert diff == []
    upgrade_schema(engine)  # idempotent
    engine.dispose()


def test_refuses_out_of_date_schema_when_not_migrating(tmp_path: Any) -> None:
    with pytest.raises(RuntimeError, match="db upgrade"):
        SQLMetadataStore.open(f"sqlite:///{tmp_path}/old.sqlite", reactor, migrate=False)


def test_list_page_uses_an_index(tmp_path: Any) -> None:
    """The default list order is an index scan, not a sort of the whole table."""

    from imaged.store.queries import ListQuery

    engine = make_engine(f"sqlite:///{tmp_path}/plan.sqlite")
    upgrade_schema(engine)
    statement = ListQuery(Scope(everything=False, project="p"), ImageQuery(limit=25)).page(None)
    with engine.connect() as connection:
        compiled = statement.compile(engine)
        values = compiled.construct_params({"viewer_project": "p"})
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled),
            tuple(values[name] for name in compiled.positiontup),
        ).all()
    text = " ".join(str(row[-1]) for row in plan)
    assert "ix_images_deleted_created_at" in text and "TEMP B-TREE" not in text, text
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_status_and_location_queries(store: Any) -> None:
    saving = await store.insert(make(status=Status.SAVING))
    await store.insert(make(status=Status.QUEUED))
    two = (Location("file:///x/1", "a"), Location("s3://b/1", "b"))
    active = await store.insert(make(status=Status.ACTIVE, locations=two))
    assert (await store.get(active.id)).locations == two  # every copy, with its store
    gone = await store.insert(make(status=Status.ACTIVE, locations=(Location("file:///x/2"),)))
    await store.modify(gone.id, lambda i, _: attrs.evolve(i, status=Status.DELETED))
    assert await store.ids_with_status(Status.SAVING) == [saving.id]
    assert await store.locations() == {"file:///x/1", "s3://b/1"}


@pytest_twisted.ensureDeferred
async def test_upload_leases(store: Any) -> None:
    later = NOW + timedelta(seconds=90)
    await store.heartbeat("node-a", NOW)
    await store.heartbeat("node-a", later)  # a second beat updates the first
    await store.heartbeat("node-b", NOW)
    held = await store.insert(make(status=Status.SAVING, upload_node="node-a"))
    orphaned = await store.insert(make(status=Status.SAVING, upload_node="node-gone"))
    unnamed = await store.insert(make(status=Status.SAVING))
    await store.insert(make(status=Status.QUEUED))
    uploads = {u.image_id: u for u in await store.saving_uploads()}
    assert set(uploads) == {held.id, orphaned.id, unnamed.id}
    assert (uploads[held.id].node, uploads[held.id].node_seen) == ("node-a", later)
    assert uploads[held.id].updated_at == held.updated_at
    assert (uploads[orphaned.id].node, uploads[orphaned.id].node_seen) == ("node-gone", None)
    assert (uploads[unnamed.id].node, uploads[unnamed.id].node_seen) == (None, None)
    # Leaving ``saving`` forgets the node.
    change = await store.modify(
        held.id, lambda i, _: attrs.evolve(i, status=Status.QUEUED, upload_node=None))
    assert change.after.upload_node is None
    assert (await store.get(held.id)).upload_node is None
    # Silent nodes are forgotten, unless an image still names them.
    await store.modify(unnamed.id, lambda i, _: attrs.evolve(i, upload_node="node-b"))
    assert await store.forget_nodes(later) == 0  # node-b holds an upload; node-a is fresh
    await store.modify(unnamed.id, lambda i, _: attrs.evolve(i, status=Status.QUEUED,
                                                               upload_node=None))
    assert await store.forget_nodes(later) == 1
    assert await store.forget_nodes(later + timedelta(seconds=1)) == 1  # node-a


@pytest_twisted.ensureDeferred
async def test_members(store: Any) -> None:
    image = await store.insert(make())
    now = NOW
    first = await store.add_member(Member(image.id, "p2", MemberStatus.PENDING, now, now))
    await store.add_member(Member(image.id, "p3", MemberStatus.PENDING, now, now))
    with pytest.raises(Conflict):
        await store.add_member(Member(image.id, "p2", MemberStatus.PENDING, now, now))
    assert await store.get_member(image.id, "p2") == first
    assert await store.get_member(image.id, "p9") is None
    assert [m.member_id for m in await store.list_members(image.id)] == ["p2", "p3"]
    later = now + timedelta(seconds=1)
    accepted = await store.update_member(image.id, "p2", MemberStatus.ACCEPTED, later)
    assert accepted.status is MemberStatus.ACCEPTED and accepted.updated_at == later
    scope = Scope(everything=False, project="p2")
    assert [i.id for i in (await store.list(scope, ImageQuery(limit=5))).images] == [image.id]
    assert await store.delete_member(image.id, "p2") is True
    assert await store.delete_member(image.id, "p2") is False
    assert (await store.list(scope, ImageQuery(limit=5))).images == []


@pytest_twisted.ensureDeferred
async def test_usage_counts_a_projects_live_images(store: Any) -> None:
    await store.insert(make(owner="p", size=100, status=Status.ACTIVE))
    await store.insert(make(owner="p", size=None, status=Status.SAVING))
    await store.insert(make(owner="p", size=None))
    await store.insert(make(owner="q", size=7, status=Status.ACTIVE))
    gone = await store.insert(make(owner="p", size=1000, status=Status.ACTIVE))
    await store.modify(gone.id, lambda image, _: attrs.evolve(image, status=Status.DELETED))
    usage = await store.usage("p")
    assert (usage.size_total, usage.image_count, usage.uploading) == (100, 3, 1)
    nobody = await store.usage("nobody")
    assert (nobody.size_total, nobody.image_count, nobody.uploading) == (0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_two_nodes_race_for_one_image(postgres_url: str) -> None:
    """Two imaged processes' stores on one PostgreSQL: ``queued -> saving`` is won once."""
    nodes = [SQLMetadataStore.open(postgres_url, reactor, migrate=False) for _ in range(2)]
    try:
        for _ in range(10):
            image = await nodes[0].insert(make())

            def start(old: Image, _member: Member | None) -> Image:
                if old.status is not Status.QUEUED:
                    raise Conflict("already saving")
                return attrs.evolve(old, status=Status.SAVING)

            outcomes = await gatherResults(
                [node.modify(image.id, start).addErrback(lambda f: f.trap(Conflict) and None)
                 for node in nodes for _ in range(3)]
            )
            assert sum(1 for o in outcomes if o is not None) == 1
            assert (await nodes[1].get(image.id)).status is Status.SAVING
    finally:
        for node in nodes:
            await node.close()


def test_migrations_match_the_tables_on_postgresql(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    current, head = schema_revision(engine)
    assert current == head
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), tables)
    engine.dispose()
    assert diff == []
