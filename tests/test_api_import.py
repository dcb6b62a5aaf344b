"""
The interoperable import in memory: staging, ``glance-direct`` and ``web-download`` (through
a fake fetcher: ``imaged.fetch`` has its own tests), the tasks that record them, their
error codes, and recovery of an import whose process died.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import succeed
from twisted.web.iweb import IBodyProducer

from imaged.api import APIConfig, ImageService, Limits, routes
from imaged.context import RequestContext
from imaged.errors import BadRequest
from imaged.imports import ImportPlugins
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
    # As Glance leaves them: no lock, nothing left to import to, nothing failed.
    assert "os_glance_import_task" not in image
    assert image["os_glance_importing_to_stores"] == image["os_glance_failed_import"] == ""
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
    service.imports.claims.clear()
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



def legacy_task(uri: str, **properties: Any) -> dict[str, Any]:
    return {"type": "import", "input": {
        "import_from": uri, "import_from_format": "raw",
        "image_properties": {"name": "legacy", "disk_format": "raw", "container_format": "bare",
                             **properties}}}


def test_the_legacy_import_task_makes_an_image_from_a_uri(world: World) -> None:
    """``POST /v2/tasks`` (type ``import``): Glance's pre-2.6 import, as tempest drives it."""
    data = b"legacy bytes" * 50
    world.fetcher.answers["http://example.org/legacy.raw"] = data
    reply = world.client.post("/v2/tasks", json=legacy_task("http://example.org/legacy.raw"),
                              headers=ADMIN)
    assert reply.code == 201, reply.body
    task = reply.json()
    assert task["type"] == "import" and task["input"]["import_from_format"] == "raw"
    assert reply.header("Location") == f"http://imaged.test:9292/v2/tasks/{task['id']}"
    shown = world.client.get(f"/v2/tasks/{task['id']}", headers=ADMIN).json()
    assert shown["status"] == "success"
    image = show(world, shown["result"]["image_id"])
    assert image["name"] == "legacy" and image["status"] == "active"
    assert world.client.get(f"/v2/images/{image['id']}/file", headers=ADMIN).body == data
    # A host that does not resolve: accepted, then the task fails (tempest's negative test).
    world.fetcher.answers["http://no-such-host.example/x.qcow2"] = OSError("DNS lookup failed")
    reply = world.client.post("/v2/tasks", json=legacy_task("http://no-such-host.example/x.qcow2"),
                              headers=ADMIN)
    assert reply.code == 201
    failed = world.client.get(f"/v2/tasks/{reply.json()['id']}", headers=ADMIN).json()
    assert failed["status"] == "failure" and "DNS lookup failed" in failed["message"]


def test_legacy_task_refusals_leave_no_image(world: World) -> None:
    good = legacy_task("http://example.org/x")
    cases = [
        (PROJECT_A, good, 403),
        (ADMIN, {**good, "type": "api_image_import"}, 400),
        (ADMIN, {"type": "import", "input": {"import_from": "http://example.org/x"}}, 400),
        (ADMIN, legacy_task("http://forbidden.example/x"), 400),
        (ADMIN, legacy_task("http://example.org/x", disk_format=None), 400),
        (ADMIN, legacy_task("http://example.org/x", status="active"), 403),
        (ADMIN, [], 400),
    ]
    for headers, body, code in cases:
        reply = world.client.post("/v2/tasks", json=body, headers=headers)
        assert reply.code == code, (body, reply.body)
    assert world.client.get("/v2/images", headers=ADMIN).json()["images"] == []
    assert world.client.get("/v2/tasks", headers=ADMIN).json()["tasks"] == []
    assert world.fetcher.opened == []


def test_staged_data_never_imported_expires(world: World, clock: Any) -> None:
    image_id = new_image(world)
    assert stage(world, image_id, b"forgotten").code == 204
    fresh = new_image(world)
    clock.advance(world.service.stage_expiry - 100)
    assert stage(world, fresh, b"recent").code == 204
    clock.advance(200)
    fired(world.service.sweep())
    expired = show(world, image_id)
    assert expired["status"] == "queued" and expired["size"] is None
    assert show(world, fresh)["status"] == "uploading"
    assert list(world.blobs.blobs.values()) == [b"recent"]
    # The image can be staged again and imported.
    assert stage(world, image_id, b"again").code == 204
    assert start_import(world, image_id, {"method": {"name": "glance-direct"}}).code == 202
    assert show(world, image_id)["status"] == "active"


