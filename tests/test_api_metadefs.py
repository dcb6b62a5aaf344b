"""
In-memory API tests of the metadata definitions catalog (``/v2/metadefs``), on each metadata
database: every route and its error codes as Glance 33 answers them (checked against a capture
of a real Glance's answers), visibility and policy, protection, prefixes, paging, and that a
refused request changes nothing stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.task import Clock

from imaged.api import APIConfig, routes
from imaged.metadefs import schemas
from imaged.metadefs.files import SHIPPED, read_definitions
from imaged.metadefs.model import LoadMode
from imaged.metadefs.service import MetadefService
from imaged.policy import Rules
from imaged.store.sql import SQLMetadataStore

from .conftest import Client, fired

NS = "/v2/metadefs/namespaces"
ADMIN = {"X-Project-Id": "admin-project", "X-User-Id": "root", "X-Roles": "admin"}
MEMBER_B = {"X-Project-Id": "project-b", "X-User-Id": "bob", "X-Roles": "member"}
MEMBER_C = {"X-Project-Id": "project-c", "X-User-Id": "carol", "X-Roles": "member"}
READER_B = {"X-Project-Id": "project-b", "X-User-Id": "rita", "X-Roles": "reader"}
NOBODY = {"X-Project-Id": "project-b", "X-User-Id": "nobody", "X-Roles": "none"}

NESTED = {
    "namespace": "Test::Nested",
    "display_name": "Nested",
    "description": "Namespace with everything",
    "visibility": "public",
    "protected": True,
    "resource_type_associations": [
        {"name": "OS::Glance::Image", "prefix": "gold_", "properties_target": "image"},
        {"name": "OS::Nova::Flavor", "prefix": "gold:"},
    ],
    "properties": {
        "speed": {"title": "Speed", "type": "integer", "description": "How fast",
                  "minimum": 1, "maximum": 10, "default": 5},
        "mode": {"title": "Mode", "type": "string", "enum": ["fast", "slow"],
                 "default": "fast", "readonly": False},
    },
    "objects": [
        {"name": "Engine", "description": "An engine", "required": ["cylinders"],
         "properties": {"cylinders": {"title": "Cylinders", "type": "integer"}}},
        {"name": "Wheel", "properties": {}},
    ],
    "tags": [{"name": "zeta"}, {"name": "alpha"}, {"name": "mid"}],
}


@pytest.fixture
def catalog(metadata_stores: Callable[[], SQLMetadataStore], services: Any, clock: Clock) -> Any:
    store = metadata_stores()
    return store, MetadefService(store, clock=clock)


def _client(catalog: Any, services: Any, rules: Rules | None = None) -> Client:
    store, service = catalog
    if rules is not None:
        service = MetadefService(store, rules, clock=service.clock)
    config = APIConfig(image_service=services(metadata=store), metadefs=service)
    return Client(routes(config).resource())


@pytest.fixture
def client(catalog: Any, services: Any) -> Client:
    return _client(catalog, services)


def make(client: Client, headers: dict[str, str] = ADMIN, **body: Any) -> dict[str, Any]:
    body.setdefault("namespace", "Test::Plain")
    reply = client.post(NS, json=body, headers=headers)
    assert reply.code == 201, reply.body
    return reply.json()  # type: ignore[no-any-return]


def error(reply: Any, code: int, text: str) -> None:
    assert reply.code == code, (reply.code, reply.body)
    assert text.encode() in reply.body, reply.body


def everything(client: Client) -> list[Any]:
    """Every namespace with its content, as an admin sees it: what must not change."""
    listed = client.get(NS + "?limit=1000&sort_key=namespace&sort_dir=asc", headers=ADMIN)
    names = [n["namespace"] for n in listed.json()["namespaces"]]
    return [client.get(f"{NS}/{name}", headers=ADMIN).json() for name in names] + [
        client.get("/v2/metadefs/resource_types", headers=ADMIN).json()
    ]


# -- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,title", [
    ("namespace", "namespace"), ("namespaces", "namespaces"), ("object", "object"),
    ("objects", "objects"), ("property", "property"), ("properties", "properties"),
    ("tag", "tag"), ("tags", "tags"), ("resource_type", "resource_type_association"),
    ("resource_types", "resource_type_associations"),
])
def test_schemas_are_glances(client: Client, name: str, title: str) -> None:
    reply = client.get(f"/v2/schemas/metadefs/{name}", headers=READER_B)
    assert reply.code == 200
    assert reply.json()["name"] == title  # what tempest checks
    assert reply.json() == schemas.DOCUMENTS[name]


def test_schema_documents_match_the_glance_capture() -> None:
    """The shipped documents are the ones a Glance 33 served (the property schema's type
    enum ends with null, the namespace schema requires only its name)."""
    assert schemas.DOCUMENTS["property"]["required"] == ["type", "title", "name"]
    assert schemas.DOCUMENTS["namespace"]["required"] == ["namespace"]
    assert schemas.DOCUMENTS["namespace"]["additionalProperties"] is False
    enum = schemas.DOCUMENTS["property"]["properties"]["type"]["enum"]
    assert enum == ["array", "boolean", "integer", "number", "object", "string", None]
    assert schemas.DOCUMENTS["namespaces"]["links"][1] == {"rel": "next", "href": "{next}"}


def test_unknown_schema(client: Client) -> None:
    error(client.get("/v2/schemas/metadefs/bogus", headers=ADMIN), 404, "not found")


def test_without_a_catalog_the_routes_are_not_found(services: Any) -> None:
    plain = Client(routes(APIConfig(image_service=services())).resource())
    error(plain.get(NS, headers=ADMIN), 404, "catalog is not served")


# -- namespaces -------------------------------------------------------------------------------


def test_create_with_content_and_show(client: Client) -> None:
    reply = client.post(NS, json=NESTED, headers=ADMIN)
    assert reply.code == 201
    assert reply.header("location") == "http://imaged.test:9292/v2/metadefs/namespaces/Test::Nested"
    shown = client.get(f"{NS}/Test::Nested", headers=ADMIN).json()
    assert shown == reply.json()
    assert shown["owner"] == "admin-project" and shown["protected"] is True
    assert shown["self"] == "/v2/metadefs/namespaces/Test::Nested"
    assert shown["schema"] == "/v2/schemas/metadefs/namespace"
    assert shown["created_at"].endswith("Z") and shown["updated_at"].endswith("Z")
    assert [a["name"] for a in shown["resource_type_associations"]] == [
        "OS::Glance::Image", "OS::Nova::Flavor"]
    assert shown["resource_type_associations"][1] == {
        "name": "OS::Nova::Flavor", "prefix": "gold:",
        "created_at": shown["created_at"], "updated_at": shown["updated_at"]}
    # As Glance keeps a property: its known attributes, the default as text.
    assert shown["properties"] == {
        "mode": {"title": "Mode", "type": "string", "enum": ["fast", "slow"], "default": "fast",
                 "readonly": False},
        "speed": {"title": "Speed", "type": "integer", "description": "How fast", "minimum": 1,
                  "maximum": 10, "default": "5"},
    }
    engine, wheel = shown["objects"]
    assert engine["name"] == "Engine" and engine["required"] == ["cylinders"]
    assert engine["self"] == f"{NS}/Test::Nested/objects/Engine"
    assert wheel["required"] == [] and wheel["properties"] == {} and "description" not in wheel
    assert shown["tags"] == [{"name": "mid"}, {"name": "alpha"}, {"name": "zeta"}]  # newest first


def test_minimal_create_defaults(client: Client) -> None:
    made = make(client, namespace="Test::Minimal")
    assert made["visibility"] == "private" and made["protected"] is False
    assert made["owner"] == "admin-project"
    assert {"display_name", "description", "resource_type_associations", "properties",
            "objects", "tags"}.isdisjoint(made)


def test_show_with_resource_type_prefixes_property_names(client: Client) -> None:
    client.post(NS, json=NESTED, headers=ADMIN)
    shown = client.get(f"{NS}/Test::Nested?resource_type=OS::Glance::Image", headers=ADMIN).json()
    assert sorted(shown["properties"]) == ["gold_mode", "gold_speed"]
    engine = shown["objects"][0]
    assert list(engine["properties"]) == ["gold_cylinders"]
    assert engine["required"] == ["gold_cylinders"]
    flavor = client.get(f"{NS}/Test::Nested?resource_type=OS::Nova::Flavor", headers=ADMIN).json()
    assert sorted(flavor["properties"]) == ["gold:mode", "gold:speed"]
    # A resource type it is not associated with renames nothing (Glance's 200).
    other = client.get(f"{NS}/Test::Nested?resource_type=OS::Cinder::Volume", headers=ADMIN)
    assert sorted(other.json()["properties"]) == ["mode", "speed"]


@pytest.mark.parametrize("body,code,text", [
    ({}, 400, "'namespace' is a required property"),
    ({"namespace": "x", "visibility": "shared"}, 400, "'shared' is not one of"),
    ({"namespace": "x", "foo": 1}, 400, "Additional properties are not allowed"),
    ({"namespace": "x", "protected": "yes"}, 400, "'yes' is not of type 'boolean'"),
    ({"namespace": "N" * 81}, 400, "is too long"),
    ({"namespace": ""}, 400, "non-empty"),
    ({"namespace": "x", "properties": {"p": {"title": "P", "type": "bogus"}}}, 400,
     "'bogus' is not one of"),
    ({"namespace": "x", "properties": {"p": {"type": "string"}}}, 400,
     "'title' is a required property"),
    ({"namespace": "x", "objects": [{"description": "no name"}]}, 400, "object's name"),
    ({"namespace": "x", "tags": [{}]}, 400, "tag's name"),
    ({"namespace": "x", "resource_type_associations": [{"prefix": "p_"}]}, 400,
     "resource type's name"),
    ({"namespace": "x", "created_at": "2020-01-01T00:00:00Z"}, 403,
     "Attribute 'created_at' is read-only."),
    ({"namespace": "x", "self": "/v2/x"}, 403, "Attribute 'self' is read-only."),
    ({"namespace": "x", "tags": [{"name": "t"}, {"name": "t"}]}, 409,
     "A metadata tag with name=t already exists in namespace=x."),
    ({"namespace": "x", "objects": [{"name": "o"}, {"name": "o"}]}, 409,
     "A metadata definition object with name=o already exists in namespace=x."),
    ({"namespace": "x", "resource_type_associations": [{"name": "R"}, {"name": "R"}]}, 409,
     "resource-type=R to namespace=x already exists"),
])
def test_bad_creates_change_nothing(client: Client, body: Any, code: int, text: str) -> None:
    make(client)
    before = everything(client)
    error(client.post(NS, json=body, headers=ADMIN), code, text)
    assert everything(client) == before


def test_create_refuses_bodies_that_are_not_a_namespace(client: Client) -> None:
    error(client.post(NS, data=b"", headers=ADMIN), 400, "Body expected in request.")
    error(client.post(NS, data=b"{nope", headers=ADMIN), 400, "Malformed JSON")
    error(client.post(NS, json=["namespace"], headers=ADMIN), 400, "is not of type 'object'")
    assert client.get(NS, headers=ADMIN).json()["namespaces"] == []


@pytest.mark.parametrize("raw,text", [
    (b'{"namespace": "x", "properties": {"p": {"title": "P", "type": "number", '
     b'"minimum": NaN}}}', "NaN is not a JSON number"),
    (b'{"namespace": "x", "properties": {"p": {"title": "P", "type": "number", '
     b'"maximum": 1e400}}}', "is out of range"),
    (b'{"namespace": "x", "properties": {"p": {"title": "P", "type": "number", '
     b'"maximum": -Infinity}}}', "-Infinity is not a JSON number"),
    (b'{"namespace": "x", "objects": [{"name": "o", "required": ["a", "b", "a"]}]}',
     "is not unique"),
    (b'{"namespace": "x", "objects": [{"name": "o", "required": ['
     + b", ".join(b"%d" % i for i in range(20000)) + b', "x"]}]}', "is not of type 'string'"),
])
def test_numbers_and_lists_that_would_hurt(client: Client, raw: bytes, text: str) -> None:
    """Non-finite numbers would be stored and served as JSON no strict parser reads; a long
    list of mixed items once cost jsonschema seconds of the reactor (quadratic uniqueness)."""
    make(client)
    before = everything(client)
    error(client.post(NS, data=raw, headers=ADMIN), 400, text)
    assert everything(client) == before


def test_duplicate_namespace(client: Client) -> None:
    make(client, description="first")
    before = everything(client)
    error(client.post(NS, json={"namespace": "Test::Plain"}, headers=ADMIN), 409,
          "The metadata definition namespace=Test::Plain already exists.")
    assert everything(client) == before


def test_update_replaces_every_attribute(client: Client) -> None:
    make(client, display_name="Plain", description="d", visibility="public", protected=True)
    reply = client.put(f"{NS}/Test::Plain", json={"namespace": "Test::Plain"}, headers=ADMIN)
    assert reply.code == 200
    updated = reply.json()
    # Glance's PUT: what the body leaves out is cleared or back to its default.
    assert updated["visibility"] == "private" and updated["protected"] is False
    assert "display_name" not in updated and "description" not in updated
    assert client.get(f"{NS}/Test::Plain", headers=ADMIN).json()["visibility"] == "private"


def test_update_renames_and_refuses_a_taken_name(client: Client) -> None:
    client.post(NS, json=NESTED, headers=ADMIN)
    make(client, namespace="Test::Other")
    renamed = client.put(f"{NS}/Test::Nested", json={"namespace": "Test::Renamed"}, headers=ADMIN)
    assert renamed.code == 200 and renamed.json()["self"] == f"{NS}/Test::Renamed"
    error(client.get(f"{NS}/Test::Nested", headers=ADMIN), 404, "was not found")
    moved = client.get(f"{NS}/Test::Renamed", headers=ADMIN).json()
    assert len(moved["objects"]) == 2 and len(moved["tags"]) == 3  # the content came along
    before = everything(client)
    error(client.put(f"{NS}/Test::Renamed", json={"namespace": "Test::Other"}, headers=ADMIN),
          409, "duplicate metadata definition namespace with the same name of Test::Other")
    error(client.put(f"{NS}/Test::Renamed", json={"display_name": "x"}, headers=ADMIN), 400,
          "'namespace' is a required property")
    error(client.put(f"{NS}/No::Such", json={"namespace": "No::Such"}, headers=ADMIN), 404,
          "Namespace No::Such not found")
    assert everything(client) == before


def test_protected_namespace_cannot_be_deleted_nor_emptied(client: Client) -> None:
    client.post(NS, json=NESTED, headers=ADMIN)
    before = everything(client)
    message = "Metadata definition namespace Test::Nested is protected and cannot be deleted."
    error(client.delete(f"{NS}/Test::Nested", headers=ADMIN), 403, message)
    for part in ("objects", "properties", "tags"):
        error(client.delete(f"{NS}/Test::Nested/{part}", headers=ADMIN), 403, message)
    error(client.delete(f"{NS}/Test::Nested/objects/Engine", headers=ADMIN), 403,
          "Metadata definition object Engine is protected and cannot be deleted.")
    error(client.delete(f"{NS}/Test::Nested/properties/speed", headers=ADMIN), 403,
          "Metadata definition property speed is protected")
    error(client.delete(f"{NS}/Test::Nested/tags/mid", headers=ADMIN), 403,
          "Metadata definition tag mid is protected")
    error(client.delete(f"{NS}/Test::Nested/resource_types/OS::Nova::Flavor", headers=ADMIN),
          403, "resource-type-association OS::Nova::Flavor is protected")
    # What is not there is not found first, as in Glance.
    error(client.delete(f"{NS}/Test::Nested/tags/nope", headers=ADMIN), 404,
          "Could not find metadata tag nope")
    error(client.delete(f"{NS}/Test::Nested/objects/nope", headers=ADMIN), 404,
          "Could not find metadata object nope")
    error(client.delete(f"{NS}/Test::Nested/resource_types/No::Such", headers=ADMIN), 404,
          "Failed to find resource type No::Such to delete")
    assert everything(client) == before
    # Content may still be added and changed in a protected namespace (as Glance).
    assert client.post(f"{NS}/Test::Nested/tags/new", headers=ADMIN).code == 201


def test_delete_removes_the_content(client: Client) -> None:
    body = dict(NESTED, protected=False)
    client.post(NS, json=body, headers=ADMIN)
    assert client.delete(f"{NS}/Test::Nested", headers=ADMIN).code == 204
    error(client.get(f"{NS}/Test::Nested", headers=ADMIN), 404, "was not found")
    error(client.delete(f"{NS}/Test::Nested", headers=ADMIN), 404,
          "Namespace Test::Nested not found")
    # The same name may be made again, empty: nothing of the old content is left behind.
    made = make(client, namespace="Test::Nested")
    assert "objects" not in client.get(f"{NS}/Test::Nested", headers=ADMIN).json()
    assert made["namespace"] == "Test::Nested"
    # Resource types stay (Glance keeps them once made).
    names = [t["name"] for t in client.get("/v2/metadefs/resource_types",
                                           headers=ADMIN).json()["resource_types"]]
    assert names == ["OS::Glance::Image", "OS::Nova::Flavor"]


@pytest.mark.parametrize("part", ["objects", "properties", "tags"])
def test_sub_collection_deletes(client: Client, part: str) -> None:
    client.post(NS, json=dict(NESTED, protected=False), headers=ADMIN)
    assert client.delete(f"{NS}/Test::Nested/{part}", headers=ADMIN).code == 204
    shown = client.get(f"{NS}/Test::Nested", headers=ADMIN).json()
    assert part not in shown
    kept = {"objects", "properties", "tags"} - {part}
    assert kept <= set(shown)
    error(client.delete(f"{NS}/No::Such/{part}", headers=ADMIN), 404,
          "Namespace No::Such not found")


# -- lists -------------------------------------------------------------------------------------


def test_list_pages_with_markers(client: Client) -> None:
    names = [f"Test::N{i}" for i in range(7)]
    for name in names:
        make(client, namespace=name, visibility="public")
    first = client.get(NS + "?limit=3", headers=ADMIN).json()
    assert [n["namespace"] for n in first["namespaces"]] == names[::-1][:3]  # newest first
    assert first["first"] == "/v2/metadefs/namespaces?limit=3"
    assert first["schema"] == "/v2/schemas/metadefs/namespaces"
    assert first["next"] == "/v2/metadefs/namespaces?limit=3&marker=Test%3A%3AN4"
    seen: list[str] = []
    path = NS + "?limit=3&sort_key=namespace&sort_dir=asc"
    while True:
        page = client.get(path, headers=ADMIN).json()
        seen += [n["namespace"] for n in page["namespaces"]]
        if "next" not in page:
            break
        path = page["next"]
    assert seen == sorted(names)
    desc = client.get(NS + "?sort_key=namespace&sort_dir=desc&limit=2&marker=Test::N3",
                      headers=ADMIN).json()
    assert [n["namespace"] for n in desc["namespaces"]] == ["Test::N2", "Test::N1"]
    assert client.get(NS + "?limit=0", headers=ADMIN).json()["namespaces"] == []


def test_list_pages_sorted_by_protected(client: Client) -> None:
    for i, protected in enumerate([True, False, True, False, False]):
        make(client, namespace=f"Test::P{i}", protected=protected)
    seen: list[str] = []
    path = NS + "?limit=2&sort_key=protected&sort_dir=asc"
    while path:
        reply = client.get(path, headers=ADMIN)
        assert reply.code == 200, reply.body
        seen += [n["namespace"] for n in reply.json()["namespaces"]]
        path = reply.json().get("next")
    assert seen[:3] == ["Test::P1", "Test::P3", "Test::P4"]  # unprotected, oldest first
    assert sorted(seen[3:]) == ["Test::P0", "Test::P2"]
    # An empty marker is no marker, as Glance.
    assert len(client.get(NS + "?marker=", headers=ADMIN).json()["namespaces"]) == 5


def test_list_sorts_by_nullable_columns(client: Client) -> None:
    make(client, namespace="Test::A", display_name="zz")
    make(client, namespace="Test::B")
    make(client, namespace="Test::C", display_name="aa")
    seen: list[str] = []
    path = NS + "?limit=1&sort_key=display_name&sort_dir=asc"
    while path:
        page = client.get(path, headers=ADMIN).json()
        seen += [n["namespace"] for n in page["namespaces"]]
        path = page.get("next")
    assert seen == ["Test::B", "Test::C", "Test::A"]


@pytest.mark.parametrize("query,text", [
    ("sort_dir=bogus", "Invalid sort direction: bogus"),
    ("sort_key=bogus", "Invalid sort key: bogus"),
    ("limit=-1", "limit param must be positive"),
    ("limit=abc", "limit param must be an integer"),
    ("visibility=shared", "Invalid visibility value: shared"),
])
def test_list_refuses_bad_queries(client: Client, query: str, text: str) -> None:
    error(client.get(f"{NS}?{query}", headers=ADMIN), 400, text)


def test_list_unknown_marker(client: Client) -> None:
    error(client.get(NS + "?marker=No::Such", headers=ADMIN), 404,
          "Metadata definition namespace=No::Such was not found.")


def test_list_filters(client: Client) -> None:
    client.post(NS, json=NESTED, headers=ADMIN)
    make(client, namespace="Test::Private")
    make(client, namespace="Test::Cinder", visibility="public",
         resource_type_associations=[{"name": "OS::Cinder::Volume"}])

    def names(query: str) -> list[str]:
        reply = client.get(f"{NS}?{query}", headers=ADMIN)
        assert reply.code == 200
        return sorted(n["namespace"] for n in reply.json()["namespaces"])

    assert names("visibility=private") == ["Test::Private"]
    assert names("visibility=public") == ["Test::Cinder", "Test::Nested"]
    assert names("resource_types=OS::Glance::Image") == ["Test::Nested"]
    assert names("resource_types=OS::Nova::Flavor,OS::Cinder::Volume") == [
        "Test::Cinder", "Test::Nested"]
    assert names("resource_types=No::Such") == []
    assert names("foo=bar") == ["Test::Cinder", "Test::Nested", "Test::Private"]
    listed = client.get(f"{NS}?resource_types=OS::Cinder::Volume", headers=ADMIN).json()
    assert listed["namespaces"][0]["resource_type_associations"][0]["name"] == (
        "OS::Cinder::Volume")
    assert "properties" not in listed["namespaces"][0]


# -- who sees and changes what -------------------------------------------------------------


def test_visibility_and_policy(client: Client) -> None:
    make(client, namespace="Test::Public", visibility="public")
    make(client, namespace="Test::AdminPrivate")
    make(client, namespace="Test::OwnedByB", owner="project-b")

    def listed(headers: dict[str, str]) -> list[str]:
        reply = client.get(NS, headers=headers)
        assert reply.code == 200
        return sorted(n["namespace"] for n in reply.json()["namespaces"])

    assert listed(MEMBER_B) == ["Test::OwnedByB", "Test::Public"]
    assert listed(READER_B) == ["Test::OwnedByB", "Test::Public"]
    assert listed(MEMBER_C) == ["Test::Public"]
    assert listed(ADMIN) == ["Test::AdminPrivate", "Test::OwnedByB", "Test::Public"]
    error(client.get(NS, headers=NOBODY), 403, "get_metadef_namespaces")
    assert client.get(f"{NS}/Test::OwnedByB", headers=READER_B).code == 200
    for hidden in ("Test::AdminPrivate", "Test::OwnedByB"):
        error(client.get(f"{NS}/{hidden}", headers=MEMBER_C), 404, "was not found")
        error(client.get(f"{NS}/{hidden}/objects", headers=MEMBER_C), 404, "was not found")
    before = everything(client)
    # Writes are administrators' (Glance 33's metadef_admin): 403 where the caller may see
    # the namespace, 404 where it may not.
    error(client.post(NS, json={"namespace": "Test::ByB"}, headers=MEMBER_B), 403,
          "add_metadef_namespace")
    error(client.put(f"{NS}/Test::OwnedByB", json={"namespace": "Test::OwnedByB"},
                     headers=MEMBER_B), 403, "modify_metadef_namespace")
    error(client.put(f"{NS}/Test::AdminPrivate", json={"namespace": "x"}, headers=MEMBER_B),
          404, "Namespace Test::AdminPrivate not found")
    error(client.delete(f"{NS}/Test::OwnedByB", headers=MEMBER_B), 403,
          "delete_metadef_namespace")
    error(client.delete(f"{NS}/Test::AdminPrivate", headers=MEMBER_B), 404,
          "Namespace Test::AdminPrivate not found")
    error(client.post(f"{NS}/Test::Public/objects", json={"name": "o"}, headers=MEMBER_B), 403,
          "add_metadef_object")
    error(client.post(f"{NS}/Test::Public/properties",
                      json={"name": "p", "title": "P", "type": "string"}, headers=MEMBER_B),
          403, "add_metadef_property")
    error(client.post(f"{NS}/Test::Public/tags/t", headers=MEMBER_B), 403, "add_metadef_tag")
    error(client.post(f"{NS}/Test::Public/tags", json={"tags": [{"name": "t"}]},
                      headers=MEMBER_B), 403, "add_metadef_tags")
    error(client.delete(f"{NS}/Test::Public/tags", headers=MEMBER_B), 403,
          "delete_metadef_namespace")
    error(client.post(f"{NS}/Test::Public/resource_types", json={"name": "R"},
                      headers=MEMBER_B), 403, "add_metadef_resource_type_association")
    error(client.post(f"{NS}/Test::AdminPrivate/objects", json={"name": "o"},
                      headers=MEMBER_B), 404, "was not found")
    assert everything(client) == before
    assert client.get("/v2/metadefs/resource_types", headers=READER_B).code == 200
    error(client.get("/v2/metadefs/resource_types", headers=NOBODY), 403,
          "list_metadef_resource_types")


def test_project_member_policy_lets_a_project_keep_its_namespaces(
    catalog: Any, services: Any
) -> None:
    client = _client(catalog, services, Rules(metadefs="project-member"))
    made = make(client, MEMBER_B, namespace="Test::ByB")
    assert made["owner"] == "project-b"
    assert client.post(f"{NS}/Test::ByB/objects", json={"name": "o"},
                       headers=MEMBER_B).code == 201
    assert client.put(f"{NS}/Test::ByB", json={"namespace": "Test::ByB",
                                                "display_name": "B's"},
                      headers=MEMBER_B).code == 200
    # Not for another project, not as a mere reader, and not by giving it away.
    error(client.post(f"{NS}/Test::ByB/objects", json={"name": "p"}, headers=MEMBER_C), 404,
          "was not found")
    error(client.post(f"{NS}/Test::ByB/tags/t", headers=READER_B), 403, "add_metadef_tag")
    error(client.post(NS, json={"namespace": "Test::ForC", "owner": "project-c"},
                      headers=MEMBER_B), 403, "add_metadef_namespace")
    error(client.put(f"{NS}/Test::ByB", json={"namespace": "Test::ByB", "owner": "project-c"},
                     headers=MEMBER_B), 403, "modify_metadef_namespace")
    assert client.get(f"{NS}/Test::ByB", headers=ADMIN).json()["owner"] == "project-b"
    # Resource types are everyone's, and publishing is an administrator's (as for images).
    make(client, namespace="Test::Admin", resource_type_associations=[
        {"name": "OS::Glance::Image"}])
    before = everything(client)
    error(client.post(f"{NS}/Test::ByB/resource_types", json={"name": "ProjectB::Secret"},
                      headers=MEMBER_B), 403, "not authorized to create resource type")
    error(client.post(NS, json={"namespace": "Test::ByB2", "resource_type_associations": [
        {"name": "ProjectB::Secret"}]}, headers=MEMBER_B), 403, "create resource type")
    error(client.post(NS, json={"namespace": "Test::ByB3", "visibility": "public"},
                      headers=MEMBER_B), 403, "make metadata definition namespaces public")
    error(client.put(f"{NS}/Test::ByB", json={"namespace": "Test::ByB", "visibility": "public"},
                     headers=MEMBER_B), 403, "public")
    assert everything(client) == before
    assert client.post(f"{NS}/Test::ByB/resource_types", json={"name": "OS::Glance::Image"},
                       headers=MEMBER_B).code == 201
    assert client.delete(f"{NS}/Test::ByB", headers=MEMBER_B).code == 204


# -- objects ------------------------------------------------------------------------------------


def test_objects(client: Client) -> None:
    make(client, visibility="public")
    base = f"{NS}/Test::Plain/objects"
    body = {"name": "Engine", "description": "An engine", "required": ["cylinders"],
            "properties": {"cylinders": {"title": "Cylinders", "type": "integer", "minimum": 1},
                           "fuel": {"title": "Fuel", "type": "string", "default": "gas",
                                    "enum": ["gas", "diesel"]}}}
    made = client.post(base, json=body, headers=ADMIN)
    assert made.code == 201
    engine = made.json()
    assert engine["properties"]["fuel"] == {"title": "Fuel", "type": "string", "default": "gas",
                                            "enum": ["gas", "diesel"]}
    assert engine["self"] == f"{base}/Engine" and engine["schema"] == "/v2/schemas/metadefs/object"
    assert client.get(f"{base}/Engine", headers=MEMBER_C).json() == engine
    assert client.post(base, json={"name": "Wheel"}, headers=ADMIN).code == 201
    listed = client.get(base, headers=ADMIN).json()
    assert [o["name"] for o in listed["objects"]] == ["Engine", "Wheel"]
    assert listed["schema"] == "v2/schemas/metadefs/objects"  # sic, as Glance
    updated = client.put(f"{base}/Engine", json={"name": "Motor", "description": "renamed"},
                         headers=ADMIN)
    assert updated.code == 200
    motor = updated.json()
    assert motor["name"] == "Motor" and motor["required"] == [] and motor["properties"] == {}
    assert motor["created_at"] == engine["created_at"]
    error(client.get(f"{base}/Engine", headers=ADMIN), 404,
          "Could not find metadata object Engine")
    assert client.delete(f"{base}/Motor", headers=ADMIN).code == 204
    error(client.delete(f"{base}/Motor", headers=ADMIN), 404,
          "Could not find metadata object Motor")
    error(client.get(f"{NS}/No::Such/objects", headers=ADMIN), 404, "was not found")


@pytest.mark.parametrize("method,path,body,code,text", [
    ("POST", "", {"name": "Wheel"}, 409, "object with name=Wheel already exists"),
    ("POST", "", {"description": "x"}, 400, "'name' is a required property"),
    ("POST", "", {"name": "o", "foo": 1}, 400, "Additional properties are not allowed"),
    ("POST", "", {"name": "O" * 81}, 400, "is too long"),
    ("POST", "", {"name": "o", "properties": {"p": {"title": "P", "type": "bogus"}}}, 400,
     "'bogus' is not one of"),
    ("POST", "", {"name": "o", "properties": {"p": {"title": "P"}}}, 400,
     "'type' is a required property"),
    ("POST", "", {"name": "o", "properties": {"p": {"title": "P", "type": "string", "x": 1}}},
     400, "Additional properties are not allowed"),
    ("POST", "", {"name": "o", "created_at": "x"}, 403, "read-only"),
    ("PUT", "/Wheel", {"name": "Tire"}, 409,
     "duplicate metadata definition object with the same name=Tire"),
    ("PUT", "/Wheel", {"description": "x"}, 400, "'name' is a required property"),
    ("PUT", "/Nope", {"name": "Nope"}, 404, "Could not find metadata object Nope"),
    ("POST", "/../objects", {"name": "o"}, 404, ""),
])
def test_bad_object_requests_change_nothing(
    client: Client, method: str, path: str, body: Any, code: int, text: str
) -> None:
    make(client)
    base = f"{NS}/Test::Plain/objects"
    client.post(base, json={"name": "Wheel"}, headers=ADMIN)
    client.post(base, json={"name": "Tire"}, headers=ADMIN)
    before = everything(client)
    reply = client.request(method, base + path, json=body, headers=ADMIN)
    assert reply.code in (code, 405) if text == "" else True
    if text:
        error(reply, code, text)
    assert everything(client) == before


# -- properties -------------------------------------------------------------------------------


def test_properties(client: Client) -> None:
    make(client, visibility="public", resource_type_associations=[
        {"name": "OS::Glance::Image", "prefix": "gold_"}])
    base = f"{NS}/Test::Plain/properties"
    speed = {"name": "speed", "title": "Speed", "type": "integer", "description": "How fast",
             "minimum": 1, "maximum": 10, "default": 5}
    made = client.post(base, json=speed, headers=ADMIN)
    assert made.code == 201
    assert made.json() == dict(speed, default="5")
    flags = {"name": "flags", "title": "Flags", "type": "array",
             "items": {"type": "string", "enum": ["a", "b"]}, "uniqueItems": True,
             "minItems": 0, "maxItems": 2, "additionalItems": False}
    assert client.post(base, json=flags, headers=ADMIN).json() == flags
    listed = client.get(base, headers=ADMIN).json()["properties"]
    assert listed == {"flags": flags, "speed": dict(speed, default="5")}
    assert client.get(f"{base}/speed", headers=MEMBER_C).json()["title"] == "Speed"
    # By the name it has on a resource type: answered with its own name, as Glance.
    prefixed = client.get(f"{base}/gold_speed?resource_type=OS::Glance::Image", headers=ADMIN)
    assert prefixed.code == 200 and prefixed.json()["name"] == "speed"
    error(client.get(f"{base}/speed?resource_type=OS::Glance::Image", headers=ADMIN), 404,
          "Property speed does not start with the expected resource type association prefix "
          "of 'gold_'.")
    error(client.get(f"{base}/gold_speed?resource_type=OS::Nova::Flavor", headers=ADMIN), 404,
          "The metadata definition resource-type with name=OS::Nova::Flavor, was not found.")
    make(client, namespace="Test::Flavors",
         resource_type_associations=[{"name": "OS::Nova::Flavor"}])
    error(client.get(f"{base}/gold_speed?resource_type=OS::Nova::Flavor", headers=ADMIN), 404,
          "resource-type=OS::Nova::Flavor to namespace=Test::Plain, was not found")
    error(client.get(f"{base}/gold_speed", headers=ADMIN), 404,
          "Could not find property gold_speed")
    updated = client.put(f"{base}/speed", json={"name": "velocity", "title": "Velocity",
                                                "type": "integer"}, headers=ADMIN)
    assert updated.json() == {"name": "velocity", "title": "Velocity", "type": "integer"}
    error(client.get(f"{base}/speed", headers=ADMIN), 404, "Could not find property speed")
    assert client.delete(f"{base}/velocity", headers=ADMIN).code == 204
    assert list(client.get(base, headers=ADMIN).json()["properties"]) == ["flags"]


@pytest.mark.parametrize("method,path,body,code,text", [
    ("POST", "", {"name": "speed", "title": "S", "type": "string"}, 409,
     "property with name=speed already exists"),
    ("POST", "", {"title": "S", "type": "string"}, 400, "'name' is a required property"),
    ("POST", "", {"name": "p", "type": "string"}, 400, "'title' is a required property"),
    ("POST", "", {"name": "p", "title": "P"}, 400, "'type' is a required property"),
    ("POST", "", {"name": "p", "title": "P", "type": "bogus"}, 400, "'bogus' is not one of"),
    ("POST", "", {"name": "p", "title": "P", "type": "string", "foo": 1}, 400,
     "Additional properties are not allowed"),
    ("POST", "", {"name": "p" * 81, "title": "P", "type": "string"}, 400, "is too long"),
    ("POST", "", {"name": "p", "title": "P", "type": "string", "maxLength": -1}, 400,
     "less than the minimum"),
    ("PUT", "/speed", {"name": "mode", "title": "M", "type": "string"}, 409,
     "duplicate metadata definition property with the same name=mode"),
    ("PUT", "/speed", {"name": "speed", "title": "S"}, 400, "'type' is a required property"),
    ("PUT", "/nope", {"name": "nope", "title": "N", "type": "string"}, 404,
     "Could not find property nope"),
])
def test_bad_property_requests_change_nothing(
    client: Client, method: str, path: str, body: Any, code: int, text: str
) -> None:
    make(client)
    base = f"{NS}/Test::Plain/properties"
    for name in ("speed", "mode"):
        client.post(base, json={"name": name, "title": name, "type": "string"}, headers=ADMIN)
    before = everything(client)
    error(client.request(method, base + path, json=body, headers=ADMIN), code, text)
    assert everything(client) == before


# -- tags ----------------------------------------------------------------------------------------


def test_tags(client: Client) -> None:
    make(client, visibility="public")
    base = f"{NS}/Test::Plain/tags"
    made = client.post(f"{base}/sample-tag", headers=ADMIN)
    assert made.code == 201 and set(made.json()) == {"name", "created_at", "updated_at"}
    assert client.get(f"{base}/sample-tag", headers=MEMBER_C).json()["name"] == "sample-tag"
    renamed = client.put(f"{base}/sample-tag", json={"name": "renamed"}, headers=ADMIN)
    assert renamed.json()["name"] == "renamed"
    error(client.get(f"{base}/sample-tag", headers=ADMIN), 404,
          "Could not find metadata tag sample-tag")
    # A bulk create replaces the namespace's tags...
    bulk = client.post(base, json={"tags": [{"name": "charlie"}, {"name": "alpha"},
                                            {"name": "bravo"}]}, headers=ADMIN)
    assert bulk.code == 201
    assert bulk.json() == {"tags": [{"name": "charlie"}, {"name": "alpha"}, {"name": "bravo"}]}
    assert client.get(base, headers=ADMIN).json() == {
        "tags": [{"name": "bravo"}, {"name": "alpha"}, {"name": "charlie"}]}
    # ...unless appended.
    appended = client.post(base, json={"tags": [{"name": "delta"}]},
                           headers={**ADMIN, "X-Openstack-Append": "True"})
    assert appended.code == 201
    names = [t["name"] for t in client.get(base, headers=ADMIN).json()["tags"]]
    assert names == ["delta", "bravo", "alpha", "charlie"]
    replaced = client.post(base, json={"tags": [{"name": "india"}]},
                           headers={**ADMIN, "X-Openstack-Append": "False"})
    assert replaced.code == 201
    assert client.get(base, headers=ADMIN).json() == {"tags": [{"name": "india"}]}
    # An empty list replaces nothing, as Glance.
    empty = client.post(base, json={"tags": []}, headers=ADMIN)
    assert empty.code == 201 and empty.json() == {"tags": []}
    assert client.get(base, headers=ADMIN).json() == {"tags": [{"name": "india"}]}
    assert client.delete(f"{base}/india", headers=ADMIN).code == 204
    assert client.get(base, headers=ADMIN).json() == {"tags": []}


def test_tag_pages(client: Client) -> None:
    make(client)
    base = f"{NS}/Test::Plain/tags"
    for name in ("india", "juliet", "kilo", "lima"):
        client.post(f"{base}/{name}", headers=ADMIN)

    def names(query: str) -> list[str]:
        reply = client.get(f"{base}?{query}", headers=ADMIN)
        assert reply.code == 200, reply.body
        return [t["name"] for t in reply.json()["tags"]]

    assert names("") == ["lima", "kilo", "juliet", "india"]
    assert names("limit=2") == ["lima", "kilo"]
    assert names("marker=juliet") == ["india"]
    assert names("sort_key=name&sort_dir=asc") == ["india", "juliet", "kilo", "lima"]
    assert names("sort_key=name&sort_dir=asc&marker=juliet&limit=1") == ["kilo"]
    assert names("limit=0") == []  # a limit of 0, as Glance's
    assert names("limit=") == ["lima", "kilo", "juliet", "india"]
    error(client.get(f"{base}?marker=nope", headers=ADMIN), 404, "Could not find metadata tag nope")
    error(client.get(f"{base}?sort_dir=up", headers=ADMIN), 400, "Invalid sort direction: up")
    error(client.get(f"{base}?sort_key=bogus", headers=ADMIN), 400, "Invalid sort key: bogus")
    error(client.get(f"{base}?limit=-1", headers=ADMIN), 400, "limit param must be positive")


@pytest.mark.parametrize("method,path,body,headers,code,text", [
    ("POST", "/alpha", None, {}, 409, "A metadata tag with name=alpha already exists"),
    ("POST", "/" + "t" * 81, None, {}, 400, "is too long"),
    ("POST", "/x", {"name": "x"}, {}, 400, "A body is not expected"),
    ("PUT", "/alpha", {"name": "bravo"}, {}, 409, "A metadata tag with name=bravo"),
    ("PUT", "/alpha", {}, {}, 400, "'name' is a required property"),
    ("PUT", "/alpha", {"name": "x", "foo": 1}, {}, 400, "Additional properties are not allowed"),
    ("PUT", "/nope", {"name": "x"}, {}, 404, "Could not find metadata tag nope"),
    ("DELETE", "/nope", None, {}, 404, "Could not find metadata tag nope"),
    ("POST", "", {"tags": [{"name": "alpha"}]}, {"X-Openstack-Append": "true"}, 409,
     "name=alpha already exists"),
    ("POST", "", {"tags": [{"name": "golf"}, {"name": "golf"}]}, {}, 409,
     "name=golf already exists"),
    ("POST", "", {"tags": [{"name": "h"}, {"name": "h"}]}, {"X-Openstack-Append": "true"}, 409,
     "name=h already exists"),
    ("POST", "", {"foo": []}, {}, 400, "Additional properties are not allowed"),
    ("POST", "", {"tags": "x"}, {}, 400, "'x' is not of type 'array'"),
    ("POST", "", {"tags": [{}]}, {}, 400, "'name' is a required property"),
    ("POST", "", {"tags": [{"name": "t" * 81}]}, {}, 400, "longer than 80"),
])
def test_bad_tag_requests_change_nothing(
    client: Client, method: str, path: str, body: Any, headers: dict[str, str], code: int,
    text: str,
) -> None:
    make(client)
    base = f"{NS}/Test::Plain/tags"
    client.post(base, json={"tags": [{"name": "alpha"}, {"name": "bravo"}]}, headers=ADMIN)
    before = everything(client)
    error(client.request(method, base + path, json=body, headers={**ADMIN, **headers}),
          code, text)
    assert everything(client) == before


# -- resource types --------------------------------------------------------------------------


def test_resource_type_associations(client: Client) -> None:
    make(client, visibility="public")
    base = f"{NS}/Test::Plain/resource_types"
    assert client.get(base, headers=ADMIN).json() == {"resource_type_associations": []}
    made = client.post(base, json={"name": "OS::Glance::Image", "prefix": "hw_",
                                   "properties_target": "image"}, headers=ADMIN)
    assert made.code == 201
    assert {k: made.json()[k] for k in ("name", "prefix", "properties_target")} == {
        "name": "OS::Glance::Image", "prefix": "hw_", "properties_target": "image"}
    minimal = client.post(base, json={"name": "Brand::New"}, headers=ADMIN).json()
    assert set(minimal) == {"name", "created_at", "updated_at"}
    listed = client.get(base, headers=MEMBER_C).json()["resource_type_associations"]
    assert [a["name"] for a in listed] == ["OS::Glance::Image", "Brand::New"]
    types = client.get("/v2/metadefs/resource_types", headers=ADMIN).json()["resource_types"]
    assert [t["name"] for t in types] == ["OS::Glance::Image", "Brand::New"]
    filtered = client.get(f"{NS}?resource_types=Brand::New", headers=ADMIN).json()
    assert [n["namespace"] for n in filtered["namespaces"]] == ["Test::Plain"]
    assert client.delete(f"{base}/OS::Glance::Image", headers=ADMIN).code == 204
    error(client.delete(f"{base}/OS::Glance::Image", headers=ADMIN), 404,
          "Failed to find resource type OS::Glance::Image to delete")
    error(client.delete(f"{base}/No::Such", headers=ADMIN), 404,
          "Failed to find resource type No::Such to delete")
    error(client.get(f"{NS}/No::Such/resource_types", headers=ADMIN), 404,
          "Namespace No::Such not found")


@pytest.mark.parametrize("body,code,text", [
    ({"name": "OS::Glance::Image"}, 409,
     "resource-type=OS::Glance::Image to namespace=Test::Plain already exists"),
    ({"prefix": "x_"}, 400, "'name' is a required property"),
    ({"name": "R", "foo": 1}, 400, "Additional properties are not allowed"),
    ({"name": "R", "created_at": "x"}, 403, "Attribute 'created_at' is read-only."),
    ({"name": "R" * 81}, 400, "is too long"),
])
def test_bad_associations_change_nothing(
    client: Client, body: Any, code: int, text: str
) -> None:
    make(client)
    base = f"{NS}/Test::Plain/resource_types"
    client.post(base, json={"name": "OS::Glance::Image"}, headers=ADMIN)
    before = everything(client)
    error(client.post(base, json=body, headers=ADMIN), code, text)
    assert everything(client) == before


# -- the URL space --------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,code", [
    ("PATCH", NS, 405),
    ("DELETE", NS, 405),
    ("PUT", NS, 405),
    ("POST", f"{NS}/Test::Plain", 405),
    ("PUT", f"{NS}/Test::Plain/objects", 405),
    ("PUT", f"{NS}/Test::Plain/tags", 405),
    ("GET", f"{NS}/Test::Plain/resource_types/OS::Glance::Image", 405),
    ("POST", "/v2/metadefs/resource_types", 405),
    ("GET", "/v2/metadefs/resource_types/OS::Glance::Image", 404),
    ("GET", "/v2/metadefs", 404),
    ("GET", f"{NS}/", 404),
    ("GET", f"{NS}/Test::Plain/", 404),
    ("GET", f"{NS}/Test::Plain/bogus", 404),
    ("HEAD", f"{NS}/Test::Plain", 405),
])
def test_routes_as_glances(client: Client, method: str, path: str, code: int) -> None:
    make(client)
    assert client.request(method, path, headers=ADMIN).code == code


def test_names_are_addressed_percent_encoded_and_negotiated(client: Client) -> None:
    make(client, namespace="Test Space::Ünïcode")
    path = "Test%20Space::%C3%9Cn%C3%AFcode"
    assert client.get(f"{NS}/{path}", headers=ADMIN).json()["namespace"] == "Test Space::Ünïcode"
    assert client.get(f"/v2.1/metadefs/namespaces/{path}", headers=ADMIN).code == 200
    assert client.get("/metadefs/namespaces", headers=ADMIN).code == 300


@pytest.mark.parametrize("path,body", [
    (NS, {"namespace": "a/b"}),
    (f"{NS}/Test::Plain/objects", {"name": "a/b"}),
    (f"{NS}/Test::Plain/properties", {"name": "a/b", "title": "T", "type": "string"}),
    (f"{NS}/Test::Plain/tags", {"tags": [{"name": "a/b"}]}),
    (f"{NS}/Test::Plain/resource_types", {"name": "a/b"}),
])
def test_names_no_url_can_address_are_refused(client: Client, path: str, body: Any) -> None:
    """A slash cannot be sent in a path segment (``%2F`` splits it, as in Glance, which then
    cannot reach what it made): such a name is a 400 here."""
    make(client)
    before = everything(client)
    error(client.post(path, json=body, headers=ADMIN), 400, "may not contain '/'")
    assert everything(client) == before


def test_bodies_are_refused_where_glance_refuses_them(client: Client) -> None:
    make(client)
    error(client.get(NS, data=b"{}", headers=ADMIN), 400, "A body is not expected")
    error(client.delete(f"{NS}/Test::Plain", data=b"{}", headers=ADMIN), 400,
          "A body is not expected")
    assert client.get(f"{NS}/Test::Plain", headers=ADMIN).code == 200


# -- the shipped definitions -----------------------------------------------------------------


def test_glances_definitions_through_the_api(catalog: Any, client: Client, clock: Clock) -> None:
    store, _ = catalog
    contents = read_definitions(SHIPPED, datetime_of(clock))
    report = fired(store.load(contents, LoadMode.SKIP))
    assert len(report.loaded) == len(contents) == 33
    listed = client.get(NS + "?limit=100", headers=ADMIN).json()["namespaces"]
    assert len(listed) == 33
    # Two of them name no visibility: private to their owner, "admin", as in Glance.
    public = client.get(NS + "?limit=100", headers=READER_B).json()["namespaces"]
    assert {n["namespace"] for n in listed} - {n["namespace"] for n in public} == {
        "OS::OperatingSystem", "OS::Glance::CommonImageProperties"}
    types = {t["name"] for t in client.get("/v2/metadefs/resource_types",
                                           headers=READER_B).json()["resource_types"]}
    assert {"OS::Glance::Image", "OS::Nova::Flavor", "OS::Cinder::Volume"} <= types
    watchdog = client.get(f"{NS}/OS::Compute::Watchdog?resource_type=OS::Glance::Image",
                          headers=READER_B).json()
    assert list(watchdog["properties"]) == ["hw_watchdog_action"]
    assert watchdog["owner"] == "admin" and watchdog["protected"] is True
    action = client.get(f"{NS}/OS::Compute::Watchdog/properties/hw:watchdog_action"
                        "?resource_type=OS::Nova::Flavor", headers=READER_B)
    assert action.json()["name"] == "watchdog_action"
    assert "poweroff" in action.json()["enum"]
    # Loaded namespaces are protected, as the files say: no one removes them by mistake.
    error(client.delete(f"{NS}/OS::Compute::Libvirt", headers=ADMIN), 403, "is protected")
    objects = client.get(f"{NS}/OS::Software::WebServers/objects", headers=READER_B).json()
    assert "Apache HTTP Server" in [o["name"] for o in objects["objects"]]
    quota = client.get(f"{NS}/OS::Compute::Quota/objects", headers=ADMIN).json()["objects"]
    shares = quota[0]["properties"]["quota:cpu_shares"]
    assert shares["type"] == "integer"
    assert json.dumps(client.get(f"{NS}?limit=1", headers=ADMIN).json())  # serialisable


def datetime_of(clock: Clock) -> Any:
    from imaged.clock import utc

    return utc(clock)
