"""
Real-socket tests: imaged started by twistd (plugin and .tac), driven with curl.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from .daemon import Daemon

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; return (status, headers of the final response, body)."""
    result = subprocess.run(
        ["curl", "-sS", "-D", "-", "--max-time", "60", *args],
        capture_output=True, check=True,
    )
    raw = result.stdout
    # skip interim responses (100 Continue)
    while True:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status != 100:
            break
        raw = rest
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


@pytest.fixture
def daemon(tmp_path: Any) -> Any:
    d = Daemon(str(tmp_path)).start()
    yield d
    d.stop()


def lifecycle(url: str, tmp_path: Any) -> str:
    data = os.urandom(12 * 1024 * 1024 + 3)  # above the 8 MiB high-water mark
    source = tmp_path / "image.raw"
    source.write_bytes(data)

    status, headers, body = curl("-X", "POST", f"{url}/v2/images",
                                 "-H", "Content-Type: application/json",
                                 "-d", json.dumps({"name": "cirros", "disk_format": "raw",
                                                   "container_format": "bare"}))
    assert status == 201, body
    image = json.loads(body)
    assert headers["location"] == f"{url}/v2/images/{image['id']}"
    path = f"{url}/v2/images/{image['id']}"

    status, headers, body = curl("-X", "PUT", f"{path}/file",
                                 "-H", "Content-Type: application/octet-stream",
                                 "--data-binary", f"@{source}")
    assert status == 204 and body == b"", body

    status, _, body = curl(path)
    shown = json.loads(body)
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()

    status, headers, body = curl(f"{path}/file")
    assert status == 200 and body == data
    assert headers["content-md5"] == hashlib.md5(data).hexdigest()
    assert headers["content-length"] == str(len(data))

    status, _, body = curl("-X", "PATCH", path,
                           "-H", "Content-Type: application/openstack-images-v2.1-json-patch",
                           "-d", json.dumps([{"op": "replace", "path": "/name", "value": "new"},
                                             {"op": "add", "path": "/os_distro",
                                              "value": "cirros"}]))
    assert status == 200 and json.loads(body)["name"] == "new"
    return image["id"]


def test_plugin_lifecycle_with_curl(daemon: Daemon, tmp_path: Any) -> None:
    image_id = lifecycle(daemon.url, tmp_path)
    path = f"{daemon.url}/v2/images/{image_id}"
    status, _headers, body = curl("-X", "DELETE", path)
    assert status == 204 and body == b""
    assert curl(path)[0] == 404
    assert os.listdir(tmp_path / "imaged-data" / "images") == [".partial"]


def test_chunked_upload_with_curl(daemon: Daemon, tmp_path: Any) -> None:
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "chunked.raw").write_bytes(data)
    _, _, body = curl("-X", "POST", f"{daemon.url}/v2/images",
                      "-d", '{"disk_format": "raw", "container_format": "bare"}')
    image = json.loads(body)
    status, _, body = curl("-X", "PUT", f"{daemon.url}/v2/images/{image['id']}/file",
                           "-H", "Content-Type: application/octet-stream",
                           "-H", "Transfer-Encoding: chunked",
                           "--data-binary", f"@{tmp_path / 'chunked.raw'}")
    assert status == 204, body
    status, _, body = curl(f"{daemon.url}/v2/images/{image['id']}/file")
    assert body == data
    status, headers, body = curl("-H", "Range: bytes=100-199",
                                 f"{daemon.url}/v2/images/{image['id']}/file")
    assert status == 206 and body == data[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(data)}"