# -- import plugins -------------------------------------------------------------------------


def plugin_world(services: Callable[..., ImageService], tmp_path: Any, *names: str,
                 **options: Any) -> World:
    blobs, fetcher = MemoryBlobStore(), FakeFetcher()
    plugins = ImportPlugins(names=names, workdir=str(tmp_path / "work"), **options)
    service = services(limits=Limits(image_size_cap=64 * 1024 * 1024), blobs=blobs,
                       fetcher=fetcher, uri_rules=Rules(), import_plugins=plugins)
    client = Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
    return World(client, service, blobs, fetcher)


async def finished(world: World) -> None:
    """Wait for the imports running in the background (conversion uses threads)."""
    for running in list(world.service.imports.running.values()):
        await running


def test_inject_image_metadata_marks_users_imports(
    services: Callable[..., ImageService], tmp_path: Any
) -> None:
    world = plugin_world(services, tmp_path, "inject_image_metadata",
                         inject={"origin": "imported", "site": "edge-1"})
    mine = new_image(world)
    assert stage(world, mine, b"data").code == 204
    assert start_import(world, mine, {"method": {"name": "glance-direct"}}).code == 202
    image = show(world, mine)
    assert image["status"] == "active"
    assert (image["origin"], image["site"]) == ("imported", "edge-1")
    admins = new_image(world, ADMIN)
    assert stage(world, admins, b"data", ADMIN).code == 204
    assert start_import(world, admins, {"method": {"name": "glance-direct"}}, ADMIN).code == 202
    assert "origin" not in show(world, admins)  # ignore_user_roles: admin


@pytest_twisted.ensureDeferred
async def test_decompression_on_web_download_and_glance_direct(
    services: Callable[..., ImageService], tmp_path: Any
) -> None:
    world = plugin_world(services, tmp_path, "image_decompression")
    raw = os.urandom(300_000) + b"\0" * 700_000
    world.fetcher.answers["http://example.org/disk.raw.gz"] = gzip.compress(raw)
    fetched = new_image(world)
    assert start_import(world, fetched, {"method": {"name": "web-download",
                                                    "uri": "http://example.org/disk.raw.gz"}}
                        ).code == 202
    await finished(world)
    staged = new_image(world, disk_format="qcow2")
    qcow = qcow2_image(tmp_path)
    assert stage(world, staged, gzip.compress(qcow)).code == 204  # inspected at import
    assert start_import(world, staged, {"method": {"name": "glance-direct"}}).code == 202
    await finished(world)
    for image_id, data in ((fetched, raw), (staged, qcow)):
        image = show(world, image_id)
        assert image["status"] == "active" and image["size"] == len(data)
        assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert sorted(world.blobs.blobs.values()) == sorted([raw, qcow])  # compressed ones gone


@pytest_twisted.ensureDeferred
async def test_conversion_to_raw(services: Callable[..., ImageService], tmp_path: Any) -> None:
    world = plugin_world(services, tmp_path, "image_conversion")
    qcow = qcow2_image(tmp_path)
    world.fetcher.answers["http://example.org/disk.qcow2"] = qcow
    fetched = new_image(world, disk_format="qcow2")
    assert start_import(world, fetched, {"method": {"name": "web-download",
                                                    "uri": "http://example.org/disk.qcow2"}}
                        ).code == 202
    await finished(world)
    staged = new_image(world, disk_format="qcow2")
    assert stage(world, staged, qcow).code == 204
    assert start_import(world, staged, {"method": {"name": "glance-direct"}}).code == 202
    await finished(world)
    for image_id in (fetched, staged):
        image = show(world, image_id)
        assert image["status"] == "active", tasks_of(world, image_id)
        assert image["disk_format"] == "raw"
        assert image["size"] == image["virtual_size"] == 1024 * 1024
        data = world.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body
        assert data == b"\0" * 1024 * 1024
        assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert len(world.blobs.blobs) == 2  # the qcow2 originals are gone
    assert os.listdir(tmp_path / "work") == []  # and so are the temporary files


