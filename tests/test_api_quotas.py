"""Per-project quotas (storage, image count, uploads in progress) and ``/v2/info/usage``."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from imaged.api import APIConfig, routes
from imaged.context import RequestContext
from imaged.errors import TooLarge
from imaged.model import ContainerFormat, CreateImageRequest, DiskFormat, Status
from imaged.service import Limits
from imaged.testing import producer_of

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client, fired

KIB = 1024
READER_A = {"X-Project-Id": "project-a", "X-User-Id": "rita", "X-Roles": "reader"}


def client_with(services: Any, **limits: Any) -> tuple[Client, Any]:
    service = services(limits=Limits(**limits))
    api = routes(APIConfig(image_service=service, limits=service.limits))
    return Client(api.resource()), service


def raw_image(client: Client, headers: dict[str, str]) -> str:
    image = client.create(disk_format="raw", container_format="bare", _headers=headers)
    return str(image["id"])


def status_of(client: Client, image_id: str) -> str:
    return str(client.get(f"/v2/images/{image_id}", headers=ADMIN).json()["status"])


def usage(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    reply = client.get("/v2/info/usage", headers=headers)
    assert reply.code == 200, reply.body
    return dict(reply.json()["usage"])


def test_storage_quota_counts_a_projects_bytes(services: Any) -> None:
    client, _ = client_with(services, user_storage_quota=10 * KIB)
    first = raw_image(client, PROJECT_A)
    assert client.upload(first, b"a" * 6 * KIB, **PROJECT_A).code == 204

    second = raw_image(client, PROJECT_A)
    reply = client.upload(second, b"b" * 6 * KIB, **PROJECT_A)
    assert reply.code == 413
    message = reply.body.decode()
    assert "exceeds the quota" in message and "4096 bytes remaining" in message
    assert status_of(client, second) == "queued"
    # What fits still fits; other projects have their own quota.
    assert client.upload(second, b"c" * 4 * KIB, **PROJECT_A).code == 204
    other = raw_image(client, PROJECT_B)
    assert client.upload(other, b"d" * 9 * KIB, **PROJECT_B).code == 204

    # Full: even an upload of unknown size is refused before reading it.
    third = raw_image(client, PROJECT_A)
    assert client.upload(third, b"e", **PROJECT_A).code == 413
    # Deleting frees the space.
    assert client.delete(f"/v2/images/{first}", headers=PROJECT_A).code == 204
    assert client.upload(third, b"e" * 6 * KIB, **PROJECT_A).code == 204


def test_storage_quota_caps_a_stream_of_unknown_length(services: Any) -> None:
    service = services(limits=Limits(user_storage_quota=8 * KIB))
    context = RequestContext.from_roles("project-a", "alice", frozenset({"member"}))
    image = fired(service.create(context, CreateImageRequest(
        disk_format=DiskFormat.RAW, container_format=ContainerFormat.BARE)))
    failures: list[Any] = []
    service.upload(context, image.id, producer_of(b"x" * 20 * KIB, chunk=KIB), None).addErrback(
        failures.append)
    assert failures and failures[0].check(TooLarge)
    assert "8192 bytes remaining" in failures[0].value.message
    after = fired(service.get(context, image.id))
    assert after.status is Status.QUEUED and after.size is None
    assert fired(service.usage(context)).usage.size_total == 0


def test_image_count_quota_on_create(services: Any) -> None:
    client, _ = client_with(services, image_count_total=2)
    ids = [raw_image(client, PROJECT_A) for _ in range(2)]
    reply = client.post("/v2/images", json={"name": "third"}, headers=PROJECT_A)
    assert reply.code == 413 and "image_count_total" in reply.body.decode()
    assert len(client.get("/v2/images", headers=PROJECT_A).json()["images"]) == 2
    raw_image(client, PROJECT_B)
    assert client.delete(f"/v2/images/{ids[0]}", headers=PROJECT_A).code == 204
    raw_image(client, PROJECT_A)


def test_uploads_in_progress_quota(services: Any) -> None:
    service = services(limits=Limits(image_count_uploading=1))
    context = RequestContext.from_roles("project-a", "alice", frozenset({"member"}))
    first, second = (
        fired(service.create(context, CreateImageRequest(
            disk_format=DiskFormat.RAW, container_format=ContainerFormat.BARE)))
        for _ in range(2)
    )
    never_ending = _StalledProducer()
    running = service.upload(context, first.id, never_ending, None)
    assert fired(service.get(context, first.id)).status is Status.SAVING
    failures: list[Any] = []
    service.upload(context, second.id, producer_of(b"data"), 4).addErrback(failures.append)
    assert failures and failures[0].check(TooLarge)
    assert "image_count_uploading" in failures[0].value.message
    assert fired(service.get(context, second.id)).status is Status.QUEUED
    never_ending.finish()
    fired(running)
    fired(service.upload(context, second.id, producer_of(b"data"), 4))


class _StalledProducer:
    """A body that arrives only when the test says so."""

    length = -1

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()
        self.consumer: Any = None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        return self.done

    def finish(self) -> None:
        self.consumer.write(b"late bytes")
        self.done.callback(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def test_usage_reports_the_callers_project(services: Any) -> None:
    client, _ = client_with(services, user_storage_quota=3 * 1024 * KIB, image_count_total=10)
    image = raw_image(client, PROJECT_A)
    assert client.upload(image, b"z" * 2 * 1024 * KIB, **PROJECT_A).code == 204
    raw_image(client, PROJECT_A)
    raw_image(client, PROJECT_B)
    expected = {
        "image_size_total": {"limit": 3, "usage": 2},
        "image_stage_total": {"limit": 3, "usage": 0},
        "image_count_total": {"limit": 10, "usage": 2},
        "image_count_uploading": {"limit": -1, "usage": 0},
    }
    assert usage(client, PROJECT_A) == expected
    assert usage(client, READER_A) == expected  # readers of the project may look
    assert usage(client, PROJECT_B)["image_count_total"] == {"limit": 10, "usage": 1}


def test_usage_without_quotas_is_unlimited(services: Any) -> None:
    client, _ = client_with(services)
    raw_image(client, PROJECT_A)
    assert usage(client, PROJECT_A) == {
        "image_size_total": {"limit": -1, "usage": 0},
        "image_stage_total": {"limit": -1, "usage": 0},
        "image_count_total": {"limit": -1, "usage": 1},
        "image_count_uploading": {"limit": -1, "usage": 0},
    }


@pytest.mark.parametrize("path, code", [("/v2/info/import", 200), ("/v2/info/stores", 404),
                                        ("/v2/info/stores/detail", 404)])
def test_other_info_endpoints(path: str, code: int, services: Any) -> None:
    client, _ = client_with(services)
    reply = client.get(path, headers={**PROJECT_A, "Accept": "application/json"})
    assert reply.code == code
    if code == 200:
        assert reply.json()["import-methods"]["value"] == ["glance-direct"]  # no fetcher
    else:
        assert "Multi backend is not supported" in reply.body.decode()