def test_metadata_and_bytes_survive_restart(tmp_path: Any) -> None:
    first = Daemon(str(tmp_path)).start()
    try:
        image_id = lifecycle(first.url, tmp_path)
        before = json.loads(curl(f"{first.url}/v2/images/{image_id}")[2])
    finally:
        # twistd re-raises the signal it stopped on, so a clean SIGTERM exit is -SIGTERM.
        assert first.stop() == -15
        assert "Server Shut Down." in first.log()
    second = Daemon(str(tmp_path)).start()
    try:
        after = json.loads(curl(f"{second.url}/v2/images/{image_id}")[2])
        assert after == before
        data = (tmp_path / "image.raw").read_bytes()
        assert curl(f"{second.url}/v2/images/{image_id}/file")[2] == data
    finally:
        second.stop()


def test_tac_runs_the_same_service(tmp_path: Any) -> None:
    tac = os.path.join(os.path.dirname(os.path.dirname(__file__)), "imaged.tac")
    daemon = Daemon(str(tmp_path), tac=tac, args=["--data-dir", str(tmp_path / "tacdata")])
    daemon.start()
    try:
        status, headers, body = curl(f"{daemon.url}/versions")
        assert status == 200 and json.loads(body)["versions"][0]["id"] == "v2.17"
        assert headers["x-openstack-request-id"].startswith("req-")
        lifecycle(daemon.url, tmp_path)
        assert (tmp_path / "tacdata" / "imaged.sqlite").exists()
        assert "imaged storing metadata in sqlite:///" in daemon.log()
    finally:
        daemon.stop()


def test_tac_reads_the_shipped_config_format(tmp_path: Any) -> None:
    """imaged.tac with a configuration file (IMAGED_CONFIG), as the packaged service runs."""
    repo = os.path.dirname(os.path.dirname(__file__))
    shipped = open(os.path.join(repo, "etc", "imaged.conf")).read()
    config = tmp_path / "imaged.conf"
    config.write_text(shipped + f'\ndata-dir = "{tmp_path / "confdata"}"\n'
                      'image-size-cap = 100\n')
    daemon = Daemon(str(tmp_path), tac=os.path.join(repo, "imaged.tac"),
                    env={"IMAGED_CONFIG": str(config)})
    daemon.start()
    try:
        image = json.loads(curl(f"{daemon.url}/v2/images", "-X", "POST", "-H",
                                "Content-Type: application/json", "-d", "{}")[2])
        status = curl(f"{daemon.url}/v2/images/{image['id']}/file", "-X", "PUT", "-H",
                      "Content-Type: application/octet-stream", "--data-binary", "x" * 101)[0]
        assert status == 413  # the file's cap, not the default 1 TiB
        assert (tmp_path / "confdata" / "imaged.sqlite").exists()
    finally:
        daemon.stop()


def test_identity_mode_is_logged_and_headers_are_believed_from_trusted_networks_only(
    tmp_path: Any,
) -> None:
    """
    The default believes identity headers from this host only; here the operator trusts a
    proxy network that loopback is not in, so curl over loopback plays a client elsewhere.
    The start-up log says what is trusted, and an operator's schema file is served.
    """
    schema = tmp_path / "schema-image.json"
    schema.write_text(json.dumps({"site": {"type": "string", "enum": ["north", "south"]}}))
    daemon = Daemon(str(tmp_path), args=["--trusted-networks", "10.20.0.0/16",
                                         "--schema-image", str(schema)]).start()
    try:
        assert ("imaged identity: 'headers': believes X-Project-Id, X-User-Id and X-Roles as "
                "sent; a request without them acts as an administrator; served to "
                "10.20.0.0/16 only, others get 401") in daemon.log()
        admin = ["-H", "X-Roles: admin", "-H", "X-Project-Id: p1"]
        status, _, body = curl(f"{daemon.url}/v2/images", *admin, "-X", "POST", "-H",
                               "Content-Type: application/json", "-d", '{"name": "x"}')
        assert status == 401 and b"trusted networks" in body
        assert curl(f"{daemon.url}/v2/images", *admin)[0] == 401
        assert curl(f"{daemon.url}/versions")[0] == 200
    finally:
        daemon.stop()
    default = Daemon(str(tmp_path / "default"), args=["--schema-image", str(schema)])
    os.makedirs(default.workdir)
    default.start()
    try:
        assert "served to 127.0.0.0/8, ::1/128 only, others get 401" in default.log()
        status, _, body = curl(f"{default.url}/v2/schemas/image")
        assert status == 200 and json.loads(body)["properties"]["site"]["enum"] == [
            "north", "south"]
    finally:
        default.stop()


