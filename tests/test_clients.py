"""
Unmodified OpenStack clients against imaged started by twistd: the ``glance`` CLI and the
glanceclient library, the ``openstack`` CLI, and openstacksdk.  imaged runs with ``--auth none``
(every request is an admin of the default project), the development mode for token-only
clients without Keystone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imaged.testing import TwistdDaemon

BIN = os.path.dirname(sys.executable)
GLANCE = os.path.join(BIN, "glance")
OPENSTACK = os.path.join(BIN, "openstack")

pytestmark = [
    pytest.mark.servers,
    pytest.mark.skipif(
        not (os.path.exists(GLANCE) and os.path.exists(OPENSTACK)),
        reason="the [clients] extra is not installed",
    ),
]

PROJECT = "demo-project"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdDaemon]:
    workdir = tmp_path_factory.mktemp("clients")
    started = TwistdDaemon(str(workdir), args=["--auth", "none",
                                               "--default-project", PROJECT]).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "disk.raw"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 11))
    return path


def _env() -> dict[str, str]:
    # No OS_* from the machine may steer the clients.
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=_env(),
                            stdin=subprocess.DEVNULL, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout}\n{result.stderr}")
    return result


# -- glance CLI and glanceclient ---------------------------------------------------------------


def glance(daemon: TwistdDaemon, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(GLANCE, "--os-image-url", daemon.url, "--os-auth-token", "no-keystone",
               *args, check=check)


def glance_show(daemon: TwistdDaemon, image_id: str) -> dict[str, str]:
    out = glance(daemon, "image-show", image_id).stdout
    rows = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 2 and parts[0] and parts[0] != "Property":
            rows[parts[0]] = parts[1]
    return rows


def test_glance_cli_lifecycle(daemon: TwistdDaemon, image_file: Path, tmp_path: Path) -> None:
    out = glance(daemon, "image-create", "--name", "glance-cli", "--disk-format", "raw",
                 "--container-format", "bare", "--property", "os_distro=cirros",
                 "--file", str(image_file), "--progress").stdout
    assert "active" in out
    image_id = next(line.split("|")[2].strip() for line in out.splitlines()
                    if line.startswith("| id "))
    shown = glance_show(daemon, image_id)
    assert shown["status"] == "active" and shown["owner"] == PROJECT
    assert shown["checksum"] == hashlib.md5(image_file.read_bytes()).hexdigest()
    assert shown["os_distro"] == "cirros"

    glance(daemon, "image-update", image_id, "--name", "glance-cli-2",
           "--property", "hw_disk_bus=virtio")
    shown = glance_show(daemon, image_id)
    assert shown["name"] == "glance-cli-2" and shown["hw_disk_bus"] == "virtio"
    glance(daemon, "image-update", image_id, "--remove-property", "hw_disk_bus")
    assert "hw_disk_bus" not in glance_show(daemon, image_id)

    glance(daemon, "image-tag-update", image_id, "blue")
    assert "blue" in glance_show(daemon, image_id)["tags"]
    glance(daemon, "image-tag-delete", image_id, "blue")
    assert "blue" not in glance_show(daemon, image_id)["tags"]

    target = tmp_path / "copy.raw"
    glance(daemon, "image-download", image_id, "--file", str(target), "--progress")
    assert target.read_bytes() == image_file.read_bytes()

    glance(daemon, "image-deactivate", image_id)
    assert glance_show(daemon, image_id)["status"] == "deactivated"
    glance(daemon, "image-reactivate", image_id)
    assert glance_show(daemon, image_id)["status"] == "active"

    again = glance(daemon, "image-upload", "--file", str(image_file), image_id, check=False)
    assert again.returncode != 0 and "409 Conflict" in again.stderr
    assert "Traceback" not in again.stderr

    glance(daemon, "image-delete", image_id)
    missing = glance(daemon, "image-show", image_id, check=False)
    assert missing.returncode != 0
    assert f"404 Not Found: No image found with ID {image_id}" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_glance_cli_list_filters_sort_and_pages(daemon: TwistdDaemon) -> None:
    made = []
    for n in range(5):
        out = glance(daemon, "image-create", "--name", f"paged-{n}", "--disk-format", "qcow2",
                     "--container-format", "bare", "--property", "purpose=paging").stdout
        made.append(next(line.split("|")[2].strip() for line in out.splitlines()
                         if line.startswith("| id ")))
    out = glance(daemon, "image-list", "--page-size", "2", "--property-filter",
                 "purpose=paging", "--sort-key", "name", "--sort-dir", "desc").stdout
    listed = [line.split("|")[1].strip() for line in out.splitlines()
              if line.startswith("| ") and "ID" not in line]
    assert listed == list(reversed(made))  # all five, over three pages, by name desc
    for image_id in made:
        glance(daemon, "image-delete", image_id)


def test_glanceclient_library(daemon: TwistdDaemon, image_file: Path) -> None:
    from glanceclient import Client

    client = Client("2", endpoint=daemon.url, token="no-keystone")
    image = client.images.create(name="glanceclient-lib", disk_format="raw",
                                 container_format="bare", os_distro="debian")
    with open(image_file, "rb") as data:
        client.images.upload(image.id, data)
    fetched = client.images.get(image.id)
    assert fetched.status == "active" and fetched.size == image_file.stat().st_size
    found = list(client.images.list(filters={"os_distro": "debian"}, page_size=1))
    assert [i.id for i in found] == [image.id]
    body = b"".join(client.images.data(image.id))  # verified against os_hash_value
    assert body == image_file.read_bytes()
    client.images.update(image.id, remove_props=["os_distro"], min_ram=512)
    assert client.images.get(image.id).min_ram == 512
    client.images.delete(image.id)


# -- openstack CLI -------------------------------------------------------------------------------


def openstack(daemon: TwistdDaemon, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(OPENSTACK, "--os-auth-type", "none", "--os-endpoint", daemon.url,
               "--os-image-api-version", "2", "image", *args, check=check)


def openstack_show(daemon: TwistdDaemon, name: str) -> dict[str, Any]:
    return json.loads(openstack(daemon, "show", name, "-f", "json").stdout)


def test_openstack_cli_lifecycle(daemon: TwistdDaemon, image_file: Path, tmp_path: Path) -> None:
    openstack(daemon, "create", "--file", str(image_file), "--progress", "--disk-format", "raw",
              "--container-format", "bare", "--property", "os_distro=arch", "--tag", "t1",
              "osc-image")
    shown = openstack_show(daemon, "osc-image")
    assert shown["status"] == "active"
    assert shown["checksum"] == hashlib.md5(image_file.read_bytes()).hexdigest()

    listed = json.loads(openstack(daemon, "list", "--name", "osc-image", "--status", "active",
                                  "--property", "os_distro=arch", "--tag", "t1",
                                  "--sort", "name:asc", "--limit", "5", "--long",
                                  "-f", "json").stdout)
    assert [row["Name"] for row in listed] == ["osc-image"]

    openstack(daemon, "set", "--property", "a=b", "--tag", "t2", "osc-image")
    shown = openstack_show(daemon, "osc-image")
    assert shown["properties"]["a"] == "b" and set(shown["tags"]) >= {"t1", "t2"}
    openstack(daemon, "unset", "--property", "a", "--tag", "t2", "osc-image")
    shown = openstack_show(daemon, "osc-image")
    assert "a" not in shown["properties"] and "t2" not in shown["tags"]

    openstack(daemon, "set", "--deactivate", "osc-image")
    assert openstack_show(daemon, "osc-image")["status"] == "deactivated"
    openstack(daemon, "set", "--activate", "osc-image")

    target = tmp_path / "saved.raw"
    openstack(daemon, "save", "--file", str(target), "osc-image")
    assert target.read_bytes() == image_file.read_bytes()

    openstack(daemon, "delete", "osc-image")
    gone = openstack(daemon, "show", "osc-image", check=False)
    assert gone.returncode != 0 and "Traceback" not in gone.stderr


# -- openstacksdk ---------------------------------------------------------------------------------


def test_openstacksdk(daemon: TwistdDaemon, image_file: Path, tmp_path: Path) -> None:
    import openstack as sdk

    # No endpoint override: the SDK discovers the version from imaged's "/" (300).
    conn = sdk.connection.Connection(auth_type="none", auth={"endpoint": daemon.url})
    assert conn.image.get_api_major_version()[0] == 2

    image = conn.image.create_image(name="sdk-image", filename=str(image_file),
                                    disk_format="raw", container_format="bare",
                                    os_distro="fedora")
    image = conn.image.get_image(image)
    assert image.status == "active" and image.checksum == hashlib.md5(
        image_file.read_bytes()).hexdigest()
    assert conn.image.find_image("sdk-image").id == image.id
    assert conn.image.find_image(image.id).id == image.id

    for n in range(3):
        conn.image.create_image(name=f"sdk-page-{n}", disk_format="raw",
                                container_format="bare", tags=["paging-sdk"],
                                allow_duplicates=True)
    # The SDK passes only the query parameters it knows (tag, name, status, ...).
    paged = list(conn.image.images(tag="paging-sdk", limit=1))
    assert sorted(i.name for i in paged) == ["sdk-page-0", "sdk-page-1", "sdk-page-2"]

    conn.image.update_image(image, name="sdk-image-2", os_distro="rocky")
    updated = conn.image.get_image(image)
    assert updated.name == "sdk-image-2" and updated.os_distro == "rocky"

    conn.image.add_tag(image, "sdk-tag")
    assert "sdk-tag" in conn.image.get_image(image).tags
    conn.image.remove_tag(image, "sdk-tag")

    downloaded = conn.image.download_image(image, stream=True)
    body = b"".join(downloaded.iter_content(1024 * 1024))
    assert body == image_file.read_bytes()
    # With an output file the SDK verifies the bytes against os_hash_value/checksum itself.
    target = tmp_path / "sdk.raw"
    conn.image.download_image(image, output=str(target))
    assert target.read_bytes() == image_file.read_bytes()

    # Image.upload on an image created without data.
    empty = conn.image.create_image(name="sdk-upload", disk_format="raw",
                                    container_format="bare", allow_duplicates=True)
    resource = conn.image.get_image(empty)
    resource.data = image_file.read_bytes()
    resource.upload(conn.image)
    uploaded = conn.image.get_image(empty)
    assert uploaded.status == "active" and uploaded.size == image_file.stat().st_size
    conn.image.delete_image(uploaded)

    conn.image.deactivate_image(image)
    assert conn.image.get_image(image).status == "deactivated"
    conn.image.reactivate_image(image)

    conn.image.delete_image(image)
    assert conn.image.find_image(image.id) is None
    for leftover in conn.image.images(tag="paging-sdk"):
        conn.image.delete_image(leftover)


def test_clients_are_real(daemon: TwistdDaemon) -> None:
    """The suites above drive the installed clients, not stand-ins."""
    assert shutil.which("glance", path=BIN) and shutil.which("openstack", path=BIN)
    assert "imaged listening" in daemon.log()
