"""
Recognising disk image formats from the bytes of an upload as they stream past.

``FormatInspector.feed`` sees every chunk once and keeps only the byte ranges ("regions") the
formats need: headers, the ISO volume descriptor, the VHD footer at the very end, the VMDK
descriptor and the VHDX region and metadata tables, whose positions are learnt from earlier
regions.  Nothing is read twice and memory stays at a few KiB per upload.

``Inspection.problem(declared)`` says why an upload must be refused: its content is not the
declared ``disk_format``, or it is a format that points outside itself (a qcow2 backing file or
external data file, VMDK extents in other files: the CVE-2022-47951 / CVE-2024-32498 class of
attacks, where a "disk image" makes the hypervisor read a host file).
"""

from __future__ import annotations

import re
import struct
import uuid

import attrs

SECTOR = 512

_VHDX_REGION_TABLE = 192 * 1024
_VHDX_METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
_VHDX_VIRTUAL_DISK_SIZE_GUID = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
_VDI_SIGNATURE = 0xBEDA107F


@attrs.frozen
class Inspection:
    """What the bytes are: a format name (``DiskFormat`` values, or ``raw``) and its sizes."""

    format: str
    virtual_size: int | None
    unsafe: str | None = None
    partition_table: str | None = None

    def problem(self, declared: str | None) -> str | None:
        """Why data with this content may not be stored as ``declared``, or ``None``."""
        if self.unsafe is not None:
            return self.unsafe
        if declared is None or declared in ("ami", "ari", "aki", "ploop"):
            return None  # formats Glance does not inspect
        if declared == "raw":
            if self.format in ("raw", "iso"):
                return None
        elif declared == self.format:
            return None
        return (
            f"Image content does not match disk_format '{declared}': "
            f"the data is {self.format}."
        )


@attrs.define
class _Region:
    offset: int
    length: int
    data: bytearray = attrs.field(factory=bytearray)

    @property
    def complete(self) -> bool:
        return len(self.data) >= self.length


