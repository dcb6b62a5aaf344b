"""
Log events carry the request id: from the web layer into the service, the stores and their
threads, including uploads whose work starts before the request is routed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from imaged.api import (
    APIConfig,
    ContainerFormat,
    CreateImageRequest,
    DiskFormat,
    RequestContext,
    routes,
)
from imaged.logcontext import REQUEST_ID, Logger, run_for_request
from imaged.testing import MemoryBlobStore, memory_image_service
from imaged.threads import ThreadRunner
from imaged.web.site import make_site

from .conftest import Client, fired
from .test_routes import OWNER, Wire, status_and_headers


def events_with(events: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [e for e in events if text in (e.get("log_format") or "")]


def test_service_events_carry_the_callers_request_id(services: Any) -> None:
    client = Client(routes(APIConfig(image_service=services())).resource())
    with capturedLogs() as events:
        reply = client.post("/v2/images", json={"name": "x"},
                            headers={**OWNER, "X-Openstack-Request-ID": "req-create-1"})
    assert reply.code == 201
    [created] = events_with(events, "created image")
    assert created["request_id"] == "req-create-1"
    assert created["image_id"] == reply.json()["id"]
    # Outside a request nothing is bound: no stale id leaks into later events.
    assert REQUEST_ID.get() is None


def test_generated_ids_match_the_response_header(services: Any) -> None:
    client = Client(routes(APIConfig(image_service=services())).resource())
    with capturedLogs() as events:
        reply = client.post("/v2/images", json={"name": "x"}, headers=OWNER)
    [created] = events_with(events, "created image")
    assert created["request_id"] == reply.header("x-openstack-request-id")
    assert created["request_id"].startswith("req-")


def test_streamed_uploads_carry_the_request_id_from_their_first_byte(clock: Any) -> None:
    """The upload starts when its headers arrive, before twisted.web routes the request."""
    service = memory_image_service(blobs=MemoryBlobStore(), clock=clock)
    api = routes(APIConfig(image_service=service))
    wire = Wire(make_site(api.resource(), body_router=api.bodies))
    body = json.dumps({"disk_format": "raw", "container_format": "bare"}).encode()
    code, _, answer = status_and_headers(wire.send("POST", "/v2/images", OWNER, body))
    assert code == 201
    image_id = json.loads(answer)["id"]
    headers = {**OWNER, "Content-Type": "application/octet-stream",
               "X-Openstack-Request-ID": "upload-7"}
    with capturedLogs() as events:
        raw = wire.send("PUT", f"/v2/images/{image_id}/file", headers, b"x" * 4096)
    code, answer_headers, _ = status_and_headers(raw)
    assert code == 204 and answer_headers["x-openstack-request-id"] == "req-upload-7"
    for text in ("receiving data", "is active"):
        [event] = events_with(events, text)
        assert event["request_id"] == "req-upload-7", text


@pytest_twisted.ensureDeferred
async def test_worker_threads_log_with_the_request_id_that_sent_them() -> None:
    runner = ThreadRunner(reactor, 1, "imaged-test")
    log = Logger(namespace="imaged.test")
    try:
        with capturedLogs() as events:
            await run_for_request("req-thread", lambda: runner.run(log.info, "in the thread"))
            await runner.run(log.info, "no request")
    finally:
        runner.stop()
    assert [e.get("request_id") for e in events_with(events, "thread")] == ["req-thread"]
    assert [e.get("request_id") for e in events_with(events, "no request")] == [None]


def test_an_upload_keeps_its_request_id_while_identity_is_checked_elsewhere(clock: Any) -> None:
    """With an identity that arrives later (Keystone's answer), the upload that goes on once
    it has arrived still logs with the request's id."""
    pending: list[Deferred[RequestContext]] = []

    class Later:
        def context(self, request: Any) -> Deferred[RequestContext]:
            pending.append(Deferred())
            return pending[-1]

    service = memory_image_service(blobs=MemoryBlobStore(), clock=clock)
    owner = RequestContext.from_roles("p1", "u1", frozenset({"member"}))
    image = fired(service.create(owner, CreateImageRequest(
        disk_format=DiskFormat.RAW, container_format=ContainerFormat.BARE)))
    api = routes(APIConfig(image_service=service, auth=Later()))
    wire = Wire(make_site(api.resource(), body_router=api.bodies))
    headers = {"Content-Type": "application/octet-stream", "X-Openstack-Request-ID": "req-late"}
    with capturedLogs() as events:
        raw = wire.send("PUT", f"/v2/images/{image.id}/file", headers, b"y" * 4096)
        assert raw == b"" and len(pending) == 1  # the upload waits for its identity
        pending[0].callback(owner)
    assert fired(service.get(owner, image.id)).size == 4096
    [received] = events_with(events, "receiving data")
    assert received["request_id"] == "req-late"


def test_failures_are_logged_with_the_request_id(clock: Any) -> None:
    """Klein renders a failure that comes later (the store answered after the request was
    routed) outside the request's context; what it logs still carries the request's id."""
    from imaged.errors import StoreFailure

    service = memory_image_service(blobs=MemoryBlobStore(), clock=clock)
    wire = Wire(make_site(routes(APIConfig(image_service=service)).resource()))
    owner = RequestContext.from_roles("p1", "u1", frozenset({"member"}))
    image = fired(service.create(owner, CreateImageRequest(name="x")))
    answer: Deferred[Any] = Deferred()
    service.metadata.get = lambda _id: answer  # type: ignore[method-assign]
    with capturedLogs() as events:
        sent = wire.send("GET", f"/v2/images/{image.id}",
                         {**OWNER, "X-Openstack-Request-ID": "req-failing"}, b"")
        assert sent == b""  # waiting for the store
        answer.errback(StoreFailure("the store is down"))
    [failed] = events_with(events, "request failed")
    assert failed["request_id"] == "req-failing"
