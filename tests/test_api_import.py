"""
The interoperable import in memory: staging, ``glance-direct`` and ``web-download`` (through
a fake fetcher: ``imaged.fetch`` has its own tests), the tasks that record them, their
error codes, and recovery of an import whose process died.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from twisted.web.iweb import IBodyProducer

from imaged.api import APIConfig, ImageService, Limits, routes
from imaged.errors import BadRequest
from imaged.testing import MemoryBlobStore, producer_of

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client, fired
from .test_contract_image_service import HeldProducer


def qcow2_image(tmp_path: Any) -> bytes:
    """A small real qcow2 (qemu-utils is one of the test suite's Debian packages)."""
    path = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "1M"], check=True,
                   capture_output=True)
    return bytes(path.read_bytes())


@attrs.frozen
class Fetched:
    producer: IBodyProducer
    length: int | None
    uri: str


class FakeFetcher:
    """``imaged.fetch.Fetcher``'s shape: URIs map to bytes, a producer, or an error."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.opened: list[str] = []

    async def open(self, uri: str) -> Fetched:
        self.opened.append(uri)
        answer = self.answers[uri]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, bytes):
            return Fetched(producer_of(answer), len(answer), uri)
        return Fetched(answer, answer.length, uri)


class Rules:
    """``ImportFilter.check_uri``'s shape: refuses hosts named ``forbidden``."""

    def check_uri(self, uri: str) -> None:
        if "forbidden" in uri:
            raise BadRequest("URI for web-download does not pass filtering: forbidden")


@attrs.define
class World:
    client: Client
    service: ImageService
    blobs: MemoryBlobStore
    fetcher: FakeFetcher


@pytest.fixture
def world(services: Callable[..., ImageService]) -> World:
    blobs, fetcher = MemoryBlobStore(), FakeFetcher()
    service = services(limits=Limits(image_size_cap=256 * 1024), blobs=blobs, fetcher=fetcher,
                       uri_rules=Rules())
    client = Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
    return World(client, service, blobs, fetcher)


def new_image(world: World, headers: dict[str, str] = PROJECT_A, **attributes: Any) -> str:
    attributes = {"disk_format": "raw", "container_format": "bare", **attributes}
    return str(world.client.create(_headers=headers, **attributes)["id"])


def stage(world: World, image_id: str, data: bytes, headers: dict[str, str] = PROJECT_A,
          **extra: str) -> Any:
    hdrs = {**headers, "Content-Type": "application/octet-stream", **extra}
    return world.client.put(f"/v2/images/{image_id}/stage", data=data, headers=hdrs)


def start_import(world: World, image_id: str, body: Any,
                 headers: dict[str, str] = PROJECT_A) -> Any:
    return world.client.post(f"/v2/images/{image_id}/import", json=body, headers=headers)


def show(world: World, image_id: str) -> dict[str, Any]:
    reply = world.client.get(f"/v2/images/{image_id}", headers=ADMIN)
    assert reply.code == 200, reply.body
    document: dict[str, Any] = reply.json()
    return document


def tasks_of(world: World, image_id: str) -> list[dict[str, Any]]:
    reply = world.client.get(f"/v2/images/{image_id}/tasks", headers=PROJECT_A)
    assert reply.code == 200, reply.body
    tasks: list[dict[str, Any]] = reply.json()["tasks"]
    return tasks


def test_discovery_lists_the_methods_and_create_says_them(world: World) -> None:
    reply = world.client.get("/v2/info/import", headers=PROJECT_A)
    assert reply.json() == {"import-methods": {
        "description": "Import methods available.", "type": "array",
        "value": ["glance-direct", "web-download"]}}
    reply = world.client.post("/v2/images", json={"name": "x"}, headers=PROJECT_A)
    assert reply.header("OpenStack-image-import-methods") == "glance-direct,web-download"


def test_stage_then_glance_direct(world: World) -> None:
    data = b"staged bytes " * 100
    image_id = new_image(world, name="direct")
    assert stage(world, image_id, data).code == 204
    staged = show(world, image_id)
    assert staged["status"] == "uploading" and staged["size"] == len(data)
    # Staged data is nobody's download yet.
    assert world.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).code == 204
    assert len(world.blobs.blobs) == 1
    # all_stores names the one store there is (tempest sends it), as on Glance with one store.
    reply = start_import(world, image_id, {"method": {"name": "glance-direct"},
                                           "all_stores": True})
    assert reply.code == 202 and reply.body == b""
    image = show(world, image_id)
    assert image["status"] == "active"
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert not any(key.startswith("os_glance") for key in image)
    assert world.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body == data
    assert len(world.blobs.blobs) == 1  # published in place: no second copy
    [task] = tasks_of(world, image_id)
    assert task["status"] == "success" and task["type"] == "api_image_import"
    assert task["request_id"] == reply.header("x-openstack-request-id")
    assert task["result"] == {"image_id": image_id} and task["image_id"] == image_id
    assert task["input"]["import_req"]["method"] == {"name": "glance-direct"}
    assert task["expires_at"] is not None and task["user_id"] == "alice"


