"""In-memory API tests: image data upload and download, ranges, state rules."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client

DATA = os.urandom(300_000)


@pytest.fixture
def queued(client: Client) -> dict:
    return client.create(disk_format="raw", container_format="bare", _headers=PROJECT_A)


def test_upload_sets_hashes_size_and_activates(client: Client, queued: dict) -> None:
    reply = client.upload(queued["id"], DATA, **PROJECT_A)
    assert reply.code == 204 and reply.body == b""
    assert reply.header("Content-Type") is None or "json" not in reply.header("Content-Type")
    image = client.get(f"/v2/images/{queued['id']}", headers=PROJECT_A).json()
    assert image["status"] == "active"
    assert image["size"] == len(DATA) and image["virtual_size"] == len(DATA)
    assert image["checksum"] == hashlib.md5(DATA).hexdigest()
    assert image["os_hash_algo"] == "sha512"
    assert image["os_hash_value"] == hashlib.sha512(DATA).hexdigest()


def test_download_whole(client: Client, queued: dict) -> None:
    client.upload(queued["id"], DATA, **PROJECT_A)
    reply = client.get(f"/v2/images/{queued['id']}/file", headers=PROJECT_A)
    assert reply.code == 200 and reply.body == DATA
    assert reply.header("Content-Type") == "application/octet-stream"
    assert reply.length == len(DATA)
    assert reply.header("Content-MD5") == hashlib.md5(DATA).hexdigest()


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, len(DATA) - 1),
        ("bytes=-50", len(DATA) - 50, len(DATA) - 1),
        ("bytes=299990-400000", 299990, len(DATA) - 1),
    ],
)
def test_download_range(client: Client, queued: dict, header: str, start: int, end: int) -> None:
    client.upload(queued["id"], DATA, **PROJECT_A)
    reply = client.get(f"/v2/images/{queued['id']}/file", headers={"Range": header, **PROJECT_A})
    assert reply.code == 206
    assert reply.body == DATA[start : end + 1]
    assert reply.header("Content-Range") == f"bytes {start}-{end}/{len(DATA)}"
    assert reply.length == end - start + 1
    assert reply.header("Content-MD5") == hashlib.md5(DATA).hexdigest()


@pytest.mark.parametrize(
    "header, code",
    [
        ("bytes=0-1,5-6", 400),
        (f"bytes={len(DATA)}-", 416),
        ("bytes=10-5", 416),
        ("pages=1-2", 416),
        ("bytes=x-y", 416),
        ("bytes=-0", 416),
    ],
)
def test_download_bad_ranges(client: Client, queued: dict, header: str, code: int) -> None:
    client.upload(queued["id"], DATA, **PROJECT_A)
    reply = client.get(f"/v2/images/{queued['id']}/file", headers={"Range": header, **PROJECT_A})
    assert reply.code == code
    if code == 416:
        assert reply.header("Content-Range") == f"bytes */{len(DATA)}"


def test_legacy_content_range_request_header(client: Client, queued: dict) -> None:
    client.upload(queued["id"], DATA, **PROJECT_A)
    reply = client.get(f"/v2/images/{queued['id']}/file",
                       headers={"Content-Range": "bytes 5-9/*", **PROJECT_A})
    assert reply.code == 206 and reply.body == DATA[5:10]


def test_legacy_content_range_past_the_end_is_416_not_clamped(client: Client,
                                                              queued: dict) -> None:
    client.upload(queued["id"], DATA, **PROJECT_A)
    past = f"bytes 3-{len(DATA) + 1}/{len(DATA)}"
    reply = client.get(f"/v2/images/{queued['id']}/file",
                       headers={"Content-Range": past, **PROJECT_A})
    assert reply.code == 416 and reply.header("Content-Range") == f"bytes */{len(DATA)}"
    # The same range as a Range header is clamped (RFC 9110), as Glance does too.
    clamped = client.get(f"/v2/images/{queued['id']}/file",
                         headers={"Range": f"bytes=3-{len(DATA) + 1}", **PROJECT_A})
    assert clamped.code == 206 and clamped.body == DATA[3:]


def test_download_without_data_is_204(client: Client, queued: dict) -> None:
    reply = client.get(f"/v2/images/{queued['id']}/file", headers=PROJECT_A)
    assert reply.code == 204 and reply.body == b""


def test_download_invisible_or_missing_is_404(client: Client, queued: dict) -> None:
    assert client.get(f"/v2/images/{queued['id']}/file", headers=PROJECT_B).code == 404
    assert client.get(f"/v2/images/{uuid.uuid4()}/file").code == 404


def test_upload_requires_octet_stream(client: Client, queued: dict) -> None:
    for content_type in ("application/json", None):
        headers = dict(PROJECT_A)
        if content_type:
            headers["Content-Type"] = content_type
        reply = client.put(f"/v2/images/{queued['id']}/file", data=DATA, headers=headers)
        assert reply.code == 415
    assert client.get(f"/v2/images/{queued['id']}", headers=PROJECT_A).json()["status"] == "queued"


def test_upload_to_active_image_conflicts(client: Client, queued: dict, service) -> None:
    client.upload(queued["id"], DATA, **PROJECT_A)
    reply = client.upload(queued["id"], b"other", **PROJECT_A)
    assert reply.code == 409
    assert client.get(f"/v2/images/{queued['id']}/file", headers=PROJECT_A).body == DATA
    assert len(service.blobs.blobs) == 1


def test_upload_needs_formats(client: Client, service) -> None:
    image = client.create(_headers=PROJECT_A)
    reply = client.upload(image["id"], DATA, **PROJECT_A)
    assert reply.code == 400 and b"disk_format, container_format must be set" in reply.body
    assert client.get(f"/v2/images/{image['id']}", headers=PROJECT_A).json()["status"] == "queued"
    assert service.blobs.blobs == {}


def test_upload_over_cap_is_413_and_restores_queued(client: Client, queued: dict,
                                                    service) -> None:
    big = b"\0" * (service.limits.image_size_cap + 1)
    reply = client.upload(queued["id"], big, **PROJECT_A)
    assert reply.code == 413
    image = client.get(f"/v2/images/{queued['id']}", headers=PROJECT_A).json()
    assert image["status"] == "queued" and image["size"] is None
    assert service.blobs.blobs == {}
    # the declared size alone is enough to refuse
    reply = client.upload(queued["id"], b"small",
                          **{"x-openstack-image-size": str(2**50), **PROJECT_A})
    assert reply.code == 413


def test_upload_size_mismatch_is_400(client: Client, queued: dict, service) -> None:
    reply = client.upload(queued["id"], DATA, **{"x-openstack-image-size": "7", **PROJECT_A})
    assert reply.code == 400
    image = client.get(f"/v2/images/{queued['id']}", headers=PROJECT_A).json()
    assert image["status"] == "queued" and image["checksum"] is None
    assert service.blobs.blobs == {}
    assert client.upload(queued["id"], DATA, **{"x-openstack-image-size": "x"}).code == 400


def test_upload_policy(client: Client, queued: dict) -> None:
    assert client.upload(queued["id"], DATA, **PROJECT_B).code == 404
    public = client.create(visibility="public", disk_format="raw", container_format="bare",
                           _headers=ADMIN)
    assert client.upload(public["id"], DATA, **PROJECT_B).code == 403
    assert client.upload(str(uuid.uuid4()), DATA).code == 404


def test_empty_upload_is_an_empty_active_image(client: Client, queued: dict) -> None:
    assert client.upload(queued["id"], b"", **PROJECT_A).code == 204
    image = client.get(f"/v2/images/{queued['id']}", headers=PROJECT_A).json()
    assert image["status"] == "active" and image["size"] == 0
    assert image["checksum"] == hashlib.md5(b"").hexdigest()
    reply = client.get(f"/v2/images/{queued['id']}/file", headers=PROJECT_A)
    assert reply.code == 200 and reply.body == b""
    assert client.get(f"/v2/images/{queued['id']}/file",
                      headers={"Range": "bytes=0-0", **PROJECT_A}).code == 416
