"""
Disk format inspection on real images made by qemu-img (Debian's qemu-utils), including
hostile ones, streamed through the inspector in chunks of several sizes and through the API.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imaged.api import APIConfig, routes
from imaged.formats import FormatInspector, Inspection
from imaged.testing import memory_image_service

from .conftest import Client

QEMU_IMG = shutil.which("qemu-img")
pytestmark = pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img (qemu-utils)")


def qemu_img(*args: str) -> None:
    subprocess.run([QEMU_IMG or "qemu-img", *args], check=True, capture_output=True)


def qemu_virtual_size(path: Path, fmt: str) -> int:
    out = subprocess.run([QEMU_IMG or "qemu-img", "info", "-f", fmt, "--output=json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(json.loads(out)["virtual-size"])


def inspect(data: bytes, step: int = 65536) -> Inspection:
    inspector = FormatInspector()
    for i in range(0, len(data), step):
        inspector.feed(data[i:i + step])
    return inspector.result(len(data))


def make_iso(path: Path, blocks: int = 64) -> None:
    """A minimal ISO 9660 image: 16 system sectors, then a primary volume descriptor."""
    pvd = bytearray(2048)
    pvd[0] = 1
    pvd[1:6] = b"CD001"
    pvd[6] = 1
    struct.pack_into("<I", pvd, 80, blocks)
    struct.pack_into(">I", pvd, 84, blocks)
    struct.pack_into("<H", pvd, 128, 2048)
    struct.pack_into(">H", pvd, 130, 2048)
    path.write_bytes(b"\0" * 16 * 2048 + bytes(pvd) + b"\0" * (blocks - 17) * 2048)


GOOD = [
    # (file name, qemu-img create arguments, our format, qemu's format name)
    ("v3.qcow2", ["-f", "qcow2"], "qcow2", "qcow2"),
    ("v2.qcow2", ["-f", "qcow2", "-o", "compat=0.10"], "qcow2", "qcow2"),
    ("sparse.vmdk", ["-f", "vmdk"], "vmdk", "vmdk"),
    ("stream.vmdk", ["-f", "vmdk", "-o", "subformat=streamOptimized"], "vmdk", "vmdk"),
    ("dynamic.vhd", ["-f", "vpc"], "vhd", "vpc"),
    ("fixed.vhd", ["-f", "vpc", "-o", "subformat=fixed"], "vhd", "vpc"),
    ("disk.vhdx", ["-f", "vhdx"], "vhdx", "vhdx"),
    ("disk.vdi", ["-f", "vdi"], "vdi", "vdi"),
    ("disk.raw", ["-f", "raw"], "raw", "raw"),
]


@pytest.mark.parametrize("name, create, fmt, qemu_fmt", GOOD)
@pytest.mark.parametrize("step", [512, 65536, 1024 * 1024])
def test_recognises_qemu_images(tmp_path: Path, name: str, create: list[str], fmt: str,
                                qemu_fmt: str, step: int) -> None:
    path = tmp_path / name
    qemu_img("create", "-q", *create, str(path), "64M")
    result = inspect(path.read_bytes(), step)
    assert result.format == fmt
    assert result.unsafe is None
    assert result.virtual_size == qemu_virtual_size(path, qemu_fmt)
    assert result.problem(fmt) is None


def test_iso(tmp_path: Path) -> None:
    make_iso(tmp_path / "cd.iso")
    result = inspect((tmp_path / "cd.iso").read_bytes())
    assert (result.format, result.virtual_size) == ("iso", 64 * 2048)
    assert result.problem("iso") is None and result.problem("raw") is None
    assert result.problem("qcow2") is not None


def test_partition_tables_inside_raw(tmp_path: Path) -> None:
    mbr = bytearray(1024 * 1024)
    mbr[510:512] = b"\x55\xaa"
    assert inspect(bytes(mbr)).partition_table == "mbr"
    gpt = bytearray(mbr)
    gpt[512:520] = b"EFI PART"
    assert inspect(bytes(gpt)).partition_table == "gpt"
    assert inspect(bytes(gpt)).problem("raw") is None


def test_hostile_qcow2_backing_file(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
             str(tmp_path / "evil.qcow2"), "16M")
    result = inspect((tmp_path / "evil.qcow2").read_bytes())
    assert result.format == "qcow2" and "backing file" in (result.unsafe or "")
    assert result.problem("qcow2") == result.unsafe


def test_hostile_qcow2_external_data_file(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
             str(tmp_path / "evil.qcow2"), "16M")
    result = inspect((tmp_path / "evil.qcow2").read_bytes())
    assert "external data file" in (result.unsafe or "")


def test_hostile_vmdk_descriptor_file(tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat",
             str(tmp_path / "evil.vmdk"), "16M")
    result = inspect((tmp_path / "evil.vmdk").read_bytes())
    assert result.format == "vmdk" and "other files" in (result.unsafe or "")


def test_hostile_vmdk_sparse_with_flat_extent(tmp_path: Path) -> None:
    path = tmp_path / "evil.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(path), "16M")
    data = bytearray(path.read_bytes())
    start = data.index(b"RW ")
    end = data.index(b"\n", start)
    line = b'RW 32768 FLAT "/etc/shadow" 0'
    data[start:end] = line + b" " * max(0, (end - start) - len(line))
    result = inspect(bytes(data))
    assert result.format == "vmdk" and "extents" in (result.unsafe or "")


def test_formats_that_are_not_what_they_claim() -> None:
    raw = b"\0" * 100_000
    assert inspect(raw).problem("qcow2") is not None
    assert inspect(raw).problem("raw") is None
    assert inspect(raw).problem("ami") is None  # not inspected, as Glance


@pytest.fixture
def formats_client() -> Client:
    service = memory_image_service()
    return Client(routes(APIConfig(image_service=service)).resource())


def _upload(client: Client, data: bytes, disk_format: str) -> tuple[dict[str, Any], int]:
    image = client.create(disk_format=disk_format, container_format="bare")
    code = client.upload(image["id"], data).code
    return client.get(f"/v2/images/{image['id']}").json(), code


def test_api_sets_virtual_size_from_the_content(tmp_path: Path, formats_client: Client) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "d.qcow2"), "1G")
    image, code = _upload(formats_client, (tmp_path / "d.qcow2").read_bytes(), "qcow2")
    assert code == 204 and image["status"] == "active"
    assert image["virtual_size"] == 1024**3
    assert image["size"] == (tmp_path / "d.qcow2").stat().st_size


@pytest.mark.parametrize("declared", ["raw", "vmdk", "iso"])
def test_api_refuses_mismatched_data(tmp_path: Path, formats_client: Client,
                                     declared: str) -> None:
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "d.qcow2"), "64M")
    image, code = _upload(formats_client, (tmp_path / "d.qcow2").read_bytes(), declared)
    assert code == 415
    assert image["status"] == "queued" and image["size"] is None


def test_api_refuses_hostile_images_and_keeps_nothing(tmp_path: Path) -> None:
    service = memory_image_service()
    client = Client(routes(APIConfig(image_service=service)).resource())
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
             str(tmp_path / "evil.qcow2"), "16M")
    image = client.create(disk_format="qcow2", container_format="bare")
    reply = client.upload(image["id"], (tmp_path / "evil.qcow2").read_bytes())
    assert reply.code == 415 and b"backing file" in reply.body
    assert service.blobs.blobs == {}
    assert client.get(f"/v2/images/{image['id']}").json()["status"] == "queued"


def test_format_match_can_be_relaxed_but_safety_cannot(tmp_path: Path) -> None:
    from imaged.api import ImageService
    from imaged.store.sql import SQLMetadataStore
    from imaged.testing import MemoryBlobStore

    service = ImageService(SQLMetadataStore.in_memory(), MemoryBlobStore(),
                           require_format_match=False)
    client = Client(routes(APIConfig(image_service=service)).resource())
    qemu_img("create", "-q", "-f", "qcow2", str(tmp_path / "d.qcow2"), "64M")
    _, code = _upload(client, (tmp_path / "d.qcow2").read_bytes(), "raw")
    assert code == 204
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
             str(tmp_path / "evil.qcow2"), "16M")
    _, code = _upload(client, (tmp_path / "evil.qcow2").read_bytes(), "qcow2")
    assert code == 415


def test_non_bare_containers_are_not_inspected(formats_client: Client) -> None:
    image = formats_client.create(disk_format="qcow2", container_format="ova")
    assert formats_client.upload(image["id"], b"not a qcow2 at all").code == 204


def test_empty_upload_is_not_inspected(formats_client: Client) -> None:
    image, code = _upload(formats_client, b"", "qcow2")
    assert code == 204 and image["status"] == "active" and image["size"] == 0
