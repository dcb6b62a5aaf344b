"""In-memory API tests: image members and what membership lets a project see."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from imaged.api import APIConfig, routes
from imaged.service import Limits

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client

PROJECT_C = {"X-Project-Id": "project-c", "X-User-Id": "carol", "X-Roles": "member"}


def ids(reply) -> set[str]:
    return {i["id"] for i in reply.json()["images"]}


@pytest.fixture
def shared(client: Client) -> str:
    return client.create(name="shared-by-a", _headers=PROJECT_A)["id"]


def members_path(image_id: str, member: str | None = None) -> str:
    return f"/v2/images/{image_id}/members" + (f"/{member}" if member else "")


def test_add_member_shape_and_rules(client: Client, shared: str) -> None:
    reply = client.post(members_path(shared), json={"member": "project-b"}, headers=PROJECT_A)
    assert reply.code == 200
    member = reply.json()
    assert member["member_id"] == "project-b" and member["image_id"] == shared
    assert member["status"] == "pending" and member["schema"] == "/v2/schemas/member"
    assert member["created_at"].endswith("Z") and member["updated_at"].endswith("Z")
    assert client.post(members_path(shared), json={"member": "project-b"},
                       headers=PROJECT_A).code == 409
    assert client.post(members_path(shared), json={}, headers=PROJECT_A).code == 400
    assert client.post(members_path(shared), json={"member": ""}, headers=PROJECT_A).code == 400
    # a member may see the image but not share it further
    assert client.post(members_path(shared), json={"member": "project-c"},
                       headers=PROJECT_B).code == 403
    # strangers do not learn it exists
    assert client.post(members_path(shared), json={"member": "project-c"},
                       headers=PROJECT_C).code == 404
    private = client.create(visibility="private", _headers=PROJECT_A)["id"]
    reply = client.post(members_path(private), json={"member": "project-b"}, headers=PROJECT_A)
    assert reply.code == 403 and b"Only shared images have members" in reply.body


def test_member_quota(services: Any) -> None:
    service = services(limits=Limits(image_member_quota=2))
    client = Client(routes(APIConfig(image_service=service)).resource())
    image = client.create(_headers=PROJECT_A)["id"]
    for project in ("p1", "p2"):
        assert client.post(members_path(image), json={"member": project},
                           headers=PROJECT_A).code == 200
    assert client.post(members_path(image), json={"member": "p3"}, headers=PROJECT_A).code == 413


def test_list_and_show_members(client: Client, shared: str) -> None:
    for project in ("project-b", "project-c"):
        client.post(members_path(shared), json={"member": project}, headers=PROJECT_A)
    owner_view = client.get(members_path(shared), headers=PROJECT_A).json()
    assert owner_view["schema"] == "/v2/schemas/members"
    assert [m["member_id"] for m in owner_view["members"]] == ["project-b", "project-c"]
    member_view = client.get(members_path(shared), headers=PROJECT_B).json()["members"]
    assert [m["member_id"] for m in member_view] == ["project-b"]
    assert client.get(members_path(shared, "project-c"), headers=PROJECT_A).code == 200
    assert client.get(members_path(shared, "project-b"), headers=PROJECT_B).code == 200
    assert client.get(members_path(shared, "project-c"), headers=PROJECT_B).code == 404
    assert client.get(members_path(shared, "nobody"), headers=PROJECT_A).code == 404
    stranger = {"X-Project-Id": "project-d", "X-Roles": "member"}
    assert client.get(members_path(shared), headers=stranger).code == 404
    assert client.get(members_path(shared, "project-b"), headers=stranger).code == 404
    assert client.get(members_path(shared), headers=ADMIN).code == 200


def test_only_the_member_sets_its_status(client: Client, shared: str) -> None:
    client.post(members_path(shared), json={"member": "project-b"}, headers=PROJECT_A)
    client.post(members_path(shared), json={"member": "project-c"}, headers=PROJECT_A)
    path = members_path(shared, "project-b")
    assert client.put(path, json={"status": "accepted"}, headers=PROJECT_A).code == 403
    assert client.put(path, json={"status": "accepted"}, headers=PROJECT_C).code == 404
    assert client.put(path, json={"status": "maybe"}, headers=PROJECT_B).code == 400
    assert client.put(path, json={}, headers=PROJECT_B).code == 400
    reply = client.put(path, json={"status": "accepted"}, headers=PROJECT_B)
    assert reply.code == 200 and reply.json()["status"] == "accepted"
    assert client.put(members_path(shared, "nobody"), json={"status": "accepted"},
                      headers=PROJECT_B).code == 404


def test_delete_member(client: Client, shared: str) -> None:
    client.post(members_path(shared), json={"member": "project-b"}, headers=PROJECT_A)
    path = members_path(shared, "project-b")
    assert client.delete(path, headers=PROJECT_B).code == 403
    reply = client.delete(path, headers=PROJECT_A)
    assert reply.code == 204 and reply.body == b""
    assert client.delete(path, headers=PROJECT_A).code == 404
    assert client.get(f"/v2/images/{shared}", headers=PROJECT_B).code == 404


def test_membership_decides_what_a_project_sees(client: Client, shared: str) -> None:
    own_b = client.create(name="b-own", _headers=PROJECT_B)["id"]
    # Before sharing: invisible.
    assert client.get(f"/v2/images/{shared}", headers=PROJECT_B).code == 404
    client.post(members_path(shared), json={"member": "project-b"}, headers=PROJECT_A)
    # Pending: visible when asked for directly, listed only with member_status.
    assert client.get(f"/v2/images/{shared}", headers=PROJECT_B).code == 200
    assert ids(client.get("/v2/images", headers=PROJECT_B)) == {own_b}
    assert ids(client.get("/v2/images?member_status=pending", headers=PROJECT_B)) == {
        own_b, shared}
    assert ids(client.get("/v2/images?member_status=all", headers=PROJECT_B)) == {own_b, shared}
    # Accepted: in the default list, and in visibility=shared beside its own shared images.
    client.put(members_path(shared, "project-b"), json={"status": "accepted"}, headers=PROJECT_B)
    assert ids(client.get("/v2/images", headers=PROJECT_B)) == {own_b, shared}
    assert ids(client.get("/v2/images?visibility=shared", headers=PROJECT_B)) == {own_b, shared}
    assert ids(client.get("/v2/images?member_status=pending", headers=PROJECT_B)) == {own_b}
    # Rejected: hidden from lists, still readable.
    client.put(members_path(shared, "project-b"), json={"status": "rejected"}, headers=PROJECT_B)
    assert ids(client.get("/v2/images", headers=PROJECT_B)) == {own_b}
    assert client.get(f"/v2/images/{shared}", headers=PROJECT_B).code == 200
    # A member may read but not change the image.
    assert client.patch(f"/v2/images/{shared}", [{"op": "replace", "path": "/name",
                                                  "value": "x"}], headers=PROJECT_B).code == 403
    assert client.delete(f"/v2/images/{shared}", headers=PROJECT_B).code == 403
    assert client.put(f"/v2/images/{shared}/tags/t", headers=PROJECT_B).code == 403
    # Leaving "shared" ends what membership grants.
    client.put(members_path(shared, "project-b"), json={"status": "accepted"}, headers=PROJECT_B)
    client.patch(f"/v2/images/{shared}", [{"op": "replace", "path": "/visibility",
                                           "value": "private"}], headers=PROJECT_A)
    assert client.get(f"/v2/images/{shared}", headers=PROJECT_B).code == 404
    assert ids(client.get("/v2/images?member_status=all", headers=PROJECT_B)) == {own_b}
    # Other projects never saw any of it.
    assert client.get(f"/v2/images/{shared}", headers=PROJECT_C).code == 404
    assert ids(client.get("/v2/images?member_status=all&visibility=all",
                          headers=PROJECT_C)) == set()


def test_member_downloads_shared_image(client: Client) -> None:
    image = client.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)["id"]
    client.upload(image, b"shared bytes", **PROJECT_A)
    assert client.get(f"/v2/images/{image}/file", headers=PROJECT_B).code == 404
    client.post(members_path(image), json={"member": "project-b"}, headers=PROJECT_A)
    assert client.get(f"/v2/images/{image}/file", headers=PROJECT_B).body == b"shared bytes"


def test_members_of_missing_image(client: Client) -> None:
    missing = str(uuid.uuid4())
    assert client.get(members_path(missing), headers=PROJECT_A).code == 404
    assert client.post(members_path(missing), json={"member": "x"}, headers=PROJECT_A).code == 404
