"""Input no database can store is a 400 or 404 on SQLite and PostgreSQL alike; nothing changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import LogEvent, globalLogPublisher

from .conftest import ADMIN, PROJECT_A, Client

RAW = {"disk_format": "raw", "container_format": "bare"}


def snapshot(client: Client) -> list[Any]:
    """Everything stored that a request could change: every image (as admin), with members."""
    reply = client.get("/v2/images?limit=1000&member_status=all&os_hidden=false", headers=ADMIN)
    assert reply.code == 200
    hidden = client.get("/v2/images?limit=1000&member_status=all&os_hidden=true", headers=ADMIN)
    images = sorted(reply.json()["images"] + hidden.json()["images"], key=lambda i: i["id"])
    state: list[Any] = []
    for image in images:
        members = client.get(f"/v2/images/{image['id']}/members", headers=ADMIN)
        state.append((image, members.json() if members.code == 200 else members.code))
    return state


@pytest.fixture
def world(client: Client) -> dict[str, Any]:
    """A queued image, an active one, and a shared one with a member."""
    queued = client.create(name="queued", **RAW, _headers=PROJECT_A)
    active = client.create(name="active", **RAW, _headers=PROJECT_A)
    assert client.upload(active["id"], b"data" * 100, **PROJECT_A).code == 204
    shared = client.create(name="shared", visibility="shared", **RAW, _headers=PROJECT_A)
    assert client.post(f"/v2/images/{shared['id']}/members", json={"member": "project-b"},
                       headers=PROJECT_A).code == 200
    return {"queued": queued["id"], "active": active["id"], "shared": shared["id"]}


@pytest.fixture
def failures() -> Iterator[list[LogEvent]]:
    """Events logged with a traceback while the test runs."""
    caught: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if "log_failure" in event or event.get("isError"):  # legacy log.err too
            caught.append(event)

    globalLogPublisher.addObserver(observe)
    yield caught
    globalLogPublisher.removeObserver(observe)


def refused(client: Client, expected: int | tuple[int, ...], method: str, path: str,
            body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    """Send a request that must be refused with ``expected`` and change nothing."""
    before = snapshot(client)
    reply = client.request(method, path, data=body,
                           headers={**PROJECT_A, "Accept": "application/json", **(headers or {})})
    codes = expected if isinstance(expected, tuple) else (expected,)
    assert reply.code in codes, (method, path, reply.code, reply.body[:300])
    assert snapshot(client) == before
    return reply.body


PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
SURROGATE = '"\\ud800"'  # JSON's escape of a lone surrogate: valid JSON, not encodable UTF-8


def test_lone_surrogates_are_a_400(client: Client, world: dict[str, Any],
                                   failures: list[LogEvent]) -> None:
    image = world["queued"]
    cases = [
        ("POST", "/v2/images", f'{{"name": {SURROGATE}}}', {}),
        ("POST", "/v2/images", f'{{"name": "t", "tags": [{SURROGATE}]}}', {}),
        ("POST", "/v2/images", f'{{"name": "t", "prop": {SURROGATE}}}', {}),
        ("POST", "/v2/images", f'{{"name": "t", {SURROGATE}: "v"}}', {}),
        ("POST", f"/v2/images/{world['shared']}/members", f'{{"member": {SURROGATE}}}', {}),
        ("PATCH", f"/v2/images/{image}",
         f'[{{"op": "replace", "path": "/name", "value": {SURROGATE}}}]', PATCH),
        ("PATCH", f"/v2/images/{image}",
         '[{"op": "add", "path": "/\\ud800", "value": "v"}]', PATCH),
        ("PATCH", f"/v2/images/{image}",
         f'[{{"op": "add", "path": "/tags/-", "value": {SURROGATE}}}]', PATCH),
    ]
    for method, path, body, headers in cases:
        message = refused(client, 400, method, path, body.encode(), headers)
        assert b"surrogate" in message, message
    assert failures == []


def test_nul_characters_are_refused(client: Client, world: dict[str, Any],
                                    failures: list[LogEvent]) -> None:
    image = world["queued"]
    for method, path, body, headers in [
        ("POST", "/v2/images", '{"name": "a\\u0000b"}', {}),
        ("POST", "/v2/images", '{"name": "t", "tags": ["a\\u0000"]}', {}),
        ("POST", "/v2/images", '{"name": "t", "p\\u0000": "v"}', {}),
        ("POST", f"/v2/images/{world['shared']}/members", '{"member": "x\\u0000"}', {}),
        ("PATCH", f"/v2/images/{image}",
         '[{"op": "add", "path": "/os_distro", "value": "\\u0000"}]', PATCH),
    ]:
        message = refused(client, 400, method, path, body.encode(), headers)
        assert b"NUL" in message, message
    # In the path: no route matches a segment with a NUL.
    for method, path in [("GET", "/v2/images/%00"), ("PUT", f"/v2/images/{image}/tags/a%00b"),
                         ("DELETE", f"/v2/images/{image}/tags/%00"),
                         ("GET", f"/v2/images/{world['shared']}/members/%00"),
                         ("DELETE", "/v2/images/abc%00")]:
        refused(client, (404, 405), method, path)
    # In a filter.
    for query in ("name=%00", "tag=a%00", "os_distro=%00", "owner=%00", "id=in:a,%00",
                  "%00=x", "marker=%00"):
        message = refused(client, 400, "GET", f"/v2/images?{query}")
        assert b"NUL" in message, (query, message)
    assert failures == []


@pytest.mark.parametrize("query", [
    "size_min=99999999999999999999",
    "size_max=9223372036854775808",
    "min_ram=2147483648",
    "min_disk=99999999999",
    "created_at=gt:9999-12-31T23:59:59-01:00",
    "updated_at=lt:0001-01-01T00:00:00%2B01:00",
    "limit=" + "9" * 5000,
])
def test_filters_outside_what_columns_hold_are_a_400(client: Client, world: dict[str, Any],
                                                    query: str,
                                                    failures: list[LogEvent]) -> None:
    refused(client, 400, "GET", f"/v2/images?{query}")
    assert failures == []


def test_filters_at_the_columns_limits_are_fine(client: Client, world: dict[str, Any]) -> None:
    for query in ("size_min=9223372036854775807", "min_ram=2147483647",
                  "created_at=lt:9999-12-31T23:59:59Z"):
        reply = client.get(f"/v2/images?{query}", headers=PROJECT_A)
        assert reply.code == 200, (query, reply.body)


@pytest.mark.parametrize("depth", [33, 1000, 50_000])
def test_deep_nesting_is_a_400(client: Client, world: dict[str, Any], depth: int,
                               failures: list[LogEvent]) -> None:
    nested = "[" * depth + "]" * depth
    message = refused(client, 400, "POST", "/v2/images",
                      f'{{"name": "n", "x": {nested}}}'.encode())
    assert b"nested deeper" in message or b"does not match schema" in message
    refused(client, 400, "PATCH", f"/v2/images/{world['queued']}",
            f'[{{"op": "add", "path": "/x", "value": {nested}}}]'.encode(), PATCH)
    deep_object = '{"a":' * depth + "1" + "}" * depth
    refused(client, 400, "POST", "/v2/images", deep_object.encode())
    assert failures == []


def test_property_values_are_bounded(client: Client, world: dict[str, Any]) -> None:
    big = "v" * 65_536
    message = refused(client, 400, "POST", "/v2/images",
                      json.dumps({"name": "n", "note": big}).encode())
    assert b"longer than 65535 bytes" in message
    refused(client, 400, "PATCH", f"/v2/images/{world['queued']}",
            json.dumps([{"op": "add", "path": "/note", "value": big}]).encode(), PATCH)
    # Multi-byte characters count as their UTF-8 bytes.
    refused(client, 400, "POST", "/v2/images",
            json.dumps({"name": "n", "note": "é" * 32_768}).encode())
    fits = client.post("/v2/images", json={"name": "n", "note": "v" * 65_535}, headers=PROJECT_A)
    assert fits.code == 201
    assert client.get(f"/v2/images/{fits.json()['id']}",
                      headers=PROJECT_A).json()["note"] == "v" * 65_535


def test_names_tags_keys_and_members_are_255_at_most(client: Client,
                                                     world: dict[str, Any]) -> None:
    long = "x" * 256
    refused(client, 400, "POST", "/v2/images", json.dumps({"name": long}).encode())
    refused(client, 400, "POST", "/v2/images", json.dumps({"tags": [long]}).encode())
    refused(client, 400, "POST", "/v2/images", json.dumps({long: "v"}).encode())
    refused(client, 400, "PUT", f"/v2/images/{world['queued']}/tags/{long}")
    refused(client, 400, "POST", f"/v2/images/{world['shared']}/members",
            json.dumps({"member": long}).encode())
    refused(client, 400, "PATCH", f"/v2/images/{world['queued']}",
            json.dumps([{"op": "add", "path": f"/{long}", "value": "v"}]).encode(), PATCH)


def test_min_ram_and_min_disk_fit_their_columns(client: Client, world: dict[str, Any]) -> None:
    for key in ("min_ram", "min_disk"):
        refused(client, 400, "POST", "/v2/images", json.dumps({key: 2**31}).encode())
        refused(client, 400, "PATCH", f"/v2/images/{world['queued']}",
                json.dumps([{"op": "replace", "path": f"/{key}", "value": 2**63}]).encode(),
                PATCH)


@pytest.mark.parametrize("header", [
    b"QFI\xfb", b"QFI\xfb\x00\x00\x00\x03", b"conectix", b"conectix" + b"\x00" * 20,
    b"KDMV", b"KDMV\x01\x00\x00\x00" + b"\xff" * 30, b"vhdxfile", b"vhdxfile" + b"\x00" * 100,
])
def test_truncated_format_headers_leave_nothing_behind(client: Client, header: bytes,
                                                       failures: list[LogEvent]) -> None:
    for disk_format in ("qcow2", "vhd", "vmdk", "vhdx", "raw"):
        image = client.create(name="t", disk_format=disk_format, container_format="bare",
                              _headers=PROJECT_A)
        reply = client.upload(image["id"], header, **PROJECT_A)
        assert reply.code in (204, 400, 415), (disk_format, header, reply.code, reply.body)
        status = client.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()["status"]
        if reply.code == 204:
            assert status == "active"
            continue
        # Refused: back to queued with nothing kept, so a retry with good data works.
        assert status == "queued", (disk_format, header)
        again = client.upload(image["id"], b"\x00" * 1024 if disk_format == "raw" else b"",
                              **PROJECT_A)
        assert again.code in (204, 400, 415)
    assert failures == []


@pytest.mark.parametrize("path", ["/v2/images/%ff%fe", "/v2/images/%ED%A0%80", "/%ff"])
def test_non_utf8_paths_are_a_400_without_a_traceback(client: Client, path: str,
                                                      failures: list[LogEvent]) -> None:
    for method in ("GET", "PATCH", "DELETE", "PUT"):
        reply = client.request(method, path, headers={**PROJECT_A, "Accept": "application/json"})
        assert reply.code == 400, (method, path, reply.body)
        assert reply.json()["message"].startswith("The URL is not valid UTF-8.")
    assert failures == []


def test_a_refused_upload_leaves_the_image_as_it_was(client: Client) -> None:
    image = client.create(name="q", disk_format="qcow2", container_format="bare",
                          _headers=PROJECT_A)
    assert client.upload(image["id"], b"not a qcow2 at all", **PROJECT_A).code == 415
    after = client.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()
    assert after == image