def test_bad_options_fail_clearly(tmp_path: Any) -> None:
    from .daemon import TWISTD

    result = subprocess.run([TWISTD, "-n", "--pidfile=", "imaged", "--hash-algo", "nope"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "--hash-algo" in result.stdout + result.stderr


def test_disconnect_mid_upload_leaves_queued_image_and_no_bytes(daemon: Daemon,
                                                                 tmp_path: Any) -> None:
    import socket
    import time
    from urllib.parse import urlparse

    _, _, body = curl("-X", "POST", f"{daemon.url}/v2/images",
                      "-d", '{"disk_format": "raw", "container_format": "bare"}')
    image_id = json.loads(body)["id"]
    address = urlparse(daemon.url)
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(
            f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode()
        )
        for _ in range(160):  # 10 MiB of 64 MiB
            sock.sendall(b"\0" * 65536)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if json.loads(curl(f"{daemon.url}/v2/images/{image_id}")[2])["status"] == "saving":
                break
            time.sleep(0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        image = json.loads(curl(f"{daemon.url}/v2/images/{image_id}")[2])
        if image["status"] == "queued":
            break
        time.sleep(0.05)
    assert image["status"] == "queued" and image["size"] is None
    images = tmp_path / "imaged-data" / "images"
    assert sorted(os.listdir(images)) == [".partial"]
    assert os.listdir(images / ".partial") == []


def test_kill_9_during_upload_then_restart_recovers(tmp_path: Any) -> None:
    """After kill -9 mid-upload: no image stuck in saving, no partial or orphan bytes."""
    import signal
    import socket
    import time
    import uuid as uuidlib
    from urllib.parse import urlparse

    first = Daemon(str(tmp_path)).start()
    _, _, body = curl("-X", "POST", f"{first.url}/v2/images",
                      "-d", '{"disk_format": "raw", "container_format": "bare"}')
    image_id = json.loads(body)["id"]
    address = urlparse(first.url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.sendall(
        f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {256 * 1024 * 1024}\r\n\r\n".encode()
    )
    for _ in range(200):
        sock.sendall(b"\1" * 65536)
    images = tmp_path / "imaged-data" / "images"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not os.listdir(images / ".partial"):
        time.sleep(0.05)
    assert json.loads(curl(f"{first.url}/v2/images/{image_id}")[2])["status"] == "saving"
    assert os.listdir(images / ".partial")  # bytes were being written when we killed it
    first.stop(signal.SIGKILL)
    sock.close()
    # Bytes of an image whose record never learnt of them (crash between rename and commit).
    orphan = images / str(uuidlib.uuid4())
    orphan.write_bytes(b"orphan")

    second = Daemon(str(tmp_path)).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            image = json.loads(curl(f"{second.url}/v2/images/{image_id}")[2])
            if image["status"] == "queued" and not orphan.exists():
                break
            time.sleep(0.05)
        assert image["status"] == "queued" and image["size"] is None
        assert sorted(os.listdir(images)) == [".partial"]
        assert os.listdir(images / ".partial") == []
        assert "was interrupted; it is queued again" in second.log()
        # and the image takes its upload now
        (tmp_path / "retry.raw").write_bytes(b"retry")
        status, _, _ = curl("-X", "PUT", f"{second.url}/v2/images/{image_id}/file",
                            "-H", "Content-Type: application/octet-stream",
                            "--data-binary", f"@{tmp_path / 'retry.raw'}")
        assert status == 204
    finally:
        second.stop()