def test_stage_refusals_change_nothing(world: World) -> None:
    image_id = new_image(world)
    before = show(world, image_id)
    reader = {"X-Project-Id": "project-a", "X-User-Id": "rita", "X-Roles": "reader"}
    cases = [
        (stage(world, image_id, b"x", PROJECT_B), 404),
        (stage(world, image_id, b"x", reader), 403),
        (stage(world, str(uuid.uuid4()), b"x"), 404),
        (world.client.put(f"/v2/images/{image_id}/stage", data=b"x",
                          headers={**PROJECT_A, "Content-Type": "application/json"}), 415),
        (stage(world, image_id, b"y" * 300 * 1024), 413),
        (stage(world, image_id, b"y" * 10, **{"x-openstack-image-size": "11"}), 400),
    ]
    for reply, code in cases:
        assert reply.code == code, (code, reply.body)
    assert show(world, image_id) == before and world.blobs.blobs == {}
    assert stage(world, image_id, b"first").code == 204
    staged = show(world, image_id)
    reply = stage(world, image_id, b"second")
    assert reply.code == 409
    assert show(world, image_id) == staged and list(world.blobs.blobs.values()) == [b"first"]
    # Data that is not its disk_format is refused at staging, as an upload's.
    qcow = new_image(world, disk_format="qcow2")
    assert stage(world, qcow, b"plainly raw" * 100).code == 415
    assert show(world, qcow)["status"] == "queued"


def test_import_refusals_change_nothing(world: World) -> None:
    queued = new_image(world)
    staged = new_image(world)
    assert stage(world, staged, b"data").code == 204
    active = new_image(world)
    assert world.client.upload(active, b"data", **PROJECT_A).code == 204
    formatless = str(world.client.create(_headers=PROJECT_A)["id"])
    before = {i: show(world, i) for i in (queued, staged, active, formatless)}
    cases = [
        (queued, {}, 400),
        (queued, {"method": "glance-direct"}, 400),
        (queued, {"method": {"name": "copy-image"}}, 400),
        (queued, {"method": {"name": "no-such-method"}}, 400),
        (queued, {"method": {"name": "web-download"}}, 400),  # no uri
        (queued, {"method": {"name": "web-download", "uri": "http://forbidden.example/x"}}, 400),
        (queued, {"method": {"name": "glance-direct"}, "all_stores": "yes"}, 400),
        (queued, {"method": {"name": "glance-direct"}}, 409),  # nothing staged
        (active, {"method": {"name": "web-download", "uri": "http://example.org/i"}}, 409),
        (active, {"method": {"name": "glance-direct"}}, 409),
        (staged, {"method": {"name": "web-download", "uri": "http://example.org/i"}}, 409),
        (formatless, {"method": {"name": "web-download", "uri": "http://example.org/i"}}, 409),
        (str(uuid.uuid4()), {"method": {"name": "glance-direct"}}, 404),
    ]
    for image_id, body, code in cases:
        reply = start_import(world, image_id, body)
        assert reply.code == code, (body, reply.body)
    assert start_import(world, staged, {"method": {"name": "glance-direct"}},
                        PROJECT_B).code == 404
    reader = {"X-Project-Id": "project-a", "X-User-Id": "rita", "X-Roles": "reader"}
    assert start_import(world, staged, {"method": {"name": "glance-direct"}}, reader).code == 403
    assert {i: show(world, i) for i in before} == before
    assert world.fetcher.opened == []
    assert all(tasks_of(world, i) == [] for i in (queued, staged, active))


def test_web_download_streams_into_the_store(world: World) -> None:
    data = b"remote image " * 200
    world.fetcher.answers["http://example.org/cirros.raw"] = data
    image_id = new_image(world)
    reply = start_import(world, image_id, {"method": {"name": "web-download",
                                                      "uri": "http://example.org/cirros.raw"}})
    assert reply.code == 202
    image = show(world, image_id)
    assert image["status"] == "active" and image["size"] == len(data)
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert world.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body == data
    [task] = tasks_of(world, image_id)
    assert task["status"] == "success"
    assert task["os_imaged_progress"] == {"done": len(data), "total": len(data)}


