"""In-memory API tests: images (create, show, list, update, delete) and their wire shapes."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from imaged.api import APIConfig, ImageService, routes
from imaged.policy import Rules
from imaged.schemas import DEFAULT_SCHEMAS, ImageSchemas

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client

# Every key of the seed's DefaultResponse but ``locations`` (Glance shows it only when locations
# are shown) and ``properties``, which the seed used for extra
# properties: they are top-level keys (echoing them as an object breaks openstacksdk's patches,
# see tests/test_clients.py::test_openstacksdk).
SEED_KEYS = {
    "status", "container_format", "min_ram", "updated_at", "owner", "min_disk", "tags",
    "visibility", "id", "size", "virtual_size", "name", "checksum", "created_at",
    "disk_format", "protected", "self", "file", "schema",
}
GLANCE_KEYS = SEED_KEYS | {
    "os_hidden", "os_hash_algo", "os_hash_value",
}


def test_create_returns_201_location_and_every_key(client: Client) -> None:
    reply = client.post("/v2/images", json={"name": "cirros"}, headers=PROJECT_A)
    assert reply.code == 201
    image = reply.json()
    assert set(image) >= SEED_KEYS and set(image) >= GLANCE_KEYS
    assert reply.header("Location") == f"http://imaged.test:9292/v2/images/{image['id']}"
    assert reply.header("Content-Type") == "application/json"
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["schema"] == "/v2/schemas/image"
    assert image["status"] == "queued"
    assert image["visibility"] == "shared"
    assert image["owner"] == "project-a"
    assert image["protected"] is False and image["os_hidden"] is False
    assert image["min_disk"] == 0 and image["min_ram"] == 0
    assert image["tags"] == [] and "properties" not in image
    assert "locations" not in image  # Glance shows it only with show_multiple_locations
    for key in ("size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
                "disk_format", "container_format"):
        assert image[key] is None
    assert image["created_at"].endswith("Z") and len(image["created_at"]) == 20
    uuid.UUID(image["id"])


def test_create_validates_against_served_schema(client: Client) -> None:
    import jsonschema

    image = client.create(name="x", disk_format="qcow2", container_format="bare",
                          os_distro="debian", tags=["a"], properties={"k": "v"})
    schema = client.get("/v2/schemas/image").json()
    jsonschema.Draft4Validator(schema).validate(image)


def test_create_with_client_id_and_everything(client: Client) -> None:
    image_id = str(uuid.uuid4())
    image = client.create(
        id=image_id, name="full", visibility="private", protected=True, os_hidden=True,
        min_disk=3, min_ram=512, disk_format="raw", container_format="bare",
        tags=["t1", "t2", "t1"], os_distro="ubuntu", _headers=PROJECT_A,
    )
    assert image["id"] == image_id
    assert (image["visibility"], image["protected"], image["os_hidden"]) == ("private", True, True)
    assert (image["min_disk"], image["min_ram"]) == (3, 512)
    assert image["tags"] == ["t1", "t2"]
    assert image["os_distro"] == "ubuntu"
    shown = client.get(f"/v2/images/{image_id}", headers=PROJECT_A).json()
    assert shown == image


def test_seed_properties_object_becomes_extra_properties(client: Client) -> None:
    image = client.create(name="seed", properties={"hw_disk_bus": "virtio", "a": "b"})
    assert image["hw_disk_bus"] == "virtio" and image["a"] == "b"
    assert "properties" not in image


@pytest.mark.parametrize(
    "body, code",
    [
        ({"id": "not-a-uuid"}, 400),
        ({"name": "x" * 256}, 400),
        ({"disk_format": "floppy"}, 400),
        ({"container_format": "zip"}, 400),
        ({"visibility": "everyone"}, 400),
        ({"protected": "yes"}, 400),
        ({"min_ram": -1}, 400),
        ({"min_disk": 2**40}, 400),
        ({"min_ram": "12"}, 400),
        ({"tags": ["x" * 256]}, 400),
        ({"os_distro": 5}, 400),
        ({"kernel_id": "nope"}, 400),
        ({"x" * 256: "v"}, 400),
        ({"properties": "flat"}, 400),
        ({"properties": {"k": 1}}, 400),
        ({"properties": {"name": "n"}}, 400),
        ({"status": "active"}, 403),
        ({"size": 5}, 403),
        ({"checksum": "x"}, 403),
        ({"created_at": "2020-01-01T00:00:00Z"}, 403),
        ({"self": "/x"}, 403),
        ({"os_hash_value": "x"}, 403),
        ({"location": "file:///etc/passwd"}, 403),
        ({"locations": []}, 403),
        ({"deleted": "true"}, 403),
        ({"os_glance_import_task": "x"}, 403),
        ({"properties": {"os_glance_x": "y"}}, 403),
    ],
)
def test_create_rejects_bad_input_and_stores_nothing(client: Client, body: dict, code: int) -> None:
    reply = client.post("/v2/images", json=body)
    assert reply.code == code, reply.body
    assert client.get("/v2/images").json()["images"] == []


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", b"Malformed JSON in request body."),
        (b"", b"Body expected in request."),
        (b'"scalar"', b"Unexpected body type. Expected list/dict."),
        (b"[1, 2]", b"Unexpected body type"),
    ],
)
def test_create_malformed_bodies(client: Client, raw: bytes, message: bytes) -> None:
    reply = client.post("/v2/images", data=raw)
    assert reply.code == 400 and message in reply.body


def test_duplicate_id_conflicts_even_after_delete(client: Client) -> None:
    image_id = str(uuid.uuid4())
    client.create(id=image_id)
    assert client.post("/v2/images", json={"id": image_id}).code == 409
    assert client.delete(f"/v2/images/{image_id}").code == 204
    assert client.post("/v2/images", json={"id": image_id}).code == 409


def test_owner_and_publicize_policy(client: Client) -> None:
    assert client.post("/v2/images", json={"owner": "project-b"}, headers=PROJECT_A).code == 403
    assert client.post("/v2/images", json={"visibility": "public"}, headers=PROJECT_A).code == 403
    assert client.post("/v2/images", json={"visibility": "community"},
                       headers=PROJECT_A).code == 201
    image = client.create(owner="project-b", visibility="public", _headers=ADMIN)
    assert image["owner"] == "project-b" and image["visibility"] == "public"


def test_quotas_on_create(client: Client) -> None:
    too_many = {f"p{i}": "v" for i in range(129)}
    assert client.post("/v2/images", json=too_many).code == 413
    assert client.post("/v2/images", json={"tags": [str(i) for i in range(129)]}).code == 413


def test_show_missing_non_uuid_and_invisible(client: Client) -> None:
    assert client.get(f"/v2/images/{uuid.uuid4()}").code == 404
    reply = client.get("/v2/images/cirros-by-name")
    assert reply.code == 404 and b"No image found with ID cirros-by-name" in reply.body
    private = client.create(visibility="private", _headers=PROJECT_A)
    assert client.get(f"/v2/images/{private['id']}", headers=PROJECT_B).code == 404
    assert client.get(f"/v2/images/{private['id']}", headers=ADMIN).code == 200
    public = client.create(visibility="public", _headers=ADMIN)
    assert client.get(f"/v2/images/{public['id']}", headers=PROJECT_B).code == 200


def test_get_with_body_is_rejected(client: Client) -> None:
    image = client.create()
    reply = client.request("GET", f"/v2/images/{image['id']}", data=b"{}")
    assert reply.code == 400 and b"A body is not expected" in reply.body


# -- update ---------------------------------------------------------------------------------


def test_patch_v21_add_replace_remove(client: Client) -> None:
    image = client.create(name="old", os_distro="debian", _headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    reply = client.patch(path, [
        {"op": "replace", "path": "/name", "value": "new"},
        {"op": "add", "path": "/os_version", "value": "12"},
        {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
        {"op": "add", "path": "/tags", "value": ["a", "b"]},
        {"op": "replace", "path": "/min_ram", "value": 1024},
        {"op": "replace", "path": "/visibility", "value": "private"},
        {"op": "add", "path": "/a~1b~0c", "value": "escaped"},
    ], headers=PROJECT_A)
    assert reply.code == 200, reply.body
    body = reply.json()
    assert body["name"] == "new" and body["os_version"] == "12" and body["os_distro"] == "ubuntu"
    assert body["tags"] == ["a", "b"] and body["min_ram"] == 1024
    assert body["visibility"] == "private" and body["a/b~c"] == "escaped"
    assert body["updated_at"] >= image["updated_at"]
    reply = client.patch(path, [{"op": "remove", "path": "/os_version"}], headers=PROJECT_A)
    assert "os_version" not in reply.json()
    assert client.get(path, headers=PROJECT_A).json() == reply.json()


def test_patch_v20_media_type(client: Client) -> None:
    image = client.create(foo="bar")
    path = f"/v2/images/{image['id']}"
    reply = client.patch(path, [{"replace": "/name", "value": "v20"}, {"add": "/x", "value": "y"}],
                         media="v2.0")
    assert reply.code == 200 and reply.json()["name"] == "v20" and reply.json()["x"] == "y"
    # draft-4 add refuses an existing property
    assert client.patch(path, [{"add": "/foo", "value": "z"}], media="v2.0").code == 409


@pytest.mark.parametrize(
    "ops, code",
    [
        ([{"op": "replace", "path": "/status", "value": "active"}], 403),
        ([{"op": "replace", "path": "/id", "value": str(uuid.uuid4())}], 403),
        ([{"op": "replace", "path": "/size", "value": 1}], 403),
        ([{"op": "replace", "path": "/properties", "value": {}}], 403),
        ([{"op": "add", "path": "/os_glance_foo", "value": "x"}], 403),
        ([{"op": "add", "path": "/deleted", "value": "x"}], 403),
        ([{"op": "remove", "path": "/name"}], 403),
        ([{"op": "replace", "path": "/missing_extra", "value": "x"}], 409),
        ([{"op": "remove", "path": "/missing_extra"}], 409),
        ([{"op": "move", "path": "/name", "from": "/x"}], 400),
        ([{"path": "/name", "value": "x"}], 400),
        ([{"op": "replace", "value": "x"}], 400),
        ([{"op": "replace", "path": "/name"}], 400),
        ([{"op": "replace", "path": "name", "value": "x"}], 400),
        ([{"op": "add", "path": "/tags/-", "value": "x"}], 400),
        ([{"op": "replace", "path": "/name/", "value": "x"}], 400),
        ([{"op": "replace", "path": "/disk_format", "value": "floppy"}], 400),
        ([{"op": "add", "path": "/extra", "value": 5}], 400),
        ([{"op": "replace", "path": "/min_ram", "value": -5}], 400),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], 403),
        ([{"op": "replace", "path": "/owner", "value": "someone-else"}], 403),
        ([{"op": "replace", "path": "/name", "value": "ok"}, {"op": "remove", "path": "/nope"}],
         409),
        ({"op": "replace"}, 400),
        (["string"], 400),
    ],
)
def test_patch_errors_change_nothing(client: Client, ops: object, code: int) -> None:
    image = client.create(name="keep", _headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    reply = client.patch(path, ops, headers=PROJECT_A)
    assert reply.code == code, reply.body
    assert client.get(path, headers=PROJECT_A).json() == image


def test_patch_media_type_and_access(client: Client) -> None:
    image = client.create(_headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    reply = client.request("PATCH", path, json=[], headers={"Content-Type": "application/json"})
    assert reply.code == 415
    assert "openstack-images-v2.1-json-patch" in reply.header("Accept-Patch")
    assert client.patch(path, [], headers=PROJECT_A).json() == image
    # invisible to B: 404; public but not B's: 403
    assert client.patch(path, [{"op": "replace", "path": "/name", "value": "x"}],
                        headers=PROJECT_B).code == 404
    public = client.create(visibility="public", _headers=ADMIN)
    assert client.patch(f"/v2/images/{public['id']}",
                        [{"op": "replace", "path": "/name", "value": "x"}],
                        headers=PROJECT_B).code == 403


def test_patch_formats_only_while_queued(client: Client) -> None:
    image = client.create(disk_format="raw", container_format="bare")
    path = f"/v2/images/{image['id']}"
    assert client.patch(path, [{"op": "replace", "path": "/disk_format", "value": "ami"}]
                        ).code == 200
    assert client.upload(image["id"], b"data").code == 204
    reply = client.patch(path, [{"op": "replace", "path": "/disk_format", "value": "raw"}])
    assert reply.code == 403
    assert client.patch(path, [{"op": "replace", "path": "/name", "value": "fine"}]).code == 200


def test_property_quota_on_patch(client: Client) -> None:
    image = client.create(**{f"p{i}": "v" for i in range(128)})
    reply = client.patch(f"/v2/images/{image['id']}", [{"op": "add", "path": "/one", "value": "x"}])
    assert reply.code == 413


# -- delete ---------------------------------------------------------------------------------


def test_delete(client: Client) -> None:
    image = client.create(_headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    assert client.delete(path, headers=PROJECT_B).code == 404
    reply = client.delete(path, headers=PROJECT_A)
    assert reply.code == 204 and reply.body == b""
    assert reply.header("Content-Type") is None or "json" not in reply.header("Content-Type")
    assert client.get(path, headers=PROJECT_A).code == 404
    assert client.delete(path, headers=PROJECT_A).code == 404
    assert client.get("/v2/images", headers=PROJECT_A).json()["images"] == []


def test_delete_protected_and_foreign(client: Client) -> None:
    image = client.create(protected=True)
    path = f"/v2/images/{image['id']}"
    reply = client.delete(path)
    assert reply.code == 403 and b"is protected and cannot be deleted" in reply.body
    client.patch(path, [{"op": "replace", "path": "/protected", "value": False}])
    assert client.delete(path).code == 204
    public = client.create(visibility="public", _headers=ADMIN)
    assert client.delete(f"/v2/images/{public['id']}", headers=PROJECT_B).code == 403


def test_delete_removes_data(client: Client, service) -> None:
    image = client.create(disk_format="raw", container_format="bare")
    client.upload(image["id"], b"bytes")
    assert len(service.blobs.blobs) == 1
    client.delete(f"/v2/images/{image['id']}")
    assert service.blobs.blobs == {}


# -- tags and actions -----------------------------------------------------------------------


def test_tags(client: Client) -> None:
    image = client.create(_headers=PROJECT_A)
    base = f"/v2/images/{image['id']}/tags"
    reply = client.put(f"{base}/blue", headers=PROJECT_A)
    assert reply.code == 204 and reply.body == b""
    assert client.put(f"{base}/blue", headers=PROJECT_A).code == 204
    assert client.put(f"{base}/green", headers=PROJECT_A).code == 204
    assert client.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()["tags"] == [
        "blue", "green"]
    assert client.delete(f"{base}/blue", headers=PROJECT_A).code == 204
    assert client.delete(f"{base}/blue", headers=PROJECT_A).code == 404
    assert client.put(f"{base}/{'x' * 256}", headers=PROJECT_A).code == 400
    assert client.put(f"{base}/red", headers=PROJECT_B).code == 404
    assert client.put(f"/v2/images/{uuid.uuid4()}/tags/x").code == 404
    assert client.put(f"{base}/withbody", data=b"x", headers=PROJECT_A).code == 400
    assert client.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()["tags"] == ["green"]


def test_tag_quota(client: Client) -> None:
    image = client.create(tags=[str(i) for i in range(128)])
    assert client.put(f"/v2/images/{image['id']}/tags/one-more").code == 413


def test_deactivate_reactivate(client: Client) -> None:
    image = client.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    reply = client.post(f"{path}/actions/deactivate", headers=ADMIN)
    assert reply.code == 403 and b"Not allowed to deactivate image in status 'queued'" in reply.body
    client.upload(image["id"], b"payload", **PROJECT_A)
    # Glance 33's default (tempest's test_deactivate_reactivate_image): the owning project's
    # members may, its readers and other projects may not.
    reader = {"X-Project-Id": "project-a", "X-User-Id": "rita", "X-Roles": "reader"}
    reply = client.post(f"{path}/actions/deactivate", headers=reader)
    assert reply.code == 403 and b"not permitted to deactivate" in reply.body
    assert client.post(f"{path}/actions/deactivate", headers=PROJECT_B).code == 404
    assert client.get(path, headers=PROJECT_A).json()["status"] == "active"
    assert client.post(f"{path}/actions/deactivate", headers=PROJECT_A).code == 204
    assert client.post(f"{path}/actions/deactivate", headers=ADMIN).code == 204
    assert client.get(path, headers=PROJECT_A).json()["status"] == "deactivated"
    assert client.get(f"{path}/file", headers=PROJECT_A).code == 403
    assert client.get(f"{path}/file", headers=ADMIN).body == b"payload"
    assert client.upload(image["id"], b"again", **PROJECT_A).code == 409
    assert client.patch(path, [{"op": "replace", "path": "/name", "value": "n"}],
                        headers=PROJECT_A).code == 200
    assert client.post(f"{path}/actions/reactivate", headers=PROJECT_B).code == 404
    assert client.post(f"{path}/actions/reactivate", headers=reader).code == 403
    assert client.get(path, headers=PROJECT_A).json()["status"] == "deactivated"
    assert client.post(f"{path}/actions/reactivate", headers=PROJECT_A).code == 204
    assert client.post(f"{path}/actions/reactivate", headers=ADMIN).code == 204
    assert client.get(path, headers=PROJECT_A).json()["status"] == "active"
    assert client.post(f"{path}/actions/reactivate", data=b"{}", headers=ADMIN).code == 400
    assert client.post(f"/v2/images/{uuid.uuid4()}/actions/deactivate").code == 404


def test_deactivate_can_be_admin_only(services: Callable[..., ImageService]) -> None:
    """``--deactivate-policy admin``: the owning project's members are refused too."""
    client = Client(routes(APIConfig(image_service=services(rules=Rules(deactivate="admin")))
                           ).resource())
    image = client.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    assert client.upload(image["id"], b"payload", **PROJECT_A).code == 204
    for action in ("deactivate", "reactivate"):
        reply = client.post(f"{path}/actions/{action}", headers=PROJECT_A)
        assert reply.code == 403 and f"not permitted to {action}".encode() in reply.body
        assert client.get(path, headers=PROJECT_A).json()["status"] == (
            "active" if action == "deactivate" else "deactivated"
        )
        assert client.post(f"{path}/actions/{action}", headers=ADMIN).code == 204


