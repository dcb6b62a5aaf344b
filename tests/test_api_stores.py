"""
Multi-store in memory: named stores (``/v2/info/stores``), uploads and imports into chosen
stores (one read, several writers), copy-image, reading the best copy with fallback, deleting
one copy or all of them, and what a store that refuses a delete (RBD with clones) changes:
nothing.  A single-store site answers as Glance without ``enabled_backends``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from imaged.api import APIConfig, ImageService, Limits, routes
from imaged.stores import Stores
from imaged.testing import MemoryBlobStore, memory_stores

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client, fired
from .test_api_import import FakeFetcher
from .test_contract_image_service import HeldProducer

DATA = b"multi-store bytes " * 4000


@attrs.define
class Site:
    client: Client
    service: ImageService
    stores: Stores

    def blobs(self, name: str) -> MemoryBlobStore:
        blobs = self.stores.named(name).blobs
        assert isinstance(blobs, MemoryBlobStore)
        return blobs

    def held(self) -> dict[str, list[bytes]]:
        """What each store holds."""
        return {store.name: sorted(self.blobs(store.name).blobs.values()) for store in self.stores}

    def show(self, image_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/v2/images/{image_id}", headers=ADMIN)
        assert reply.code == 200, reply.body
        document: dict[str, Any] = reply.json()
        return document

    def image(self, **attributes: Any) -> str:
        attributes = {"disk_format": "raw", "container_format": "bare", **attributes}
        return str(self.client.create(_headers=PROJECT_A, **attributes)["id"])

    def active(self, data: bytes = DATA, store: str | None = None) -> str:
        image_id = self.image()
        extra = {"X-Image-Meta-Store": store} if store else {}
        assert self.client.upload(image_id, data, **PROJECT_A, **extra).code == 204
        return image_id

    def do_import(self, image_id: str, body: Any, headers: dict[str, str] = PROJECT_A) -> Any:
        return self.client.post(f"/v2/images/{image_id}/import", json=body, headers=headers)

    def tasks(self, image_id: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.client.get(
            f"/v2/images/{image_id}/tasks", headers=ADMIN
        ).json()["tasks"]
        return tasks


def make_site(services: Callable[..., ImageService], stores: Stores, **kwargs: Any) -> Site:
    service = services(
        limits=Limits(image_size_cap=1024 * 1024), blobs=stores, fetcher=kwargs.pop(
            "fetcher", FakeFetcher()), **kwargs,
    )
    config = APIConfig(image_service=service, limits=service.limits, show_locations=True)
    return Site(Client(routes(config).resource()), service, stores)


@pytest.fixture
def site(services: Callable[..., ImageService]) -> Site:
    return make_site(services, memory_stores("fast", "cheap", "far"))


def test_a_single_store_site_has_no_multi_store_api(services: Callable[..., ImageService]) -> None:
    service = services()
    client = Client(routes(APIConfig(image_service=service)).resource())
    assert client.get("/v2/info/stores", headers=PROJECT_A).code == 404
    assert client.get("/v2/info/stores/detail", headers=ADMIN).code == 404
    versions = [v["id"] for v in client.get("/versions").json()["versions"]]
    assert "v2.8" not in versions and "v2.10" not in versions
    image = client.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)
    assert client.upload(image["id"], b"x", **PROJECT_A, **{"X-Image-Meta-Store": "nope"}).code \
        == 204  # ignored, as Glance without enabled_backends
    assert "stores" not in client.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()
    assert client.delete(f"/v2/stores/any/{image['id']}", headers=ADMIN).code == 404
    assert client.get(f"/v2/images/{image['id']}/file?prefer=x", headers=PROJECT_A).code == 400
    methods = client.get("/v2/info/import", headers=PROJECT_A).json()["import-methods"]["value"]
    assert "copy-image" not in methods


def test_discovery_as_glance_answers_it(site: Site) -> None:
    listed = site.client.get("/v2/info/stores", headers=PROJECT_A).json()
    assert listed == {"stores": [
        {"id": "fast", "description": "store fast", "default": "true"},
        {"id": "cheap", "description": "store cheap"},
        {"id": "far", "description": "store far"},
    ]}
    assert site.client.get("/v2/info/stores/detail", headers=PROJECT_A).code == 403
    detail = site.client.get("/v2/info/stores/detail", headers=ADMIN).json()["stores"]
    assert [(s["id"], s["type"], s["weight"]) for s in detail] == [
        ("fast", "memory", 100), ("cheap", "memory", 99), ("far", "memory", 98)]
    versions = [v["id"] for v in site.client.get("/versions").json()["versions"]]
    assert versions[0] == "v2.17" and {"v2.8", "v2.10", "v2.11", "v2.12", "v2.13"} <= set(
        versions)
    assert site.client.get("/v2.10/info/stores", headers=PROJECT_A).code == 200
    reply = site.client.post("/v2/images", json={}, headers=PROJECT_A)
    assert reply.header("OpenStack-image-store-ids") == "fast,cheap,far"
    assert "copy-image" in reply.header("OpenStack-image-import-methods").split(",")


def test_upload_to_a_named_store(site: Site) -> None:
    image_id = site.active(store="cheap")
    shown = site.show(image_id)
    assert shown["stores"] == "cheap"
    [location] = shown["locations"]
    assert location["metadata"] == {"store": "cheap"}
    assert site.held() == {"fast": [], "cheap": [DATA], "far": []}
    default = site.active()
    assert site.show(default)["stores"] == "fast"


def test_an_unknown_store_is_400_and_changes_nothing(site: Site) -> None:
    image_id = site.image()
    before = site.show(image_id)
    reply = site.client.upload(image_id, DATA, **PROJECT_A, **{"X-Image-Meta-Store": "nope"})
    assert reply.code == 400 and b"nope" in reply.body
    assert site.show(image_id) == before
    assert site.held() == {"fast": [], "cheap": [], "far": []}


def test_copy_image_to_more_stores(site: Site) -> None:
    image_id = site.active()
    before = site.show(image_id)
    # Glance's copy_image default: administrators only; the owner gets 403, nothing changes.
    reply = site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]})
    assert reply.code == 403 and site.show(image_id) == before and site.tasks(image_id) == []
    for body, code in [
        ({"method": {"name": "copy-image"}, "stores": ["fast"]}, 400),  # holds it already
        ({"method": {"name": "copy-image"}}, 400),  # the default store, which holds it
        ({"method": {"name": "copy-image"}, "stores": ["nope"]}, 409),
        ({"method": {"name": "copy-image"}, "stores": "far"}, 400),
        ({"method": {"name": "copy-image"}, "stores": [""]}, 400),
        ({"method": {"name": "copy-image"}, "stores": ["far"], "all_stores": True}, 400),
        ({"method": {"name": "copy-image"}, "all_stores": "yes"}, 400),
    ]:
        reply = site.do_import(image_id, body, ADMIN)
        assert reply.code == code, (body, reply.body)
    assert site.show(image_id) == before and site.tasks(image_id) == []
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]},
                          ADMIN).code == 202
    shown = site.show(image_id)
    assert shown["stores"] == "fast,far" and shown["status"] == "active"
    assert shown["checksum"] == before["checksum"] and "os_glance_import_task" not in shown
    assert site.held() == {"fast": [DATA], "cheap": [], "far": [DATA]}
    [task] = site.tasks(image_id)
    assert task["status"] == "success"
    # all_stores copies to the rest; a second one finds nothing left to do (409).
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "all_stores": True},
                          ADMIN).code == 202
    assert site.show(image_id)["stores"] == "fast,far,cheap"
    # Every store holds it: a task with nothing to do, and nothing changes (as Glance).
    before = site.show(image_id)
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "all_stores": True},
                          ADMIN).code == 202
    assert site.tasks(image_id)[-1]["status"] == "success"
    after = site.show(image_id)
    assert after["stores"] == before["stores"] and after["checksum"] == before["checksum"]
    assert "os_glance_import_task" not in after


def test_copy_image_of_an_image_that_is_not_active(site: Site) -> None:
    image_id = site.image()
    reply = site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]},
                           ADMIN)
    assert reply.code == 409 and site.tasks(image_id) == []


def test_a_copy_to_a_failing_store_changes_nothing_but_says_so(site: Site) -> None:
    image_id = site.active()
    site.blobs("far").broken = True
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]},
                          ADMIN).code == 202
    shown = site.show(image_id)
    assert shown["stores"] == "fast" and shown["status"] == "active"
    assert shown["os_glance_failed_import"] == "far" and "os_glance_import_task" not in shown
    [task] = site.tasks(image_id)
    assert task["status"] == "failure" and "far" in task["message"]


def test_copies_to_several_stores_some_may_fail(site: Site) -> None:
    image_id = site.active()
    site.blobs("far").broken = True
    body = {"method": {"name": "copy-image"}, "all_stores": True,
            "all_stores_must_succeed": False}
    assert site.do_import(image_id, body, ADMIN).code == 202
    shown = site.show(image_id)
    assert shown["stores"] == "fast,cheap" and shown["os_glance_failed_import"] == "far"
    assert site.held()["cheap"] == [DATA]


def test_glance_direct_into_several_stores_at_once(site: Site) -> None:
    image_id = site.image()
    stage = site.client.put(f"/v2/images/{image_id}/stage", data=DATA, headers={
        **PROJECT_A, "Content-Type": "application/octet-stream"})
    assert stage.code == 204
    body = {"method": {"name": "glance-direct"}, "stores": ["cheap", "far"]}
    assert site.do_import(image_id, body).code == 202
    shown = site.show(image_id)
    assert shown["status"] == "active" and shown["stores"] == "cheap,far"
    # The staged copy (in the default store) is gone: only the two asked for are kept.
    assert site.held() == {"fast": [], "cheap": [DATA], "far": [DATA]}
    assert shown["os_hash_value"] == hashlib.sha512(DATA).hexdigest()


def test_an_import_whose_every_store_must_succeed_keeps_nothing(site: Site) -> None:
    site.service.imports.fetcher.answers["http://example.org/d"] = DATA  # type: ignore
    image_id = site.image()
    site.blobs("far").broken = True
    body = {"method": {"name": "web-download", "uri": "http://example.org/d"},
            "all_stores": True}
    assert site.do_import(image_id, body).code == 202
    shown = site.show(image_id)
    assert shown["status"] == "queued" and "stores" not in shown
    assert site.held() == {"fast": [], "cheap": [], "far": []}
    [task] = site.tasks(image_id)
    assert task["status"] == "failure"
    # Without the need for all: active in the stores that worked.
    body["all_stores_must_succeed"] = False
    assert site.do_import(image_id, body).code == 202
    shown = site.show(image_id)
    assert shown["status"] == "active" and shown["stores"] == "cheap,fast"
    assert shown["os_glance_failed_import"] == "far"


def test_the_store_header_and_stores_are_exclusive(site: Site) -> None:
    image_id = site.image()
    before = site.show(image_id)
    for stores in (["far"], []):
        reply = site.client.post(f"/v2/images/{image_id}/import", json={
            "method": {"name": "web-download", "uri": "http://example.org/d"},
            "stores": stores}, headers={**PROJECT_A, "X-Image-Meta-Store": "cheap"})
        assert reply.code == 400 and site.show(image_id) == before
    assert site.tasks(image_id) == []
    # The header alone names the one store.
    site.service.imports.fetcher.answers["http://example.org/d"] = DATA  # type: ignore
    reply = site.client.post(f"/v2/images/{image_id}/import", json={
        "method": {"name": "web-download", "uri": "http://example.org/d"}},
        headers={**PROJECT_A, "X-Image-Meta-Store": "cheap"})
    assert reply.code == 202 and site.show(image_id)["stores"] == "cheap"


def test_staged_data_is_no_copy_yet(site: Site) -> None:
    image_id = site.image()
    assert site.client.put(f"/v2/images/{image_id}/stage", data=DATA, headers={
        **PROJECT_A, "Content-Type": "application/octet-stream"}).code == 204
    assert "stores" not in site.show(image_id)


def test_a_lock_whose_task_is_gone_is_taken_over(site: Site) -> None:
    """A copy's process died between locking the image and recording the task's end: the
    lock names a finished (or missing) task, and the next import takes it over."""
    image_id = site.active()

    def dangling(image: Any, _member: Any) -> Any:
        return attrs.evolve(image, properties={
            **image.properties, "os_glance_import_task": "no-such-task"})

    fired(site.service.metadata.modify(image_id, dangling))
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]},
                          ADMIN).code == 202
    shown = site.show(image_id)
    assert shown["stores"] == "fast,far" and "os_glance_import_task" not in shown


def test_rbd_staging_keeps_the_image_name_for_the_result(
    services: Callable[..., ImageService],
) -> None:
    """A store that cannot write over a name it holds (RBD): staged data waits under
    ``<id>.staged``, and the import writes ``<id>`` from it, as glance_store's layout wants,
    then removes the staged copy."""
    site = make_site(services, memory_stores("ceph", "files", rbd=("ceph",)))
    image_id = site.image()
    assert site.client.put(f"/v2/images/{image_id}/stage", data=DATA, headers={
        **PROJECT_A, "Content-Type": "application/octet-stream"}).code == 204
    [staged] = site.blobs("ceph").blobs
    assert f"/{image_id}.staged/" in staged
    assert site.do_import(image_id, {"method": {"name": "glance-direct"}}).code == 202
    shown = site.show(image_id)
    assert shown["status"] == "active" and shown["stores"] == "ceph"
    [final] = site.blobs("ceph").blobs
    assert f"/{image_id}/" in final and site.blobs("ceph").blobs[final] == DATA


def test_download_falls_back_when_the_best_store_fails(site: Site) -> None:
    image_id = site.active()
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "all_stores": True},
                          ADMIN).code == 202
    site.blobs("fast").broken = True
    reply = site.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A)
    assert reply.code == 200 and reply.body == DATA
    reply = site.client.get(f"/v2/images/{image_id}/file?prefer=far", headers=PROJECT_A)
    assert reply.code == 200 and reply.body == DATA
    assert site.client.get(f"/v2/images/{image_id}/file?prefer=nope",
                           headers=PROJECT_A).code == 400
    for name in ("cheap", "far"):
        site.blobs(name).broken = True
    assert site.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).code == 503
    health = site.client.get("/healthcheck", headers={"Accept": "application/json"})
    assert health.code == 503 and b"STORE UNAVAILABLE" in health.body


def test_one_store_down_degrades_the_health_check_without_failing_it(site: Site) -> None:
    site.blobs("far").broken = True
    health = site.client.get("/healthcheck", headers={"Accept": "application/json"})
    assert health.code == 200
    assert health.json()["reasons"] == ["OK", "store far: memory store far is down"]


def test_delete_one_copy(site: Site) -> None:
    image_id = site.active()
    path = f"/v2/stores/fast/{image_id}"
    assert site.client.delete(path, headers=ADMIN).code == 403  # the last copy
    # Glance checks "the last copy" before "not in that store".
    assert site.client.delete(f"/v2/stores/cheap/{image_id}", headers=ADMIN).code == 403
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]},
                          ADMIN).code == 202
    before = site.show(image_id)
    for who, where, code in [
        (PROJECT_A, path, 403),  # an administrator's (delete_image_location)
        (PROJECT_B, path, 404),
        (ADMIN, f"/v2/stores/nope/{image_id}", 409),
        (ADMIN, f"/v2/stores/cheap/{image_id}", 404),  # not there
    ]:
        assert site.client.delete(where, headers=who).code == code, where
    assert site.show(image_id) == before
    assert site.client.delete(path, headers=ADMIN).code == 204
    shown = site.show(image_id)
    assert shown["stores"] == "far" and [loc["metadata"] for loc in shown["locations"]] == [
        {"store": "far"}]
    assert site.held() == {"fast": [], "cheap": [], "far": [DATA]}
    assert site.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body == DATA
    assert site.client.post(f"/v2/images/{image_id}/actions/deactivate",
                            headers=ADMIN).code == 204
    assert site.client.delete(f"/v2/stores/far/{image_id}", headers=ADMIN).code == 409


def test_delete_removes_every_copy(site: Site) -> None:
    image_id = site.active()
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "all_stores": True},
                          ADMIN).code == 202
    assert site.client.delete(f"/v2/images/{image_id}", headers=PROJECT_A).code == 204
    assert site.held() == {"fast": [], "cheap": [], "far": []}


def test_a_store_refusing_the_delete_leaves_everything(
    services: Callable[..., ImageService],
) -> None:
    """An RBD image with clones (Nova's disks): 409 and the image, every copy included, as
    it was; once the clones are gone, the delete goes through."""
    site = make_site(services, memory_stores("files", "ceph", rbd=("ceph",)))
    image_id = site.active()
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["ceph"]},
                          ADMIN).code == 202
    ceph = site.blobs("ceph")
    ceph.in_use = set(ceph.blobs)
    before, held = site.show(image_id), site.held()
    reply = site.client.delete(f"/v2/images/{image_id}", headers=PROJECT_A)
    assert reply.code == 409 and b"in use" in reply.body
    assert site.show(image_id) == before and site.held() == held
    reply = site.client.delete(f"/v2/stores/ceph/{image_id}", headers=ADMIN)
    assert reply.code == 409 and site.show(image_id) == before and site.held() == held
    # The refusal needs the right to delete first: another project learns nothing.
    assert site.client.delete(f"/v2/images/{image_id}", headers=PROJECT_B).code == 404
    ceph.in_use.clear()
    assert site.client.delete(f"/v2/images/{image_id}", headers=PROJECT_A).code == 204
    assert site.held() == {"files": [], "ceph": []}


def test_two_refusing_copies_one_in_use(services: Callable[..., ImageService]) -> None:
    """Two RBD copies, the second with clones: the first goes, the 409 comes, and the
    record lists only what is still there (never a copy without data)."""
    site = make_site(services, memory_stores("ceph1", "ceph2", rbd=("ceph1", "ceph2")))
    image_id = site.active()
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["ceph2"]},
                          ADMIN).code == 202
    ceph2 = site.blobs("ceph2")
    ceph2.in_use = set(ceph2.blobs)
    assert site.client.delete(f"/v2/images/{image_id}", headers=PROJECT_A).code == 409
    shown = site.show(image_id)
    assert shown["status"] == "active" and shown["stores"] == "ceph2"
    assert site.held() == {"ceph1": [], "ceph2": [DATA]}
    assert site.client.get(f"/v2/images/{image_id}/file", headers=PROJECT_A).body == DATA


def test_a_copy_whose_node_died_releases_the_image(
    services: Callable[..., ImageService], clock: Any
) -> None:
    site = make_site(services, memory_stores("fast", "far"))
    image_id = site.active()
    held = HeldProducer(DATA)
    fast = site.blobs("fast")
    original_read = fast.read

    def slow_read(location: str, offset: int = 0, length: Any = None) -> Any:
        return original_read(location, offset, length).addCallback(lambda _: held)

    fast.read = slow_read  # type: ignore[method-assign]
    assert site.do_import(image_id, {"method": {"name": "copy-image"}, "stores": ["far"]},
                          ADMIN).code == 202
    copying = site.show(image_id)
    assert copying["status"] == "active" and copying["os_glance_importing_to_stores"] == "far"
    # What a restart loses: the running copy.
    service = site.service
    service.imports.running.clear()
    service.imports.claims.clear()
    service.uploads.live.clear()
    clock.advance(200)
    fired(service.sweep())
    shown = site.show(image_id)
    assert "os_glance_import_task" not in shown and shown["os_glance_failed_import"] == "far"
    assert shown["stores"] == "fast" and site.held()["far"] == []
    [task] = site.tasks(image_id)
    assert task["status"] == "failure" and "interrupted" in task["message"]