@pytest.mark.parametrize("answer, message", [
    (OSError("connection refused"), "connection refused"),
    (b"x" * 300 * 1024, "exceeds the size cap"),
    (b"not a qcow2 at all" * 10, "does not match disk_format 'qcow2'"),
])
def test_a_failed_web_download_queues_the_image_and_keeps_nothing(
    world: World, answer: Any, message: str, tmp_path: Any
) -> None:
    world.fetcher.answers["http://example.org/i"] = answer
    image_id = new_image(world, disk_format="qcow2")
    before = show(world, image_id)
    assert start_import(world, image_id, {"method": {"name": "web-download",
                                                     "uri": "http://example.org/i"}}).code == 202
    after = show(world, image_id)
    assert after["status"] == "queued" and world.blobs.blobs == {}
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"}
    [task] = tasks_of(world, image_id)
    assert task["status"] == "failure" and message in task["message"], task["message"]
    # The image can be imported again, and this time it works.
    world.fetcher.answers["http://example.org/good"] = qcow2_image(tmp_path)
    assert start_import(world, image_id, {"method": {"name": "web-download",
                                                     "uri": "http://example.org/good"}}).code == 202
    assert show(world, image_id)["status"] == "active"


def test_a_running_import_holds_the_lock_and_shows_progress(
    world: World, clock: Any
) -> None:
    held = HeldProducer(b"z" * 100)
    world.fetcher.answers["http://example.org/slow"] = held
    image_id = new_image(world)
    body = {"method": {"name": "web-download", "uri": "http://example.org/slow"}}
    assert start_import(world, image_id, body).code == 202
    importing = show(world, image_id)
    assert importing["status"] == "importing"
    [task] = tasks_of(world, image_id)
    assert importing["os_glance_import_task"] == task["id"] and task["status"] == "processing"
    reply = start_import(world, image_id, body)
    assert reply.code == 409 and task["id"].encode() in reply.body
    held.release()
    assert show(world, image_id)["status"] == "active"
    [task] = tasks_of(world, image_id)
    assert task["status"] == "success" and task["os_imaged_progress"]["done"] == 100


def test_tasks_api_is_an_administrators(world: World) -> None:
    image_id = new_image(world)
    assert stage(world, image_id, b"d").code == 204
    assert start_import(world, image_id, {"method": {"name": "glance-direct"}}).code == 202
    [task] = tasks_of(world, image_id)
    assert world.client.get("/v2/tasks", headers=PROJECT_A).code == 403
    assert world.client.get(f"/v2/tasks/{task['id']}", headers=PROJECT_A).code == 403
    listed = world.client.get("/v2/tasks", headers=ADMIN).json()
    assert [t["id"] for t in listed["tasks"]] == [task["id"]]
    assert "input" not in listed["tasks"][0] and listed["schema"] == "/v2/schemas/tasks"
    shown = world.client.get(f"/v2/tasks/{task['id']}", headers=ADMIN).json()
    assert shown["status"] == "success" and shown["result"] == {"image_id": image_id}
    assert world.client.get(f"/v2/tasks/{uuid.uuid4()}", headers=ADMIN).code == 404
    assert world.client.delete(f"/v2/tasks/{task['id']}", headers=ADMIN).code == 405
    assert world.client.get("/v2/tasks?status=bogus", headers=ADMIN).code == 400
    assert world.client.get("/v2/tasks?status=success", headers=ADMIN).json()["tasks"]
    assert world.client.get("/v2/tasks?status=failure", headers=ADMIN).json()["tasks"] == []
    for name in ("task", "tasks"):
        assert world.client.get(f"/v2/schemas/{name}", headers=PROJECT_A).json()["name"] == name


def test_an_import_whose_process_died_ends_as_a_failure(world: World, clock: Any) -> None:
    """A task held by this node's claim with no import running here (the process was
    restarted): the sweep queues the image again and the task fails with a message."""
    image_id = new_image(world)
    held = HeldProducer(b"q" * 10)
    world.fetcher.answers["http://example.org/dies"] = held
    assert start_import(world, image_id, {"method": {"name": "web-download",
                                                     "uri": "http://example.org/dies"}}).code == 202
    service = world.service
    # What a restart loses: the running import and the claim it had in memory.
    service.imports.running.clear()
    service.uploads.live.clear()
    clock.advance(200)
    fired(service.sweep())
    assert show(world, image_id)["status"] == "queued"
    [task] = tasks_of(world, image_id)
    assert task["status"] == "failure" and "interrupted" in task["message"]
    assert not any(key.startswith("os_glance") for key in show(world, image_id))


def test_glance_direct_can_be_turned_off(services: Callable[..., ImageService]) -> None:
    service = services(import_methods=("web-download",), fetcher=FakeFetcher())
    client = Client(routes(APIConfig(image_service=service)).resource())
    image_id = client.create(disk_format="raw", container_format="bare",
                             _headers=PROJECT_A)["id"]
    reply = client.put(f"/v2/images/{image_id}/stage", data=b"x",
                       headers={**PROJECT_A, "Content-Type": "application/octet-stream"})
    assert reply.code == 404 and b"'glance-direct' method is not available" in reply.body
    assert client.get("/v2/info/import", headers=PROJECT_A).json()[
        "import-methods"]["value"] == ["web-download"]