def test_roles_reader_reads_member_writes(client: Client) -> None:
    reader = {"X-Project-Id": "project-a", "X-User-Id": "rita", "X-Roles": "reader"}
    nobody = {"X-Project-Id": "project-a", "X-User-Id": "nora", "X-Roles": "_member_x"}
    image = client.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)
    client.upload(image["id"], b"bytes", **PROJECT_A)
    path = f"/v2/images/{image['id']}"
    # reader: may list and show its project's images, not change or download them
    assert client.get(path, headers=reader).code == 200
    assert [i["id"] for i in client.get("/v2/images", headers=reader).json()["images"]] == [
        image["id"]]
    assert client.get(f"{path}/file", headers=reader).code == 403
    assert client.patch(path, [{"op": "replace", "path": "/name", "value": "x"}],
                        headers=reader).code == 403
    assert client.put(f"{path}/tags/t", headers=reader).code == 403
    assert client.delete(path, headers=reader).code == 403
    assert client.post("/v2/images", json={"name": "r"}, headers=reader).code == 403
    # no recognised role: nothing is visible, listing is forbidden
    assert client.get(path, headers=nobody).code == 404
    assert client.get("/v2/images", headers=nobody).code == 403
    assert client.post("/v2/images", json={"name": "n"}, headers=nobody).code == 403
    # member: everything on its project's images
    assert client.get(f"{path}/file", headers=PROJECT_A).body == b"bytes"
    assert client.delete(path, headers=PROJECT_A).code == 204


