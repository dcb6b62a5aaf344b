"""
The ``IMetadefStore`` contract, run against every implementation: SQLite in memory, a SQLite
file with its own threads, and PostgreSQL.  All or nothing, guards inside the transaction,
keyset pages equal to a plain sort, cascades, and loading Glance's definition files in each
mode (and exporting them back).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet.defer import Deferred, gatherResults
from zope.interface.verify import verifyObject

from imaged.errors import Duplicate, Forbidden, NotFound
from imaged.interfaces import IMetadefService, IMetadefStore
from imaged.metadefs.files import SHIPPED, read_definitions, write_definitions
from imaged.metadefs.model import (
    Association,
    CatalogScope,
    Content,
    Definition,
    Kind,
    LoadMode,
    Namespace,
    NamespaceQuery,
    NamespaceVisibility,
    SortDir,
    TagQuery,
)
from imaged.metadefs.service import MetadefService
from imaged.store.sql import SQLMetadataStore
from imaged.store.tables import metadef_associations, metadef_definitions

from .conftest import STORE_KINDS, contract_store

NOW = datetime(2027, 1, 15, 8, 0, 0)
EVERYTHING = CatalogScope(everything=True, project=None)


def allow(_: Namespace) -> None:
    pass


def refuse(_: Namespace) -> None:
    raise Forbidden("no")


@pytest.fixture(params=STORE_KINDS)
def store(request: Any, tmp_path: Any) -> Any:
    yield from contract_store(
        request, tmp_path,
        "metadef_definitions, metadef_associations, metadef_namespaces, metadef_resource_types")


def namespace(name: str, at: datetime = NOW, **kw: Any) -> Namespace:
    return Namespace(namespace=name, created_at=at, updated_at=at, **kw)


def definition(kind: Kind, name: str, at: datetime = NOW, **body: Any) -> Definition:
    return Definition(kind=kind, name=name, created_at=at, updated_at=at, body=body)


def content(name: str, *definitions: Definition, associations: tuple[str, ...] = (),
            **kw: Any) -> Content:
    return Content(
        namespace=namespace(name, **kw),
        associations=tuple(Association(name=a, created_at=NOW, updated_at=NOW, prefix="p_")
                           for a in associations),
        definitions=definitions,
    )


def rows(store: SQLMetadataStore, table: Any) -> int:
    with store._engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar() or 0)


def test_provides_the_interfaces(store: SQLMetadataStore) -> None:
    assert verifyObject(IMetadefStore, store)
    assert verifyObject(IMetadefService, MetadefService(store))


@pytest_twisted.ensureDeferred
async def test_create_is_all_or_nothing(store: SQLMetadataStore) -> None:
    broken = content(
        "N", definition(Kind.OBJECT, "o"), definition(Kind.TAG, "t"), definition(Kind.TAG, "t"),
        associations=("Brand::New",),
    )
    with pytest.raises(Duplicate, match="name=t already exists in namespace=N"):
        await store.create_namespace(broken)
    assert await store.list_namespaces(EVERYTHING, NamespaceQuery(limit=10)) == []
    assert await store.resource_types() == []  # the association's new type went too
    made = await store.create_namespace(content("N", definition(Kind.TAG, "t")))
    assert [d.name for d in made.definitions] == ["t"]
    with pytest.raises(Duplicate, match="namespace=N already exists"):
        await store.create_namespace(content("N"))


@pytest_twisted.ensureDeferred
async def test_guards_stop_every_change(store: SQLMetadataStore) -> None:
    await store.create_namespace(content(
        "N", definition(Kind.OBJECT, "o"), definition(Kind.TAG, "t"),
        associations=("OS::Glance::Image",)))
    before = await store.export()
    attempts = [
        store.update_namespace("N", refuse, lambda ns: ns),
        store.delete_namespace("N", refuse),
        store.add_definitions("N", [definition(Kind.TAG, "u")], refuse),
        store.add_definitions("N", [definition(Kind.TAG, "u")], refuse, replace_kind=Kind.TAG),
        store.replace_definition("N", Kind.TAG, "t", refuse, lambda d: d),
        store.remove_definitions("N", Kind.TAG, refuse),
        store.remove_definitions("N", Kind.OBJECT, refuse, "o"),
        store.associate("N", Association("R", NOW, NOW), refuse),
        store.dissociate("N", "OS::Glance::Image", refuse),
        store.content("N", refuse),
        store.definitions("N", Kind.TAG, refuse),
        store.definition("N", Kind.TAG, "t", refuse),
        store.associations("N", refuse),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden):
            await attempt
    assert await store.export() == before


@pytest_twisted.ensureDeferred
async def test_a_change_that_fails_midway_changes_nothing(store: SQLMetadataStore) -> None:
    await store.create_namespace(content("N", definition(Kind.TAG, "a"), definition(Kind.TAG, "b")))
    before = await store.export()
    # Replacing the tags with a list that clashes with itself: the old tags stay.
    with pytest.raises(Duplicate):
        await store.add_definitions(
            "N", [definition(Kind.TAG, "c"), definition(Kind.TAG, "c")], allow,
            replace_kind=Kind.TAG)

    def boom(old: Namespace) -> Namespace:
        raise RuntimeError("a bug in the change")

    with pytest.raises(RuntimeError):
        await store.update_namespace("N", allow, boom)
    assert await store.export() == before


@pytest_twisted.ensureDeferred
async def test_renames(store: SQLMetadataStore) -> None:
    await store.create_namespace(content("A", definition(Kind.OBJECT, "o1"),
                                         definition(Kind.OBJECT, "o2")))
    await store.create_namespace(content("B"))
    with pytest.raises(Duplicate, match="same name of B"):
        await store.update_namespace("A", allow, lambda ns: Namespace(
            namespace="B", created_at=ns.created_at, updated_at=ns.updated_at))
    with pytest.raises(Duplicate, match="same name=o2"):
        await store.replace_definition("A", Kind.OBJECT, "o1", allow, lambda d: Definition(
            kind=d.kind, name="o2", created_at=d.created_at, updated_at=d.updated_at))
    later = NOW + timedelta(seconds=5)
    renamed = await store.replace_definition("A", Kind.OBJECT, "o1", allow, lambda d: Definition(
        kind=d.kind, name="o3", created_at=later, updated_at=later, body={"description": "x"}))
    assert renamed.name == "o3"
    kept = await store.definition("A", Kind.OBJECT, "o3", allow)
    assert kept.created_at == NOW and kept.updated_at == later  # made when it was made
    assert kept.body == {"description": "x"}
    with pytest.raises(NotFound, match="Could not find metadata object o1"):
        await store.definition("A", Kind.OBJECT, "o1", allow)


@pytest_twisted.ensureDeferred
async def test_deleting_a_namespace_leaves_no_rows(store: SQLMetadataStore) -> None:
    await store.create_namespace(content(
        "N", definition(Kind.OBJECT, "o"), definition(Kind.PROPERTY, "p", type="string"),
        definition(Kind.TAG, "t"), associations=("R1", "R2")))
    await store.create_namespace(content("M", definition(Kind.TAG, "t"), associations=("R1",)))
    await store.delete_namespace("N", allow)
    assert rows(store, metadef_definitions) == 1
    assert rows(store, metadef_associations) == 1
    with pytest.raises(NotFound):
        await store.delete_namespace("N", allow)
    assert [t.name for t in await store.resource_types()] == ["R1", "R2"]


@pytest_twisted.ensureDeferred
async def test_namespace_pages_equal_a_plain_sort(store: SQLMetadataStore) -> None:
    rng = random.Random(16)
    made = []
    for i in range(23):
        at = NOW + timedelta(seconds=rng.choice([0, 1, 2]))  # ties on created_at
        made.append(namespace(
            f"N{i:02d}", at=at, display_name=rng.choice([None, "a", "b", "c"]),
            visibility=rng.choice(list(NamespaceVisibility)), owner=rng.choice(["p", "q"]),
            protected=rng.choice([True, False])))
    for ns in made:
        await store.create_namespace(Content(namespace=ns))
    for key in ("namespace", "display_name", "created_at", "visibility", "owner", "protected"):
        for direction in SortDir:
            seen: list[str] = []
            marker = None
            while True:
                page = await store.list_namespaces(EVERYTHING, NamespaceQuery(
                    limit=4, marker=marker, sort_key=key, sort_dir=direction))
                seen += [item.namespace.namespace for item in page]
                if len(page) < 4:
                    break
                marker = page[-1].namespace.namespace
            assert sorted(seen) == sorted(ns.namespace for ns in made), (key, direction)
            def sort_value(name: str, key: str = key) -> Any:
                value = getattr(next(ns for ns in made if ns.namespace == name), key)
                if value is None:
                    return ""  # nulls sort as empty text
                if isinstance(value, bool):
                    return int(value)
                return value.value if hasattr(value, "value") else value

            values = [sort_value(name) for name in seen]
            assert values == sorted(values, reverse=direction is SortDir.DESC), (key, direction)
    scoped = await store.list_namespaces(CatalogScope(everything=False, project="p"),
                                         NamespaceQuery(limit=100))
    assert {item.namespace.namespace for item in scoped} == {
        ns.namespace for ns in made
        if ns.visibility is NamespaceVisibility.PUBLIC or ns.owner == "p"}
    hidden = next(ns.namespace for ns in made
                  if ns.visibility is NamespaceVisibility.PRIVATE and ns.owner == "q")
    with pytest.raises(NotFound):  # a marker the caller may not see is no marker
        await store.list_namespaces(CatalogScope(everything=False, project="p"),
                                    NamespaceQuery(limit=5, marker=hidden))


@pytest_twisted.ensureDeferred
async def test_tag_pages_equal_a_plain_sort(store: SQLMetadataStore) -> None:
    rng = random.Random(7)
    tags = [definition(Kind.TAG, f"t{i:02d}", at=NOW + timedelta(seconds=rng.choice([0, 1])))
            for i in range(17)]
    rng.shuffle(tags)
    await store.create_namespace(content("N", *tags))
    for key in ("name", "created_at"):
        for direction in SortDir:
            seen: list[str] = []
            marker = None
            while True:
                page = await store.definitions("N", Kind.TAG, allow, TagQuery(
                    limit=5, marker=marker, sort_key=key, sort_dir=direction))
                seen += [d.name for d in page]
                if len(page) < 5:
                    break
                marker = page[-1].name
            assert sorted(seen) == sorted(t.name for t in tags)
            by = {t.name: t for t in tags}
            values = [getattr(by[name], key) for name in seen]
            assert values == sorted(values, reverse=direction is SortDir.DESC)


@pytest_twisted.ensureDeferred
async def test_loading_in_each_mode(store: SQLMetadataStore, tmp_path: Any) -> None:
    shipped = read_definitions(SHIPPED, NOW)
    report = await store.load(shipped, LoadMode.SKIP)
    assert len(report.loaded) == len(shipped) == 33 and not report.skipped
    types = await store.resource_types()
    assert {t.name for t in types} >= {"OS::Glance::Image", "OS::Nova::Flavor"}
    assert all(t.protected for t in types)  # Glance's "seeded-system" types
    again = await store.load(shipped, LoadMode.SKIP)
    assert len(again.skipped) == 33 and not again.loaded
    # A file changed by the operator: merge adds, prefer-new also replaces, overwrite replaces.
    watchdog = next(c for c in shipped if c.namespace.namespace == "OS::Compute::Watchdog")
    edited = Content(
        namespace=Namespace(namespace=watchdog.namespace.namespace, created_at=NOW,
                            updated_at=NOW, description="edited", protected=True),
        associations=watchdog.associations,
        definitions=(
            definition(Kind.PROPERTY, "watchdog_action", title="Edited", type="string"),
            definition(Kind.TAG, "new-tag"),
        ),
    )
    await store.load([edited], LoadMode.MERGE)
    merged = await store.content("OS::Compute::Watchdog", allow)
    assert merged.namespace.description != "edited"
    assert {d.name for d in merged.definitions} == {"watchdog_action", "new-tag"}
    assert next(d for d in merged.definitions if d.name == "watchdog_action").body[
        "title"] == "Watchdog Action"
    await store.load([edited], LoadMode.PREFER_NEW)
    preferred = await store.content("OS::Compute::Watchdog", allow)
    assert preferred.namespace.description == "edited"
    assert next(d for d in preferred.definitions if d.name == "watchdog_action").body == {
        "title": "Edited", "type": "string"}
    await store.load([content("OS::Compute::Watchdog")], LoadMode.OVERWRITE)
    overwritten = await store.content("OS::Compute::Watchdog", allow)
    assert overwritten.definitions == () and overwritten.associations == ()
    # Export and load back: the same catalog.
    exported = await store.export()
    write_definitions(exported, str(tmp_path / "export"))
    assert await store.unload() == 33
    assert await store.export() == [] and await store.resource_types() == []
    reloaded = read_definitions(str(tmp_path / "export"), NOW)
    await store.load(reloaded, LoadMode.SKIP)

    def comparable(contents: list[Content]) -> list[Any]:
        return sorted(json.dumps([
            c.namespace.namespace, c.namespace.description, c.namespace.visibility.value,
            c.namespace.protected, [(a.name, a.prefix, a.properties_target)
                                    for a in c.associations],
            [(d.kind.value, d.name, dict(d.body)) for d in c.definitions],
        ], sort_keys=True) for c in contents)

    assert comparable(await store.export()) == comparable(exported)
    assert await store.unload(["OS::Compute::Libvirt", "No::Such"]) == 1
    assert len(await store.export()) == 32


@pytest_twisted.ensureDeferred
async def test_new_resource_types_made_at_once(store: SQLMetadataStore) -> None:
    """Several writers associating namespaces with the same new resource type at the same
    time: each gets its namespace, and the type is made once (on PostgreSQL, from the store's
    thread pool, they really race)."""
    made = await gatherResults([
        Deferred.fromCoroutine(_create(store, f"N{i}", ("Brand::New",))) for i in range(8)
    ])
    assert len(made) == 8
    assert [t.name for t in await store.resource_types()] == ["Brand::New"]
    listed = await store.list_namespaces(EVERYTHING, NamespaceQuery(
        limit=10, resource_types=("Brand::New",)))
    assert len(listed) == 8


async def _create(store: SQLMetadataStore, name: str, types: tuple[str, ...]) -> Content:
    return await store.create_namespace(content(name, associations=types))


@pytest_twisted.ensureDeferred
async def test_callers_who_may_not_make_resource_types(store: SQLMetadataStore) -> None:
    await store.create_namespace(content("N", associations=("Known",)))
    with pytest.raises(Forbidden, match="create resource type Unknown"):
        await store.create_namespace(content("M", associations=("Known", "Unknown")),
                                     create_types=False)
    with pytest.raises(Forbidden, match="create resource type Unknown"):
        await store.associate("N", Association("Unknown", NOW, NOW), allow, create_types=False)
    assert [c.namespace.namespace for c in await store.export()] == ["N"]
    assert [t.name for t in await store.resource_types()] == ["Known"]
    await store.create_namespace(content("M", associations=("Known",)), create_types=False)


@pytest_twisted.ensureDeferred
async def test_protection_is_judged_once_the_target_is_found(store: SQLMetadataStore) -> None:
    await store.create_namespace(content("N", definition(Kind.TAG, "t"), associations=("R",)))
    with pytest.raises(NotFound):
        await store.remove_definitions("N", Kind.TAG, allow, "nope", protect=refuse)
    with pytest.raises(NotFound):
        await store.dissociate("N", "Nope", allow, protect=refuse)
    with pytest.raises(Forbidden):
        await store.remove_definitions("N", Kind.TAG, allow, "t", protect=refuse)
    with pytest.raises(Forbidden):
        await store.dissociate("N", "R", allow, protect=refuse)
    kept = await store.content("N", allow)
    assert [d.name for d in kept.definitions] == ["t"] and len(kept.associations) == 1


@pytest.mark.parametrize("document,text", [
    ({"namespace": "A/b"}, "may not contain '/'"),
    ({"namespace": "N", "objects": [{"name": "o/x"}]}, "may not contain '/'"),
    ({"namespace": "N", "properties": {"p" * 81: {"title": "P", "type": "string"}}},
     "longer than 80"),
    ({"namespace": "N", "resource_type_associations": [{"name": "R" * 100}]}, "longer than 80"),
    ({"namespace": "N", "resource_type_associations": [{"name": "R", "prefix": "p" * 81}]},
     "longer than 80"),
    ({"namespace": "N", "tags": [{}]}, "must be a non-empty string"),
    ({"namespace": "N", "objects": [{"description": "no name"}]}, "must be a non-empty string"),
])
def test_definition_files_meet_the_apis_rules(document: Any, text: str) -> None:
    from imaged.errors import BadRequest
    from imaged.metadefs.files import content_of

    with pytest.raises(BadRequest, match=text):
        content_of(document, NOW)
