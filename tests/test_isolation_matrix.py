"""
The isolation matrix: every endpoint x every kind of caller -> the status Glance's secure-RBAC
defaults give, and for lists the exact set of images returned.

The world (rebuilt for every case) is one project ``owner`` with images of every visibility,
a shared image with a pending, an accepted and a rejected member project, a deactivated
public image, a hidden one, and one private image of ``other``.  imaged runs with
``--auth trusted-headers``, so a request without a confirmed identity is unauthenticated.

Every refused request must change nothing (the whole world is compared before and after), and
every 404 must read exactly as the 404 of an image that does not exist, so that a refusal never
tells whether an image is there.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import attrs
import pytest

from imaged.api import APIConfig, routes
from imaged.model import ImageQuery, Scope, VisibilityFilter
from imaged.service import Limits
from imaged.store.sql import SQLMetadataStore
from imaged.web.auth import TrustedHeaders

from .conftest import Client, fired, store_generation


def who(project: str, roles: str) -> dict[str, str]:
    return {"X-Identity-Status": "Confirmed", "X-Project-Id": project,
            "X-User-Id": f"user-of-{project}", "X-Roles": roles}


CALLERS: dict[str, dict[str, str]] = {
    "owner": who("owner", "member,reader"),
    "reader": who("owner", "reader"),  # reader-only in the owning project
    "other": who("other", "member"),
    "pending": who("pend", "member"),
    "accepted": who("acc", "member"),
    "rejected": who("rej", "member"),
    "admin": who("adm", "admin"),
    "anonymous": {"X-Identity-Status": "Invalid", "X-Project-Id": "owner",
                  "X-Roles": "admin"},  # what keystonemiddleware passes on for a bad token
}
NAMES = tuple(CALLERS)
DATA = b"0123456789abcdef"


@attrs.frozen
class World:
    client: Client
    service: Any
    ids: dict[str, str]  # role in the world -> image id


def build(services: Any) -> World:
    service = services(limits=Limits())
    client = Client(routes(APIConfig(image_service=service, auth=TrustedHeaders())).resource())
    owner, admin = CALLERS["owner"], CALLERS["admin"]

    def image(headers: dict[str, str], data: bool = True, **attributes: Any) -> str:
        made = client.create(disk_format="raw", container_format="bare", _headers=headers,
                             **attributes)
        if data:
            assert client.upload(made["id"], DATA, **headers).code == 204
        return str(made["id"])

    ids = {
        "private": image(owner, visibility="private"),
        "shared": image(owner, visibility="shared", tags=["t0"]),
        "queued": image(owner, data=False, visibility="shared"),
        "community": image(owner, visibility="community"),
        "public": image(admin, visibility="public", owner="owner"),
        "hidden": image(admin, visibility="public", owner="owner", os_hidden=True),
        "deactivated": image(admin, visibility="public", owner="owner"),
        "foreign": image(CALLERS["other"], visibility="private"),
    }
    for shared in ("shared", "queued"):
        for project, status in (("pend", None), ("acc", "accepted"), ("rej", "rejected")):
            path = f"/v2/images/{ids[shared]}/members"
            assert client.post(path, json={"member": project}, headers=owner).code == 200
            if status:
                reply = client.put(f"{path}/{project}", json={"status": status},
                                   headers=who(project, "member"))
                assert reply.code == 200, reply.body
    assert client.post(f"/v2/images/{ids['deactivated']}/actions/deactivate",
                       headers=admin).code == 204
    return World(client, service, ids)


def fresh_world(database: str, services: Any) -> World:
    """
    A world of this test's own.  On SQLite it is a copy of one built once (its records and
    blobs copied in a fraction of a millisecond, where building takes a tenth of a second);
    PostgreSQL's is built anew.
    """
    if database != "sqlite":
        return build(services)
    if not _TEMPLATE:
        _TEMPLATE.append(build(services))
    template = _TEMPLATE[0]
    service = services(
        limits=Limits(),
        metadata=SQLMetadataStore.in_memory(copy_of=template.service.metadata),
        blobs=template.service.blobs.copy(),
    )
    client = Client(routes(APIConfig(image_service=service, auth=TrustedHeaders())).resource())
    return World(client, service, dict(template.ids))


_TEMPLATE: list[World] = []
_SHARED: dict[tuple[str, int], World] = {}


def shared_world(database: str, services: Any) -> World:
    """One world for the reads, rebuilt when the test database was emptied meanwhile."""
    key = store_generation(database)
    if key not in _SHARED:
        world = build(services)
        _SHARED.clear()
        _SHARED[store_generation(database)] = world
        return world
    return _SHARED[key]


def snapshot(world: World) -> str:
    """Everything stored (metadata, members, which blobs), read from the stores directly."""
    store = world.service.metadata
    state = {}
    for name, image_id in world.ids.items():
        image = fired(store.get(image_id))
        members = fired(store.list_members(image_id))
        state[name] = repr((image, sorted(members, key=lambda m: m.member_id)))
    every = set()
    for hidden in (False, True):
        query = ImageQuery(limit=1000, member_status=None, visibility=VisibilityFilter.ALL,
                           os_hidden=hidden)
        every |= {i.id for i in fired(store.list(Scope(everything=True, project=None),
                                                 query)).images}
    state["_all"] = repr(sorted(every))
    return json.dumps(state, sort_keys=True)


PATCH = "application/openstack-images-v2.1-json-patch"


@attrs.frozen
class Endpoint:
    name: str
    method: str
    path: str  # {image}: the world's image named by ``image``
    expect: dict[str, int]
    image: str = "shared"
    body: Any = None
    content_type: str | None = None


def codes(owner: int, reader: int, other: int, pending: int, accepted: int, rejected: int,
          admin: int) -> dict[str, int]:
    return dict(owner=owner, reader=reader, other=other, pending=pending, accepted=accepted,
                rejected=rejected, admin=admin, anonymous=401)


ENDPOINTS = [
    # -- images --------------------------------------------------------------------------
    Endpoint("show shared", "GET", "/v2/images/{image}", codes(200, 200, 404, 200, 200, 200, 200)),
    Endpoint("show private", "GET", "/v2/images/{image}",
             codes(200, 200, 404, 404, 404, 404, 200), image="private"),
    Endpoint("show community", "GET", "/v2/images/{image}",
             codes(200, 200, 200, 200, 200, 200, 200), image="community"),
    Endpoint("show another project's private", "GET", "/v2/images/{image}",
             codes(404, 404, 200, 404, 404, 404, 200), image="foreign"),
    Endpoint("create", "POST", "/v2/images", codes(201, 403, 201, 201, 201, 201, 201),
             body={"name": "new"}),
    Endpoint("create for another project", "POST", "/v2/images",
             codes(403, 403, 403, 403, 403, 403, 201), body={"name": "x", "owner": "owner2"}),
    Endpoint("create public", "POST", "/v2/images", codes(403, 403, 403, 403, 403, 403, 201),
             body={"name": "x", "visibility": "public"}),
    Endpoint("rename shared", "PATCH", "/v2/images/{image}",
             codes(200, 403, 404, 403, 403, 403, 200),
             body=[{"op": "replace", "path": "/name", "value": "renamed"}], content_type=PATCH),
    Endpoint("rename private", "PATCH", "/v2/images/{image}",
             codes(200, 403, 404, 404, 404, 404, 200), image="private",
             body=[{"op": "replace", "path": "/name", "value": "renamed"}], content_type=PATCH),
    Endpoint("publicize", "PATCH", "/v2/images/{image}",
             codes(403, 403, 404, 403, 403, 403, 200),
             body=[{"op": "replace", "path": "/visibility", "value": "public"}],
             content_type=PATCH),
    Endpoint("communitize", "PATCH", "/v2/images/{image}",
             codes(200, 403, 404, 403, 403, 403, 200),
             body=[{"op": "replace", "path": "/visibility", "value": "community"}],
             content_type=PATCH),
    Endpoint("protect", "PATCH", "/v2/images/{image}",
             codes(200, 403, 404, 403, 403, 403, 200),
             body=[{"op": "replace", "path": "/protected", "value": True}], content_type=PATCH),
    Endpoint("delete shared", "DELETE", "/v2/images/{image}",
             codes(204, 403, 404, 403, 403, 403, 204)),
    Endpoint("delete public", "DELETE", "/v2/images/{image}",
             codes(204, 403, 403, 403, 403, 403, 204), image="public"),
    Endpoint("delete another project's", "DELETE", "/v2/images/{image}",
             codes(404, 404, 204, 404, 404, 404, 204), image="foreign"),
    # Glance 33's default: the owning project's members too (--deactivate-policy).
    Endpoint("deactivate", "POST", "/v2/images/{image}/actions/deactivate",
             codes(204, 403, 404, 403, 403, 403, 204)),
    Endpoint("reactivate", "POST", "/v2/images/{image}/actions/reactivate",
             codes(204, 403, 403, 403, 403, 403, 204), image="deactivated"),
    # -- tags ----------------------------------------------------------------------------
    Endpoint("add tag", "PUT", "/v2/images/{image}/tags/t9",
             codes(204, 403, 404, 403, 403, 403, 204)),
    Endpoint("remove tag", "DELETE", "/v2/images/{image}/tags/t0",
             codes(204, 403, 404, 403, 403, 403, 204)),
    # -- data ----------------------------------------------------------------------------
    Endpoint("download shared", "GET", "/v2/images/{image}/file",
             codes(200, 403, 404, 200, 200, 200, 200)),
    Endpoint("download private", "GET", "/v2/images/{image}/file",
             codes(200, 403, 404, 404, 404, 404, 200), image="private"),
    Endpoint("download public", "GET", "/v2/images/{image}/file",
             codes(200, 403, 200, 200, 200, 200, 200), image="public"),
    Endpoint("download deactivated", "GET", "/v2/images/{image}/file",
             codes(403, 403, 403, 403, 403, 403, 200), image="deactivated"),
    Endpoint("upload", "PUT", "/v2/images/{image}/file",
             codes(204, 403, 404, 403, 403, 403, 204), image="queued", body=DATA,
             content_type="application/octet-stream"),
    # -- members -------------------------------------------------------------------------
    Endpoint("list members", "GET", "/v2/images/{image}/members",
             codes(200, 200, 404, 200, 200, 200, 200)),
    Endpoint("add member", "POST", "/v2/images/{image}/members",
             codes(200, 403, 404, 403, 403, 403, 200), body={"member": "newcomer"}),
    Endpoint("show accepted member", "GET", "/v2/images/{image}/members/acc",
             codes(200, 200, 404, 404, 200, 404, 200)),
    Endpoint("accepted member rejects", "PUT", "/v2/images/{image}/members/acc",
             codes(403, 403, 404, 404, 200, 404, 200), body={"status": "rejected"}),
    Endpoint("pending member accepts", "PUT", "/v2/images/{image}/members/pend",
             codes(403, 403, 404, 200, 404, 404, 200), body={"status": "accepted"}),
    Endpoint("remove accepted member", "DELETE", "/v2/images/{image}/members/acc",
             codes(204, 403, 404, 404, 403, 404, 204)),
    # -- discovery -----------------------------------------------------------------------
    Endpoint("usage", "GET", "/v2/info/usage", codes(200, 200, 200, 200, 200, 200, 200)),
    Endpoint("image schema", "GET", "/v2/schemas/image",
             codes(200, 200, 200, 200, 200, 200, 200)),
]

CASES = [(e, caller) for e in ENDPOINTS for caller in NAMES]


def send(world: World, endpoint: Endpoint, headers: dict[str, str], image_id: str) -> Any:
    path = endpoint.path.format(image=image_id)
    hdrs = dict(headers)
    data = None
    if endpoint.body is not None:
        data = endpoint.body if isinstance(endpoint.body, bytes) else json.dumps(
            endpoint.body).encode()
        hdrs["Content-Type"] = endpoint.content_type or "application/json"
    return world.client.request(endpoint.method, path, data=data, headers=hdrs)


def without_id(body: bytes, image_id: str) -> bytes:
    body = re.sub(rb"[0-9a-f-]{36}", b"<id>", body.replace(image_id.encode(), b"<id>"))
    return re.sub(rb"Member \S+ not found", b"Member <member> not found", body)


@pytest.mark.parametrize("endpoint, caller", CASES,
                         ids=[f"{e.name}-{c}" for e, c in CASES])
def test_endpoint(endpoint: Endpoint, caller: str, database: str, services: Any) -> None:
    # Reads share one world (a read that changed anything would fail the snapshot check of
    # the refused reads after it); anything else gets a world of its own.
    world = (
        shared_world(database, services) if endpoint.method == "GET"
        else fresh_world(database, services)
    )
    image_id = world.ids[endpoint.image]
    before = snapshot(world)
    reply = send(world, endpoint, CALLERS[caller], image_id)
    assert reply.code == endpoint.expect[caller], reply.body
    if reply.code >= 400:
        assert snapshot(world) == before, "a refused request changed what is stored"
    if reply.code == 404:
        # Indistinguishable from an image (or membership) that does not exist.
        if "/members/" in endpoint.path:
            absent_endpoint = attrs.evolve(
                endpoint, path=endpoint.path.rsplit("/", 1)[0] + "/" + str(uuid.uuid4()))
            absent = send(world, absent_endpoint, CALLERS[caller], image_id)
        else:
            absent = send(world, endpoint, CALLERS[caller], str(uuid.uuid4()))
        assert absent.code == 404
        assert without_id(reply.body, image_id) == without_id(absent.body, image_id)
    if endpoint.name == "list members" and reply.code == 200:
        members = {m["member_id"] for m in reply.json()["members"]}
        assert members == MEMBERS_SEEN[caller]


MEMBERS_SEEN = {
    "owner": {"pend", "acc", "rej"}, "reader": {"pend", "acc", "rej"},
    "admin": {"pend", "acc", "rej"},
    "pending": {"pend"}, "accepted": {"acc"}, "rejected": {"rej"},
}

# -- lists: the exact sets -------------------------------------------------------------------

# Without ?visibility=, community images appear only to their owner, admins included (Glance).
ALL = {"private", "shared", "queued", "community", "public", "deactivated", "foreign"}
OWNED = {"private", "shared", "queued", "community", "public", "deactivated"}
PUBLIC = {"public", "deactivated"}

LISTS: dict[str, dict[str, set[str] | int]] = {
    "": {
        "owner": OWNED, "reader": OWNED, "other": PUBLIC | {"foreign"},
        "pending": PUBLIC, "accepted": PUBLIC | {"shared", "queued"}, "rejected": PUBLIC,
        "admin": ALL - {"community"}, "anonymous": 401,
    },
    "?member_status=pending": {
        "owner": OWNED, "reader": OWNED, "other": PUBLIC | {"foreign"},
        "pending": PUBLIC | {"shared", "queued"}, "accepted": PUBLIC, "rejected": PUBLIC,
        "admin": ALL - {"community"}, "anonymous": 401,
    },
    "?member_status=rejected": {
        "owner": OWNED, "reader": OWNED, "other": PUBLIC | {"foreign"},
        "pending": PUBLIC, "accepted": PUBLIC, "rejected": PUBLIC | {"shared", "queued"},
        "admin": ALL - {"community"}, "anonymous": 401,
    },
    "?member_status=all": {
        "owner": OWNED, "reader": OWNED, "other": PUBLIC | {"foreign"},
        "pending": PUBLIC | {"shared", "queued"}, "accepted": PUBLIC | {"shared", "queued"},
        "rejected": PUBLIC | {"shared", "queued"}, "admin": ALL - {"community"},
        "anonymous": 401,
    },
    "?visibility=shared&member_status=all": {
        "owner": {"shared", "queued"}, "reader": {"shared", "queued"}, "other": set(),
        "pending": {"shared", "queued"}, "accepted": {"shared", "queued"},
        "rejected": {"shared", "queued"}, "admin": {"shared", "queued"}, "anonymous": 401,
    },
    "?visibility=private": {
        "owner": {"private"}, "reader": {"private"}, "other": {"foreign"}, "pending": set(),
        "accepted": set(), "rejected": set(), "admin": {"private", "foreign"},
        "anonymous": 401,
    },
    "?visibility=community": {
        **{c: {"community"} for c in NAMES}, "anonymous": 401,
    },
    "?visibility=public": {
        **{c: PUBLIC for c in NAMES}, "anonymous": 401,
    },
    "?os_hidden=true": {
        **{c: {"hidden"} for c in NAMES}, "anonymous": 401,
    },
    "?visibility=all": {
        "owner": OWNED, "reader": OWNED, "other": PUBLIC | {"foreign", "community"},
        # Shared images still follow member_status (default accepted) under visibility=all.
        "pending": PUBLIC | {"community"},
        "accepted": PUBLIC | {"community", "shared", "queued"},
        "rejected": PUBLIC | {"community"},
        "admin": ALL, "anonymous": 401,
    },
}
LIST_CASES = [(query, caller) for query in LISTS for caller in NAMES]


@pytest.mark.parametrize("query, caller", LIST_CASES,
                         ids=[f"list{q or '-default'}-{c}" for q, c in LIST_CASES])
def test_list(query: str, caller: str, database: str, services: Any) -> None:
    world = shared_world(database, services)
    reply = world.client.get("/v2/images" + query + ("&" if "?" in query else "?") + "limit=100",
                             headers=CALLERS[caller])
    expected = LISTS[query][caller]
    if isinstance(expected, int):
        assert reply.code == expected
        return
    assert reply.code == 200, reply.body
    by_id = {v: k for k, v in world.ids.items()}
    assert {by_id[i["id"]] for i in reply.json()["images"]} == expected


def test_the_snapshot_sees_every_kind_of_change(services: Any) -> None:
    """The matrix's "nothing changed" check is only as good as the snapshot it compares."""
    world = build(services)
    owner, admin = CALLERS["owner"], CALLERS["admin"]
    shared = world.ids["shared"]
    changes = [
        lambda: world.client.patch(f"/v2/images/{shared}",
                                   [{"op": "add", "path": "/k", "value": "v"}], headers=owner),
        lambda: world.client.put(f"/v2/images/{shared}/tags/new", headers=owner),
        lambda: world.client.post(f"/v2/images/{shared}/members", json={"member": "x"},
                                  headers=owner),
        lambda: world.client.put(f"/v2/images/{shared}/members/pend",
                                 json={"status": "accepted"}, headers=who("pend", "member")),
        lambda: world.client.post("/v2/images", json={"os_hidden": True}, headers=owner),
        lambda: world.client.delete(f"/v2/images/{world.ids['private']}", headers=admin),
    ]
    for change in changes:
        before = snapshot(world)
        assert change().code in (200, 201, 204)
        assert snapshot(world) != before
