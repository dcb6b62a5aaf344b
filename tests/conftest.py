"""Shared fixtures: an in-memory imaged API and a synchronous HTTP client for it."""

from __future__ import annotations

import json as jsonlib
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imaged.api import APIConfig, Limits, routes
from imaged.testing import memory_image_service


def fired(d: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (raising its failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@attrs.frozen
class Reply:
    code: int
    headers: Any
    body: bytes
    length: Any = None  # Twisted's client moves Content-Length out of the headers

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[-1] if values else None

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class Client:
    """Drives a resource in memory with treq's StubTreq; every call returns a ``Reply``."""

    def __init__(self, resource: Any) -> None:
        self.stub = StubTreq(resource)

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if json is not None:
            data = jsonlib.dumps(json).encode()
        d = self.stub.request(
            method, "http://imaged.test:9292" + path, data=data, headers=hdrs
        )
        self.stub.flush()
        response = fired(d)
        body_d = self.stub.content(response)
        self.stub.flush()
        return Reply(response.code, response.headers, fired(body_d), response.length)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Reply:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def patch(self, path: str, ops: Any, media: str = "v2.1", **kw: Any) -> Reply:
        headers = {"Content-Type": f"application/openstack-images-{media}-json-patch"}
        headers.update(kw.pop("headers", {}))
        return self.request("PATCH", path, json=ops, headers=headers, **kw)

    # conveniences

    def create(self, **attributes: Any) -> dict[str, Any]:
        reply = self.post("/v2/images", json=attributes, headers=attributes.pop("_headers", {}))
        assert reply.code == 201, reply.body
        return reply.json()

    def upload(self, image_id: str, data: bytes, **headers: str) -> Reply:
        hdrs = {"Content-Type": "application/octet-stream", **headers}
        return self.put(f"/v2/images/{image_id}/file", data=data, headers=hdrs)


PROJECT_A = {"X-Project-Id": "project-a", "X-User-Id": "alice", "X-Roles": "member,reader"}
PROJECT_B = {"X-Project-Id": "project-b", "X-User-Id": "bob", "X-Roles": "member"}
ADMIN = {"X-Project-Id": "admin-project", "X-User-Id": "root", "X-Roles": "admin"}


@pytest.fixture
def service() -> Any:
    return memory_image_service(limits=Limits(image_size_cap=10 * 1024 * 1024))


@pytest.fixture
def client(service: Any) -> Client:
    return Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