class FormatInspector:
    """Feed it every chunk of an image in order; ask ``result(size)`` at the end."""

    TAIL = SECTOR
    #: The first bytes are kept, so that a region learnt late but lying early is still found.
    PREFIX = 64 * 1024

    def __init__(self) -> None:
        self.position = 0
        self._prefix = bytearray()
        self._regions: dict[str, _Region] = {}
        self._tail = b""
        self._missed: set[str] = set()
        self._want("header", 0, 4096)
        self._want("iso", 0x8000, 2048)

    def _want(self, name: str, offset: int, length: int) -> None:
        region = _Region(offset, length)
        if offset < self.position:
            region.data += self._prefix[offset : offset + length]
            if offset + len(region.data) < min(self.position, offset + length):
                # Gone by and not in the prefix: only a malformed or hostile image does this.
                self._missed.add(name)
                return
        self._regions[name] = region
        if region.complete:
            self._completed(name, bytes(region.data))

    def _region(self, name: str) -> bytes | None:
        region = self._regions.get(name)
        return bytes(region.data) if region is not None else None

    def feed(self, data: bytes) -> None:
        start, end = self.position, self.position + len(data)
        if start < self.PREFIX:
            self._prefix += data[: self.PREFIX - start]
        seen: set[str] = set()
        # A region completed by this chunk may ask for another one inside the same chunk.
        while True:
            pending = [name for name in self._regions if name not in seen]
            if not pending:
                break
            for name in pending:
                seen.add(name)
                region = self._regions[name]
                if region.complete or region.offset >= end:
                    continue
                first = max(region.offset + len(region.data), start)
                last = min(region.offset + region.length, end)
                if first < last:
                    region.data += data[first - start : last - start]
                    if region.complete:
                        self._completed(name, bytes(region.data))
        self.position = end
        self._tail = (self._tail + data[-self.TAIL :])[-self.TAIL :]

    # -- regions whose position is only known from other regions -----------------------------

    def _completed(self, name: str, data: bytes) -> None:
        if name == "header":
            if data[:4] == b"KDMV" and len(data) >= 44:
                offset, size = struct.unpack_from("<QQ", data, 28)
                if 0 < size <= 2048:
                    self._want("vmdk_descriptor", offset * SECTOR, size * SECTOR)
            elif data[:8] == b"vhdxfile":
                self._want("vhdx_regions", _VHDX_REGION_TABLE, 4096)
        elif name == "vhdx_regions":
            for guid, offset, length in _vhdx_region_entries(data):
                if guid == _VHDX_METADATA_GUID and length >= 64 * 1024:
                    self._want("vhdx_metadata", offset, 64 * 1024)
        elif name == "vhdx_metadata":
            item = _vhdx_metadata_item(data, _VHDX_VIRTUAL_DISK_SIZE_GUID)
            if item is not None:
                region = self._regions["vhdx_metadata"]
                self._want("vhdx_size", region.offset + item, 8)

    # -- the verdict ---------------------------------------------------------------------------

    def result(self, size: int) -> Inspection:
        header = self._region("header") or b""
        if header[:4] == b"QFI\xfb":
            return _qcow2(header)
        if header[:4] == b"KDMV":
            return self._vmdk(header)
        if header.lstrip().startswith(b"# Disk DescriptorFile"):
            return Inspection("vmdk", None, "VMDK descriptor files refer to extents in other "
                              "files, which this service does not accept.")
        if header[:8] == b"vhdxfile":
            return self._vhdx()
        if header[:8] == b"conectix" or self._tail[:8] == b"conectix":
            footer = header[:SECTOR] if header[:8] == b"conectix" else self._tail
            return Inspection("vhd", struct.unpack_from(">Q", footer, 48)[0])
        if len(header) >= 0x178 and struct.unpack_from("<I", header, 0x40)[0] == _VDI_SIGNATURE:
            return Inspection("vdi", struct.unpack_from("<Q", header, 0x170)[0])
        iso = self._region("iso") or b""
        if iso[1:6] == b"CD001" and len(iso) >= 130:
            blocks = struct.unpack_from("<I", iso, 80)[0]
            block_size = struct.unpack_from("<H", iso, 128)[0]
            return Inspection("iso", blocks * block_size)
        table = None
        if header[512:520] == b"EFI PART":
            table = "gpt"
        elif header[510:512] == b"\x55\xaa":
            table = "mbr"
        return Inspection("raw", size, partition_table=table)

    def _vmdk(self, header: bytes) -> Inspection:
        capacity = struct.unpack_from("<Q", header, 12)[0] * SECTOR
        descriptor = self._region("vmdk_descriptor")
        if descriptor is None or "vmdk_descriptor" in self._missed:
            return Inspection("vmdk", capacity, "VMDK descriptor could not be read.")
        text = descriptor.split(b"\0", 1)[0].decode("ascii", "replace")
        create_type = re.search(r'createType\s*=\s*"([^"]*)"', text)
        if create_type is None or create_type.group(1) not in (
            "monolithicSparse",
            "streamOptimized",
        ):
            kind = create_type.group(1) if create_type else "missing"
            return Inspection("vmdk", capacity, f"VMDK createType '{kind}' is not accepted.")
        extents = re.findall(r"^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+(\S+)", text, re.M)
        if len(extents) != 1 or extents[0][1] != "SPARSE":
            return Inspection("vmdk", capacity, "VMDK images with extents other than their own "
                              "sparse data are not accepted.")
        return Inspection("vmdk", capacity)

    def _vhdx(self) -> Inspection:
        size = self._region("vhdx_size")
        if size is None or len(size) < 8:
            return Inspection("vhdx", None, "VHDX virtual disk size could not be read.")
        return Inspection("vhdx", struct.unpack_from("<Q", size)[0])


def _qcow2(header: bytes) -> Inspection:
    version = struct.unpack_from(">I", header, 4)[0]
    backing_offset = struct.unpack_from(">Q", header, 8)[0]
    virtual_size = struct.unpack_from(">Q", header, 24)[0]
    if backing_offset != 0:
        return Inspection("qcow2", virtual_size, "qcow2 images with a backing file are not "
                          "accepted.")
    if version >= 3 and len(header) >= 80:
        incompatible = struct.unpack_from(">Q", header, 72)[0]
        if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
            return Inspection("qcow2", virtual_size, "qcow2 images with an external data file "
                              "are not accepted.")
    return Inspection("qcow2", virtual_size)


def _vhdx_region_entries(table: bytes) -> list[tuple[uuid.UUID, int, int]]:
    if table[:4] != b"regi":
        return []
    count = struct.unpack_from("<I", table, 8)[0]
    entries = []
    for n in range(min(count, (len(table) - 16) // 32)):
        base = 16 + 32 * n
        guid = uuid.UUID(bytes_le=table[base : base + 16])
        offset, length = struct.unpack_from("<QI", table, base + 16)
        entries.append((guid, offset, length))
    return entries


def _vhdx_metadata_item(table: bytes, wanted: uuid.UUID) -> int | None:
    if table[:8] != b"metadata":
        return None
    count = struct.unpack_from("<H", table, 10)[0]
    for n in range(min(count, (len(table) - 32) // 32)):
        base = 32 + 32 * n
        if uuid.UUID(bytes_le=table[base : base + 16]) == wanted:
            offset: int = struct.unpack_from("<I", table, base + 16)[0]
            return offset
    return None
