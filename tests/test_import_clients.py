"""
The interoperable import with unmodified clients against ``twistd imaged``: the ``glance``
CLI (``image-create-via-import``, glance-direct and web-download), the ``openstack`` CLI
(``image create --import``) and openstacksdk (``use_import=True``), with a plain HTTP server
on 127.0.0.1 serving web-download's bytes (the daemon allows loopback explicitly: the default
refuses it, which the last test shows).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pty
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaged.testing import TwistdDaemon

from .test_clients import GLANCE, OPENSTACK, _env, openstack

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(
        not (os.path.exists(GLANCE) and os.path.exists(OPENSTACK)),
        reason="the [clients] extra is not installed",
    ),
]

DATA = os.urandom(2 * 1024 * 1024 + 7)


#: Released by a test to let the slow source finish (an event, not a timer).
SLOW_GATE = threading.Event()
#: A small real qcow2 (made by qemu-img in the ``web`` fixture), served as raw.
QCOW2: list[bytes] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            # Half the data, then wait for the test's signal: an import in progress.
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[: len(DATA) // 2])
            self.wfile.flush()
            SLOW_GATE.wait(120)
            self.wfile.write(DATA[len(DATA) // 2:])
            return
        if self.path == "/liar":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA) + 1000))
            self.end_headers()
            self.wfile.write(DATA)
            self.close_connection = True
            return
        if self.path == "/qcow2-as-raw":
            self.send_response(200)
            self.send_header("Content-Length", str(len(QCOW2[0])))
            self.end_headers()
            self.wfile.write(QCOW2[0])
            return
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/disk.raw")
            self.end_headers()
            return
        if self.path != "/disk.raw":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    qcow2 = tmp_path_factory.mktemp("qcow2") / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(qcow2), "1M"], check=True,
                   capture_output=True)
    QCOW2[:] = [qcow2.read_bytes()]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdDaemon]:
    started = TwistdDaemon(str(tmp_path_factory.mktemp("imports")), args=[
        "--auth", "none", "--import-allowed-networks", "127.0.0.0/8",
        "--import-allowed-ports", "",
    ]).start()
    yield started
    started.stop()


def glance_at(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The glance CLI with a terminal on stdin: without one, glanceclient takes stdin for
    image data and refuses web-download (and glance-direct with --file)."""
    leader, follower = pty.openpty()
    try:
        result = subprocess.run([GLANCE, "--os-image-url", url, "--os-auth-token", "x", *args],
                                capture_output=True, text=True, env=_env(), stdin=follower,
                                timeout=120, check=False)
    finally:
        os.close(leader)
        os.close(follower)
    if check and result.returncode != 0:
        raise AssertionError(f"glance {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def glance(daemon: TwistdDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return glance_at(daemon.url, *args)


def wait_for(daemon: TwistdDaemon, image_id: str, status: str) -> dict[str, Any]:
    """Poll until the import's outcome shows (an event, with a deadline)."""
    deadline = time.monotonic() + 60
    while True:
        shown = _show(daemon, image_id)
        if shown["status"] == status or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)