@pytest_twisted.ensureDeferred
async def test_an_unsafe_image_fails_conversion_and_leaves_nothing(
    services: Callable[..., ImageService], tmp_path: Any
) -> None:
    world = plugin_world(services, tmp_path, "image_conversion")
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * 1024)
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", str(base), "-F", "raw",
                    str(backed)], check=True, capture_output=True)
    world.fetcher.answers["http://example.org/backed.qcow2"] = backed.read_bytes()
    image_id = new_image(world, disk_format="qcow2")
    assert start_import(world, image_id, {"method": {"name": "web-download",
                                                     "uri": "http://example.org/backed.qcow2"}}
                        ).code == 202
    await finished(world)
    assert show(world, image_id)["status"] == "queued"
    [task] = tasks_of(world, image_id)
    assert task["status"] == "failure" and "backing" in task["message"], task["message"]
    assert world.blobs.blobs == {} and os.listdir(tmp_path / "work") == []


def test_two_nodes_one_database_an_import_of_a_silent_node_ends(
    services: Callable[..., ImageService], clock: Any
) -> None:
    """
    Two imaged processes on one database and store: staged via one, imported via the
    other; a web-download whose node falls silent (killed, partitioned) is ended by the
    other's sweep: the image queued again, the task failed, never run twice.
    """
    blobs = MemoryBlobStore()
    first = services(blobs=blobs, fetcher=FakeFetcher(), node="node-a")
    second = services(blobs=blobs, fetcher=FakeFetcher(), node="node-b",
                      metadata=first.metadata)
    a = World(Client(routes(APIConfig(image_service=first)).resource()), first, blobs,
              first.imports.fetcher)  # type: ignore[arg-type]
    b = World(Client(routes(APIConfig(image_service=second)).resource()), second, blobs,
              second.imports.fetcher)  # type: ignore[arg-type]
    image_id = new_image(a)
    assert stage(a, image_id, b"staged on a").code == 204
    assert start_import(b, image_id, {"method": {"name": "glance-direct"}}).code == 202
    assert b.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body == b"staged on a"
    # A web-download running on node-a, whose node then falls silent.
    held = HeldProducer(b"never finished")
    a.fetcher.answers["http://example.org/slow"] = held
    other = new_image(a)
    assert start_import(a, other, {"method": {"name": "web-download",
                                              "uri": "http://example.org/slow"}}).code == 202
    fired(first.sweep())  # node-a's heartbeat
    clock.advance(100)
    fired(second.sweep())
    assert show(b, other)["status"] == "importing"  # node-a beat 100 s ago: alive
    clock.advance(121)
    fired(second.sweep())
    assert show(b, other)["status"] == "queued"
    [task] = tasks_of(b, other)
    assert task["status"] == "failure" and "interrupted" in task["message"]
    # If node-a was only partitioned and its fetch ends now, it finds the image gone from
    # under its claim: nothing is published, the bytes are removed.
    held.release()
    assert show(a, other)["status"] == "queued"
    assert list(blobs.blobs.values()) == [b"staged on a"]


# -- glance-download --------------------------------------------------------------------------

REMOTE = "http://images.region-two.example:9292"
CATALOG = [{"type": "image", "name": "glance", "endpoints": [
    {"region_id": "RegionTwo", "interface": "public", "url": REMOTE + "/v2/"},
    {"region_id": "RegionOne", "interface": "public", "url": "http://imaged.test:9292"},
]}]