# -- schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image", "images", "member", "members"])
def test_schemas(client: Client, name: str) -> None:
    reply = client.get(f"/v2/schemas/{name}")
    assert reply.code == 200 and reply.json() == DEFAULT_SCHEMAS.document(name)
    assert reply.json()["name"] == name


def test_image_schema_details(client: Client) -> None:
    schema = client.get("/v2/schemas/image").json()
    assert schema["additionalProperties"] == {"type": "string"}
    assert schema["properties"]["os_distro"]["is_base"] is False
    assert "is_base" not in schema["properties"]["name"]
    assert None in schema["properties"]["disk_format"]["enum"]
    assert "additionalProperties" not in client.get("/v2/schemas/member").json()
    assert client.get("/v2/schemas/nope").code == 404
    assert client.post("/v2/schemas/image").code == 405


def test_the_operators_schema_file_shapes_the_schema_and_validation(
    services: Callable[..., ImageService]
) -> None:
    """``--schema-image``: the operator's optional properties replace Glance's, in the served
    schema (which glanceclient validates with) and in create and patch."""
    custom = {
        "hw_firmware_type": {"type": "string", "enum": ["bios", "uefi"], "is_base": False,
                             "description": "Firmware the guest boots with."},
        "site": {"type": ["null", "string"], "maxLength": 8, "is_base": False},
    }
    client = Client(routes(APIConfig(image_service=services(), schemas=ImageSchemas(custom))
                           ).resource())
    schema = client.get("/v2/schemas/image", headers=PROJECT_A).json()
    assert schema["properties"]["hw_firmware_type"] == custom["hw_firmware_type"]
    assert "os_distro" not in schema["properties"] and "name" in schema["properties"]
    assert client.get("/v2/schemas/images", headers=PROJECT_A).json()[
        "properties"]["images"]["items"] == schema
    image = client.create(name="u", hw_firmware_type="uefi", os_distro="free-form",
                          _headers=PROJECT_A)
    path = f"/v2/images/{image['id']}"
    before = client.get(path, headers=PROJECT_A).json()
    refused = [
        client.post("/v2/images", json={"name": "b", "hw_firmware_type": "coreboot"},
                    headers=PROJECT_A),
        client.post("/v2/images", json={"name": "b", "site": "far-too-long"},
                    headers=PROJECT_A),
        client.patch(path, [{"op": "replace", "path": "/hw_firmware_type", "value": "efi"}],
                     headers=PROJECT_A),
    ]
    for reply in refused:
        assert reply.code == 400, reply.body
        assert b"Provided object does not match schema 'image'" in reply.body
    assert client.get(path, headers=PROJECT_A).json() == before
    assert [i["name"] for i in client.get("/v2/images", headers=PROJECT_A).json()["images"]] == [
        "u"]
    # The defaults' checks are gone with them: Glance's kernel_id must be a UUID, this is free.
    assert client.create(name="k", kernel_id="not-a-uuid", _headers=PROJECT_A)[
        "kernel_id"] == "not-a-uuid"
    default = Client(routes(APIConfig(image_service=services())).resource())
    assert default.post("/v2/images", json={"kernel_id": "not-a-uuid"},
                        headers=PROJECT_A).code == 400


def test_locations_appear_only_when_shown(services: Callable[..., ImageService]) -> None:
    """Glance's ``show_multiple_locations``: the key exists only then (and lists the data)."""
    service = services()
    shown = Client(routes(APIConfig(image_service=service, show_locations=True)).resource())
    hidden = Client(routes(APIConfig(image_service=service)).resource())
    image = shown.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)
    assert image["locations"] == []
    assert shown.upload(image["id"], b"bytes", **PROJECT_A).code == 204
    [location] = shown.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()["locations"]
    assert location["url"].startswith("memory://") and location["metadata"] == {}
    assert "locations" not in hidden.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()
    listed = hidden.get("/v2/images", headers=PROJECT_A).json()["images"]
    assert listed and all("locations" not in i for i in listed)