def _show(daemon: TwistdDaemon, image_id: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{daemon.url}/v2/images/{image_id}", timeout=30) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


def _tasks(daemon: TwistdDaemon, image_id: str) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{daemon.url}/v2/images/{image_id}/tasks", timeout=30) as r:
        tasks: list[dict[str, Any]] = json.loads(r.read())["tasks"]
    return tasks


def _id_from_table(out: str) -> str:
    for line in out.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 2 and parts[0] == "id":
            return parts[1]
    raise AssertionError(out)


def test_glance_cli_glance_direct(daemon: TwistdDaemon, tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    out = glance(daemon, "image-create-via-import", "--name", "gd", "--disk-format", "raw",
                 "--container-format", "bare", "--import-method", "glance-direct",
                 "--file", str(path)).stdout
    image_id = _id_from_table(out)
    image = wait_for(daemon, image_id, "active")
    assert image["status"] == "active"
    assert image["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    [task] = _tasks(daemon, image_id)
    assert task["status"] == "success"


@pytest.mark.parametrize("path", ["/disk.raw", "/moved"])
def test_glance_cli_web_download(daemon: TwistdDaemon, web: str, path: str) -> None:
    out = glance(daemon, "image-create-via-import", "--name", "wd", "--disk-format", "raw",
                 "--container-format", "bare", "--import-method", "web-download",
                 "--uri", web + path).stdout
    image_id = _id_from_table(out)
    image = wait_for(daemon, image_id, "active")
    assert image["status"] == "active" and image["size"] == len(DATA)
    assert image["checksum"] == hashlib.md5(DATA).hexdigest()
    [task] = _tasks(daemon, image_id)
    assert task["status"] == "success"
    assert task["os_imaged_progress"] == {"done": len(DATA), "total": len(DATA)}


def test_web_download_of_a_missing_file_fails_the_task(daemon: TwistdDaemon, web: str) -> None:
    out = glance(daemon, "image-create-via-import", "--name", "missing", "--disk-format",
                 "raw", "--container-format", "bare", "--import-method", "web-download",
                 "--uri", web + "/nothing-here").stdout
    image_id = _id_from_table(out)
    deadline = time.monotonic() + 60
    while _tasks(daemon, image_id)[0]["status"] not in ("success", "failure"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [task] = _tasks(daemon, image_id)
    assert task["status"] == "failure" and "404" in task["message"]
    assert _show(daemon, image_id)["status"] == "queued"


def test_openstack_cli_create_import(daemon: TwistdDaemon, tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    openstack(daemon, "create", "--import", "--file", str(path), "--disk-format", "raw",
              "--container-format", "bare", "osc-import")
    shown = json.loads(openstack(daemon, "show", "osc-import", "-f", "json").stdout)
    image = wait_for(daemon, shown["id"], "active")
    assert image["status"] == "active" and image["size"] == len(DATA)


def test_openstacksdk_use_import(daemon: TwistdDaemon, tmp_path: Path) -> None:
    import openstack as sdk

    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    conn = sdk.connection.Connection(auth_type="none", auth={"endpoint": daemon.url})
    image = conn.image.create_image(name="sdk-import", filename=str(path), disk_format="raw",
                                    container_format="bare", use_import=True, wait=True,
                                    timeout=60)
    assert wait_for_sdk(conn, image) == "active"  # the import is asynchronous, as Glance's
    assert conn.image.get_image(image).checksum == hashlib.md5(DATA).hexdigest()
    staged = conn.image.create_image(name="sdk-stage", disk_format="raw",
                                     container_format="bare", allow_duplicates=True)
    conn.image.stage_image(staged, filename=str(path))
    assert conn.image.get_image(staged).status == "uploading"
    conn.image.import_image(staged, method="glance-direct")
    assert wait_for_sdk(conn, staged) == "active"
    # The image's tasks (2.12) and the tasks API (admin: --auth none is an admin).
    [image_task] = list(conn.image.image_tasks(staged))
    assert image_task.status == "success" and image_task.type == "api_image_import"
    task = conn.image.wait_for_task(conn.image.get_task(image_task.id), interval=0.1, wait=60)
    assert task.result == {"image_id": staged.id}
    assert image_task.id in {t.id for t in conn.image.tasks()}


def wait_for_sdk(conn: Any, image: Any) -> str:
    deadline = time.monotonic() + 60
    while (status := conn.image.get_image(image).status) != "active":
        if time.monotonic() > deadline:
            return str(status)
        time.sleep(0.1)
    return str(status)


def test_the_default_refuses_loopback_web_downloads(
    tmp_path: Path, web: str
) -> None:
    default = TwistdDaemon(str(tmp_path), args=["--auth", "none"]).start()
    try:
        out = glance_at(default.url, "image-create-via-import", "--name", "ssrf",
                        "--disk-format", "raw", "--container-format", "bare",
                        "--import-method", "web-download", "--uri", web + "/disk.raw",
                        check=False)
        assert out.returncode != 0
        assert "does not pass filtering" in out.stderr + out.stdout
    finally:
        default.stop()


def _import_uri(daemon: TwistdDaemon, uri: str, disk_format: str = "raw") -> str:
    out = glance(daemon, "image-create-via-import", "--name", "edge", "--disk-format",
                 disk_format, "--container-format", "bare", "--import-method", "web-download",
                 "--uri", uri).stdout
    return _id_from_table(out)


def _task_ended(daemon: TwistdDaemon, image_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        tasks = _tasks(daemon, image_id)
        if tasks and tasks[-1]["status"] in ("success", "failure"):
            return tasks[-1]
        assert time.monotonic() < deadline, tasks
        time.sleep(0.05)


def test_sources_that_lie_or_mislabel_fail_the_task(daemon: TwistdDaemon, web: str) -> None:
    liar = _import_uri(daemon, web + "/liar")
    task = _task_ended(daemon, liar)
    assert task["status"] == "failure", task
    mislabelled = _import_uri(daemon, web + "/qcow2-as-raw")
    task = _task_ended(daemon, mislabelled)
    assert task["status"] == "failure" and "qcow2" in task["message"], task
    for image_id in (liar, mislabelled):
        assert _show(daemon, image_id)["status"] == "queued"


def test_a_slow_source_shows_progress_then_finishes(daemon: TwistdDaemon, web: str) -> None:
    SLOW_GATE.clear()
    image_id = _import_uri(daemon, web + "/slow")
    deadline = time.monotonic() + 60
    while not _tasks(daemon, image_id)[0]["os_imaged_progress"]["done"]:
        assert time.monotonic() < deadline, "no progress was written"
        time.sleep(0.1)
    [task] = _tasks(daemon, image_id)
    assert task["status"] == "processing"
    assert task["os_imaged_progress"] == {"done": len(DATA) // 2, "total": len(DATA)}
    assert _show(daemon, image_id)["status"] == "importing"
    SLOW_GATE.set()
    assert _task_ended(daemon, image_id)["status"] == "success"
    assert _show(daemon, image_id)["os_hash_value"] == hashlib.sha512(DATA).hexdigest()


def test_kill_9_mid_import_then_restart_ends_the_task(tmp_path: Path, web: str) -> None:
    """The process running an import dies: on restart (SQLite: it recovers its own
    database at start) the image is queued again and the task failed, never left running."""
    SLOW_GATE.clear()
    args = ["--auth", "none", "--import-allowed-networks", "127.0.0.0/8",
            "--import-allowed-ports", ""]
    first = TwistdDaemon(str(tmp_path), args=args).start()
    try:
        image_id = _import_uri(first, web + "/slow")
        deadline = time.monotonic() + 60
        while _show(first, image_id)["status"] != "importing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.stop(signal.SIGKILL)
    second = TwistdDaemon(str(tmp_path), args=args).start()
    try:
        task = _task_ended(second, image_id)  # recovery runs as the daemon starts
        assert task["status"] == "failure" and "interrupted" in task["message"]
        assert _show(second, image_id)["status"] == "queued"
    finally:
        SLOW_GATE.set()
        second.stop()