class RemoteFetcher(FakeFetcher):
    """Another region's image service: documents and data by URL; remembers the headers."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[Any] = []

    async def open(self, uri: str, headers: Any = None) -> Fetched:
        self.headers.append(headers)
        return await super().open(uri)


def test_glance_download_copies_another_regions_image(
    services: Callable[..., ImageService]
) -> None:
    import json

    blobs, remote = MemoryBlobStore(), RemoteFetcher()
    service = services(blobs=blobs, remote=remote)
    client = Client(routes(APIConfig(image_service=service)).resource())
    world = World(client, service, blobs, remote)
    source_id = str(uuid.uuid4())
    data = b"region two's bytes" * 100
    remote.answers[f"{REMOTE}/v2/images/{source_id}"] = json.dumps({
        "id": source_id, "status": "active", "disk_format": "raw", "container_format": "bare",
        "hw_cpu_cores": "5", "trait:STORAGE_DISK_SSD": "required", "os_distro": "rhel",
        "speed": "88mph"}).encode()
    remote.answers[f"{REMOTE}/v2/images/{source_id}/file"] = data
    caller = {**PROJECT_A, "X-Auth-Token": "caller-token",
              "X-Service-Catalog": json.dumps(CATALOG)}
    assert client.get("/v2/info/import", headers=PROJECT_A).json()["import-methods"][
        "value"] == ["glance-direct", "glance-download"]
    image_id = new_image(world, disk_format="iso", container_format="ovf", hw_cpu_cores="1",
                         os_distro="windows")
    body = {"method": {"name": "glance-download", "glance_image_id": source_id,
                       "glance_region": "RegionTwo", "glance_service_interface": "public"}}
    assert start_import(world, image_id, body, caller).code == 202
    image = show(world, image_id)
    assert image["status"] == "active" and image["size"] == len(data)
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert (image["hw_cpu_cores"], image["os_distro"]) == ("5", "rhel")
    assert image["trait:STORAGE_DISK_SSD"] == "required" and "speed" not in image
    assert client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body == data
    assert all(h[b"X-Auth-Token"] == b"caller-token" for h in remote.headers)
    # Refusals: a bad id at once (400); a region or image that is not there fails the task
    # and leaves the image queued with its properties.
    other = new_image(world, hw_cpu_cores="1")
    bad = {"method": {**body["method"], "glance_image_id": "foo"}}
    reply = start_import(world, other, bad, caller)
    assert reply.code == 400 and b"image id does not look like a UUID" in reply.body
    nowhere = {"method": {**body["method"], "glance_region": "not a region"}}
    missing = {"method": {**body["method"], "glance_image_id": str(uuid.uuid4())}}
    remote.answers[f"{REMOTE}/v2/images/{missing['method']['glance_image_id']}"] = OSError(
        "the server answered 404 Not Found")
    for attempt, why in ((nowhere, "No image service in region 'not a region'"),
                         (missing, "404")):
        assert start_import(world, other, attempt, caller).code == 202
        after = show(world, other)
        assert after["status"] == "queued" and after["hw_cpu_cores"] == "1"
        assert why in tasks_of(world, other)[-1]["message"]


@pytest_twisted.ensureDeferred
async def test_plugins_on_the_file_store_keep_the_published_data(
    services: Callable[..., ImageService], tmp_path: Any
) -> None:
    """The file store names data after its image: the rewritten data lands where the staged
    data was, and must not be removed as "the source" afterwards."""
    from twisted.internet import reactor

    from imaged.model import ContainerFormat, CreateImageRequest, DiskFormat, ImportRequest
    from imaged.store.files import FileBlobStore
    from imaged.streams import consume

    blobs = FileBlobStore(str(tmp_path / "images"), reactor)
    plugins = ImportPlugins(names=("image_decompression",), workdir=str(tmp_path / "work"))
    service = services(blobs=blobs, import_plugins=plugins)
    owner = RequestContext.from_roles("project-a", "alice", frozenset({"member"}))
    raw = os.urandom(100_000)
    try:
        image = await service.create(owner, CreateImageRequest(
            name="f", disk_format=DiskFormat.RAW, container_format=ContainerFormat.BARE))
        await service.stage(owner, image.id, producer_of(gzip.compress(raw)))
        await service.import_image(owner, image.id, ImportRequest(method="glance-direct"))
        for running in list(service.imports.running.values()):
            await running
        active = await service.get(owner, image.id)
        assert active.status.value == "active" and active.size == len(raw)
        download = await service.download(owner, image.id)
        assert download.producer is not None
        received: list[bytes] = []

        def keep(chunk: bytes) -> Any:
            received.append(chunk)
            return succeed(None)

        await consume(download.producer, keep)
        assert b"".join(received) == raw
    finally:
        await blobs.close()


def test_a_long_request_id_is_recorded_and_refusals_keep_the_stage(world: World) -> None:
    image_id = new_image(world)
    assert stage(world, image_id, b"kept").code == 204
    long_id = "a" * 64  # a sane caller id, prefixed req- by imaged: 68 characters
    reply = start_import(world, image_id, {"method": {"name": "glance-direct"}},
                         {**PROJECT_A, "X-OpenStack-Request-ID": long_id})
    assert reply.code == 202, reply.body
    [task] = tasks_of(world, image_id)
    assert task["request_id"] == reply.header("x-openstack-request-id")
    # A refused import records no task and leaves staged data staged.
    other = new_image(world)
    assert stage(world, other, b"staged").code == 204
    staged = show(world, other)
    assert start_import(world, other, {"method": {"name": "web-download",
                                                  "uri": "http://example.org/x"}}).code == 409
    assert show(world, other) == staged and tasks_of(world, other) == []


def test_task_pages_keep_their_query(world: World) -> None:
    for _ in range(3):
        image_id = new_image(world)
        assert stage(world, image_id, b"d").code == 204
        assert start_import(world, image_id, {"method": {"name": "glance-direct"}}).code == 202
    first = world.client.get("/v2/tasks?limit=2&status=success&sort_dir=asc",
                             headers=ADMIN).json()
    assert len(first["tasks"]) == 2
    assert "status=success" in first["next"] and "sort_dir=asc" in first["next"]
    assert "limit=2" in first["next"]
    second = world.client.get(first["next"], headers=ADMIN).json()
    ids = [t["id"] for t in first["tasks"] + second["tasks"]]
    assert len(ids) == len(set(ids)) == 3


def test_the_catalog_of_keystonemiddleware_v2_and_keystone_v3() -> None:
    from imaged.imports import remote_endpoint

    v3 = [{"type": "image", "endpoints": [
        {"region_id": "RegionTwo", "interface": "internal", "url": "http://in:9292"},
        {"region_id": "RegionTwo", "interface": "public", "url": "https://pub:9292/v2/"}]}]
    v2 = [{"type": "image", "endpoints": [
        {"region": "RegionTwo", "publicURL": "https://pub2:9292", "internalURL": "http://i2"}]}]
    assert remote_endpoint(v3, "regiontwo", "public") == "https://pub:9292"
    assert remote_endpoint(v3, "RegionTwo", "internal") == "http://in:9292"
    assert remote_endpoint(v2, "RegionTwo", "public") == "https://pub2:9292"
    assert remote_endpoint(v2, "RegionTwo", "internal") == "http://i2"
    assert remote_endpoint(v3, "RegionThree", "public") is None
    assert remote_endpoint([{"type": "compute", "endpoints": []}], "RegionTwo", "public") is None


def test_formats_changed_during_an_import_refuse_its_data(world: World) -> None:
    """Glance lets an importing image's formats change; data inspected for the old ones is
    then refused, not published unchecked under the new ones."""
    held = HeldProducer(b"r" * 100)
    world.fetcher.answers["http://example.org/held"] = held
    image_id = new_image(world, container_format="ova")
    assert start_import(world, image_id, {"method": {"name": "web-download",
                                                     "uri": "http://example.org/held"}}
                        ).code == 202
    reply = world.client.patch(f"/v2/images/{image_id}",
                               [{"op": "replace", "path": "/container_format", "value": "bare"}],
                               headers=PROJECT_A)
    assert reply.code == 200
    held.release()
    image = show(world, image_id)
    assert image["status"] == "queued" and world.blobs.blobs == {}
    [task] = tasks_of(world, image_id)
    assert task["status"] == "failure" and "formats" in task["message"]


def test_this_nodes_sweep_leaves_its_running_imports_alone(world: World, clock: Any) -> None:
    held = HeldProducer(b"s" * 100)
    world.fetcher.answers["http://example.org/long"] = held
    image_id = new_image(world)
    assert start_import(world, image_id, {"method": {"name": "web-download",
                                                     "uri": "http://example.org/long"}}
                        ).code == 202
    for _ in range(10):  # twenty minutes of sweeps while it runs
        clock.advance(120)
        fired(world.service.sweep())
    assert show(world, image_id)["status"] == "importing"
    assert tasks_of(world, image_id)[0]["status"] == "processing"
    held.release()
    assert show(world, image_id)["status"] == "active"


def test_finished_tasks_are_purged_once_expired(world: World, clock: Any) -> None:
    done = new_image(world)
    assert stage(world, done, b"d").code == 204
    assert start_import(world, done, {"method": {"name": "glance-direct"}}).code == 202
    held = HeldProducer(b"h" * 10)
    world.fetcher.answers["http://example.org/held"] = held
    running = new_image(world)
    assert start_import(world, running, {"method": {"name": "web-download",
                                                    "uri": "http://example.org/held"}}
                        ).code == 202
    for _ in range(10):  # an orphan round: within the 48 h, nothing goes
        fired(world.service.sweep())
    assert len(tasks_of(world, done)) == 1
    clock.advance(48 * 3600 + 1)
    for _ in range(10):
        fired(world.service.sweep())
    assert tasks_of(world, done) == []  # expired
    assert [t["status"] for t in tasks_of(world, running)] == ["processing"]  # never while live
    held.release()
    assert tasks_of(world, running)[0]["status"] == "success"
