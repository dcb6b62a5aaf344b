"""
Recognising disk image formats from the bytes of an upload as they stream past.

``FormatInspector.feed`` sees every chunk once and keeps only the byte ranges ("regions") the
formats need: headers, the ISO volume descriptor, the last sectors (VHD and VMDK footers), the
VMDK descriptor and the VHDX region and metadata tables, whose positions are learnt from earlier
regions.  Nothing is read twice, and what is kept is bounded whatever the data says: every
length and count read from a header is checked against a fixed cap before it is used, so an
upload costs the 64 KiB prefix, 1.5 KiB of tail and a few KiB of regions (a VMDK descriptor may
take up to 64 KiB more), under 140 KiB in all.

The inspection never raises on short or malformed data, whatever the chunking: a truncated or
inconsistent qcow2/VMDK/VHD/VHDX/VDI header is still that format (qemu would probe it as such),
with ``unsafe`` saying what is wrong with it, so that the upload is refused with a sentence
rather than a server error.

``Inspection.problem(declared)`` says why an upload must be refused: its content is not the
declared ``disk_format``, it is a format that points outside itself (a qcow2 backing file or
external data file, a VMDK parent or extents in other files, a differencing VHD/VHDX: the
CVE-2022-47951 / CVE-2024-32498 class of attacks, where a "disk image" makes the hypervisor read
a host file), or it is too malformed for that to be ruled out.
"""

from __future__ import annotations

import uuid

import attrs

from .logcontext import Logger

SECTOR = 512

#: Virtual sizes are stored in a signed 64-bit column and qemu caps disks below this too; a
#: header declaring more is hostile or corrupt, not a disk.
MAX_VIRTUAL_SIZE = 2**63 - 1

#: No region is longer than this, whatever a header declares (the VMDK descriptor is the only
#: one that can get near it).
MAX_REGION = 64 * 1024

_QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_V2_HEADER = 72
_QCOW2_V3_HEADER = 104
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
#: dirty, corrupt, external data file, compression type, extended L2 entries.
_QCOW2_INCOMPAT_KNOWN = (1 << 5) - 1

_VMDK_MAGIC = b"KDMV"
_VMDK_HEADER = 64  # magic to gdOffset: every field a hosted sparse extent header needs
_VMDK_GD_AT_END = 2**64 - 1
#: qemu reads this much at sector 1 looking for parentFileNameHint, whatever the header says.
_VMDK_DESCRIPTOR_READ = 20 * SECTOR
_VMDK_DESCRIPTOR_MAX_SECTORS = MAX_REGION // SECTOR
_VMDK_MARKER_EOS = 0
_VMDK_MARKER_FOOTER = 3
_VMDK_EXTENT_ACCESS = ("RW", "RDONLY", "NOACCESS")
_VMDK_CREATE_TYPES = ("monolithicSparse", "streamOptimized")
#: qemu's vmdk_probe: a text descriptor is comment lines and blank lines, then version=N.
_VMDK_TEXT_VERSIONS = tuple(
    f"version={n}{end}".encode() for n in (1, 2, 3) for end in ("\n", "\r\n")
)

_VHD_MAGIC = b"conectix"
_VHD_DIFFERENCING = 4

_VHDX_MAGIC = b"vhdxfile"
_VHDX_REGION_TABLE = 192 * 1024
#: Region and metadata tables are read this far: 127 entries, where real images have 2 and 5.
_VHDX_TABLE_READ = 4096
_VHDX_REGION_ENTRIES = (_VHDX_TABLE_READ - 16) // 32
_VHDX_METADATA_ENTRIES = (_VHDX_TABLE_READ - 32) // 32
_VHDX_METADATA_TABLE = 64 * 1024
_VHDX_METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
_VHDX_VIRTUAL_DISK_SIZE_GUID = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
_VHDX_PARENT_LOCATOR_GUID = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

_VDI_SIGNATURE = 0xBEDA107F
_VDI_HEADER = 0x178  # through the disk size

_QED_MAGIC = b"QED\0"

#: ``unsafe`` of an inspection whose parsing failed unexpectedly (a bug: tests assert it never
#: happens); the upload is refused rather than answered with a server error.
INSPECTION_FAILED = "The image data could not be inspected, so it cannot be accepted."

log = Logger()


@attrs.frozen
class Inspection:
    """What the bytes are: a format name (``DiskFormat`` values, or ``raw``) and its sizes.

    ``unsafe`` is why the data may not be stored whatever it is declared as: it points outside
    itself, or its headers are truncated or inconsistent so that this cannot be ruled out.
    """

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
    #: Bytes needed before the region's content is acted on (the header acts on its first 64).
    ready_at: int
    #: Where the stream was, chunking aside, when this region was learnt of.
    known_at: int
    data: bytearray = attrs.field(factory=bytearray)
    acted: bool = False

    @property
    def complete(self) -> bool:
        return len(self.data) >= self.length

    @property
    def ready(self) -> bool:
        return len(self.data) >= self.ready_at


class FormatInspector:
    """Feed it every chunk of an image in order; ask ``result(size)`` at the end.

    ``result`` does not change the inspector, so it may be asked at any point of the stream.
    """

    #: The VMDK footer, its marker and the end-of-stream marker; the VHD footer is the last 512.
    TAIL = 3 * SECTOR
    #: The first bytes are kept, so that a region learnt late but lying early is still found.
    PREFIX = 64 * 1024

    def __init__(self) -> None:
        self.position = 0
        self._prefix = bytearray()
        self._regions: dict[str, _Region] = {}
        self._tail = b""
        self._missed: set[str] = set()
        self._failed = False
        # 64 bytes are enough to learn where the VMDK descriptor and VHDX region table are,
        # so that short files are planned for too; the rest serves qcow2, VHD, VDI and MBR/GPT.
        self._want("header", 0, 4096, known_at=0, ready_at=_VMDK_HEADER)
        self._want("iso", 0x8000, 2048, known_at=0)

    @property
    def held_bytes(self) -> int:
        """Bytes of the upload this inspector keeps: bounded, whatever the data declares."""
        regions = sum(len(region.data) for region in self._regions.values())
        return len(self._prefix) + len(self._tail) + regions

    def _want(
        self, name: str, offset: int, length: int, known_at: int, ready_at: int | None = None
    ) -> None:
        """Keep ``length`` bytes at ``offset``, learnt of when the stream was at ``known_at``.

        ``known_at`` rather than the current chunk's start decides what has gone by, so that
        the verdict on the same bytes does not depend on how the upload was chunked.
        """
        if name in self._regions or name in self._missed:
            return  # learnt once: a second table entry does not move a region
        # Callers bound lengths from headers; this keeps the promise if one forgets.
        length = max(0, min(length, MAX_REGION))
        ready = length if ready_at is None else min(ready_at, length)
        region = _Region(offset, length, ready, known_at)
        if offset < max(known_at, self.position):
            region.data += self._prefix[offset : offset + length]
            if offset + len(region.data) < min(max(known_at, self.position), offset + length):
                # Gone by and not in the prefix: only a malformed or hostile image does this.
                self._missed.add(name)
                return
        self._regions[name] = region
        self._act_if_ready(name, region)

    def _act_if_ready(self, name: str, region: _Region) -> None:
        if region.ready and not region.acted:
            region.acted = True
            # Where a stream chunked byte by byte would be when this region became ready.
            ready_point = max(region.known_at, region.offset + region.ready_at)
            self._completed(name, bytes(region.data), ready_point)

    def _region(self, name: str) -> bytes | None:
        region = self._regions.get(name)
        return bytes(region.data) if region is not None else None

    def feed(self, data: bytes) -> None:
        """Take the next chunk of the upload; never raises, whatever the bytes."""
        end = self.position + len(data)
        if not self._failed:
            try:
                self._feed(data)
            except Exception:
                # Last resort: a parsing bug must refuse the upload, not fail the request.
                self._failed = True
                log.failure("format inspection failed at byte {position}", position=end)
        self.position = end

    def _feed(self, data: bytes) -> None:
        start, end = self.position, self.position + len(data)
        if start < self.PREFIX:
            self._prefix += data[: self.PREFIX - start]
        seen: set[str] = set()
        # A region acted on in this chunk may ask for another one inside the same chunk.
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
                    self._act_if_ready(name, region)
        self.position = end
        self._tail = (self._tail + data[-self.TAIL :])[-self.TAIL :]

    # -- regions whose position is only known from other regions -----------------------------

    def _completed(self, name: str, data: bytes, at: int) -> None:
        """Learn, from a region that became ready at stream position ``at``, which further
        regions the format needs.

        What is wrong with the data is not recorded here: ``result`` parses the same regions
        with the same helpers, so the verdict does not depend on when regions arrived.
        """
        if name == "header":
            if data[:4] == _VMDK_MAGIC and len(data) >= _VMDK_HEADER:
                header = _VMDKHeader.parse(data)
                if header.descriptor_sectors() is not None:
                    length = max(_VMDK_DESCRIPTOR_READ, header.descriptor_size * SECTOR)
                    self._want("vmdk_descriptor", SECTOR, length, at)
            elif data[:8] == _VHDX_MAGIC:
                self._want("vhdx_regions", _VHDX_REGION_TABLE, _VHDX_TABLE_READ, at)
        elif name == "vhdx_regions":
            metadata = _vhdx_metadata_region(data)
            if isinstance(metadata, tuple):
                self._want("vhdx_metadata", metadata[0], _VHDX_TABLE_READ, at)
        elif name == "vhdx_metadata":
            region = self._regions["vhdx_metadata"]
            regions = _vhdx_metadata_region(self._region("vhdx_regions") or b"")
            if isinstance(regions, tuple):
                item = _vhdx_size_item(data, regions[1])
                if isinstance(item, int):
                    self._want("vhdx_size", region.offset + item, 8, at)

    # -- the verdict ---------------------------------------------------------------------------

    def result(self, size: int) -> Inspection:
        """What the data fed so far is (``size`` bytes in all); never raises."""
        if self._failed:
            return Inspection("unknown", None, INSPECTION_FAILED)
        try:
            return self._result(size)
        except Exception:
            # Last resort, as in feed: every parse below checks lengths before reading.
            log.failure("format inspection failed on a {size}-byte upload", size=size)
            return Inspection("unknown", None, INSPECTION_FAILED)

    def _result(self, size: int) -> Inspection:
        header = self._region("header") or b""
        if header[:4] == _QCOW2_MAGIC:
            return _qcow2(header)
        if header[:4] == _VMDK_MAGIC:
            return self._vmdk(header)
        if _is_vmdk_descriptor_text(header):
            return Inspection("vmdk", None, "VMDK descriptor files refer to extents in other "
                              "files, which this service does not accept.")
        if header[:8] == _VHDX_MAGIC:
            return self._vhdx()
        if header[:8] == _VHD_MAGIC:
            return _vhd(header[:SECTOR])
        if self._tail[-SECTOR:][:8] == _VHD_MAGIC:
            return _vhd(self._tail[-SECTOR:])
        if header[:4] == _QED_MAGIC:
            return Inspection("qed", None, "QED images, which can name a backing file, are not "
                              "accepted.")
        if len(header) >= 0x44 and _le(header, 0x40, 4) == _VDI_SIGNATURE:
            return _vdi(header)
        iso = self._region("iso") or b""
        if iso[1:6] == b"CD001" and len(iso) >= 130:
            return Inspection("iso", _le(iso, 80, 4) * _le(iso, 128, 2))
        table = None
        if header[512:520] == b"EFI PART":
            table = "gpt"
        elif header[510:512] == b"\x55\xaa":
            table = "mbr"
        return Inspection("raw", size, partition_table=table)

    def _vmdk(self, data: bytes) -> Inspection:
        if len(data) < _VMDK_HEADER:
            return Inspection("vmdk", None, _cut_short("VMDK header", len(data), _VMDK_HEADER))
        header = _VMDKHeader.parse(data)
        capacity = header.capacity * SECTOR
        problem = header.problem()
        if problem is None and header.gd_offset == _VMDK_GD_AT_END:
            problem = header.footer_problem(self._tail)
        if problem is not None:
            return Inspection("vmdk", capacity if capacity <= MAX_VIRTUAL_SIZE else None, problem)
        descriptor = self._region("vmdk_descriptor")
        if descriptor is None or "vmdk_descriptor" in self._missed:
            return Inspection("vmdk", capacity, "VMDK descriptor could not be read.")
        if len(descriptor) < header.descriptor_size * SECTOR:
            return Inspection("vmdk", capacity, _cut_short(
                "VMDK descriptor", len(descriptor), header.descriptor_size * SECTOR))
        return Inspection("vmdk", capacity, _vmdk_descriptor_problem(descriptor))

    def _vhdx(self) -> Inspection:
        table = self._region("vhdx_regions")
        if table is None or len(table) < _VHDX_TABLE_READ:
            return Inspection("vhdx", None, "The VHDX region table could not be read: the data "
                              f"ends before byte {_VHDX_REGION_TABLE + _VHDX_TABLE_READ}.")
        regions = _vhdx_metadata_region(table)
        if isinstance(regions, str):
            return Inspection("vhdx", None, regions)
        metadata = self._region("vhdx_metadata")
        if metadata is None or len(metadata) < _VHDX_TABLE_READ:
            where = (
                "lies behind the region table, past the first bytes this service keeps"
                if "vhdx_metadata" in self._missed
                else "runs past the end of the data"
            )
            return Inspection("vhdx", None, f"The VHDX metadata table could not be read: it "
                              f"{where}.")
        item = _vhdx_size_item(metadata, regions[1])
        if isinstance(item, str):
            return Inspection("vhdx", None, item)
        vds = self._region("vhdx_size")
        if vds is None or len(vds) < 8:
            where = (
                "lies behind the metadata table, past the first bytes this service keeps"
                if "vhdx_size" in self._missed
                else "runs past the end of the data"
            )
            return Inspection("vhdx", None, f"VHDX virtual disk size could not be read: it "
                              f"{where}.")
        return _sized("vhdx", _le(vds, 0, 8))


# -- parsing: every function checks lengths before it reads, and bounds what it is told ---------


def _le(data: bytes, offset: int, size: int) -> int:
    """The little-endian unsigned integer at ``offset``; callers have checked the length."""
    return int.from_bytes(data[offset : offset + size], "little")


def _be(data: bytes, offset: int, size: int) -> int:
    """The big-endian unsigned integer at ``offset``; callers have checked the length."""
    return int.from_bytes(data[offset : offset + size], "big")


def _cut_short(what: str, have: int, need: int) -> str:
    return f"The {what} is cut short: the data holds {have} of its {need} bytes."


def _sized(fmt: str, virtual_size: int, unsafe: str | None = None) -> Inspection:
    """An inspection of ``fmt`` whose declared size is refused when no disk can be that big."""
    if virtual_size > MAX_VIRTUAL_SIZE:
        return Inspection(fmt, None, f"The {fmt} header declares a virtual size of "
                          f"{virtual_size} bytes, more than any disk can have.")
    return Inspection(fmt, virtual_size, unsafe)


def _printable(text: str, limit: int = 40) -> str:
    """``text`` fit to quote in a message: printable ASCII, at most ``limit`` characters."""
    shown = "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _qcow2(header: bytes) -> Inspection:
    if len(header) < 8:
        return Inspection("qcow2", None, _cut_short("qcow2 header", len(header),
                                                    _QCOW2_V2_HEADER))
    version = _be(header, 4, 4)
    if version not in (2, 3):
        # Version 1 is qemu's older "qcow", which can name a backing file too.
        return Inspection("qcow2", None, f"qcow2 version {version} is not accepted (only 2 "
                          "and 3 are).")
    need = _QCOW2_V2_HEADER if version == 2 else _QCOW2_V3_HEADER
    if len(header) < need:
        return Inspection("qcow2", None, _cut_short("qcow2 header", len(header), need))
    virtual_size = _be(header, 24, 8)
    if _be(header, 8, 8) != 0:
        return _sized("qcow2", virtual_size, "qcow2 images with a backing file are not "
                      "accepted.")
    if version == 3:
        incompatible = _be(header, 72, 8)
        if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
            return _sized("qcow2", virtual_size, "qcow2 images with an external data file "
                          "are not accepted.")
        if incompatible & ~_QCOW2_INCOMPAT_KNOWN:
            return _sized("qcow2", virtual_size, "qcow2 image uses incompatible features "
                          f"unknown to this service (bits {incompatible:#x}).")
    return _sized("qcow2", virtual_size)


@attrs.frozen
class _VMDKHeader:
    """The fields of a hosted sparse extent header (the VMDK header or its footer copy)."""

    version: int
    capacity: int
    descriptor_offset: int
    descriptor_size: int
    gd_offset: int

    @classmethod
    def parse(cls, data: bytes) -> _VMDKHeader:
        """Read from at least ``_VMDK_HEADER`` bytes starting at the magic."""
        return cls(
            version=_le(data, 4, 4),
            capacity=_le(data, 12, 8),
            descriptor_offset=_le(data, 28, 8),
            descriptor_size=_le(data, 36, 8),
            gd_offset=_le(data, 56, 8),
        )

    def descriptor_sectors(self) -> int | None:
        """The descriptor's size when it is where qemu reads it and not absurdly long."""
        if self.descriptor_offset == 1 and 0 < self.descriptor_size <= (
                _VMDK_DESCRIPTOR_MAX_SECTORS):
            return self.descriptor_size
        return None

    def problem(self) -> str | None:
        if self.version not in (1, 2, 3):
            return f"VMDK version {self.version} is not accepted (only 1 to 3 are)."
        if self.capacity == 0:
            # qemu then opens the embedded descriptor as a descriptor file, extents and all.
            return ("VMDK images with a capacity of 0 are read by qemu as descriptor files, "
                    "which can refer to other files; they are not accepted.")
        if self.capacity * SECTOR > MAX_VIRTUAL_SIZE:
            return (f"The vmdk header declares a virtual size of {self.capacity * SECTOR} "
                    "bytes, more than any disk can have.")
        if self.descriptor_offset != 1:
            return ("VMDK descriptor is not at sector 1, where qemu reads it "
                    f"(the header says sector {self.descriptor_offset}).")
        if self.descriptor_sectors() is None:
            return (f"VMDK descriptor of {self.descriptor_size} sectors is outside the 1 to "
                    f"{_VMDK_DESCRIPTOR_MAX_SECTORS} sectors this service reads.")
        return None

    def footer_problem(self, tail: bytes) -> str | None:
        """Whether the footer qemu uses instead of this header (streamOptimized) matches it."""
        if len(tail) < 3 * SECTOR:
            return _cut_short("VMDK footer", len(tail), 3 * SECTOR)
        marker, footer, eos = tail[-1536:-1024], tail[-1024:-512], tail[-512:]
        if (
            _le(marker, 8, 4) != 0
            or _le(marker, 12, 4) != _VMDK_MARKER_FOOTER
            or footer[:4] != _VMDK_MAGIC
            or _le(eos, 0, 8) != 0
            or _le(eos, 8, 4) != 0
            or _le(eos, 12, 4) != _VMDK_MARKER_EOS
        ):
            return "VMDK footer or end-of-stream marker is invalid."
        other = _VMDKHeader.parse(footer)
        if other.gd_offset == _VMDK_GD_AT_END or attrs.evolve(
                other, gd_offset=self.gd_offset) != self:
            return "VMDK footer, which qemu reads instead of the header, does not match it."
        return None


def _vmdk_descriptor_problem(descriptor: bytes) -> str | None:
    """Why an embedded descriptor is refused: line by line, in time linear in its length."""
    # qemu and VMware read the descriptor as a C string.
    text = descriptor.split(b"\0", 1)[0].decode("ascii", "replace")
    if "parentfilenamehint" in text.lower():
        # qemu looks for it anywhere in the first 10 KiB (strstr) and opens it as backing file.
        return "VMDK images with a parent (backing) file are not accepted."
    create_types: list[str] = []
    extents: list[list[str]] = []
    for line in (raw.strip() for raw in text.split("\n")):
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if equals and key.strip().lower() == "createtype":
            create_types.append(value.strip().strip('"'))
        elif line.split(None, 1)[0].upper() in _VMDK_EXTENT_ACCESS:
            extents.append(line.split(None, 3))
    if len(set(create_types)) != 1 or create_types[0] not in _VMDK_CREATE_TYPES:
        kind = " / ".join(_printable(kind) for kind in dict.fromkeys(create_types))
        return f"VMDK createType '{kind or 'missing'}' is not accepted."
    if (
        len(extents) != 1
        or len(extents[0]) < 3
        or extents[0][2].upper() != "SPARSE"
        or any(c in "".join(extents[0][3:]) for c in "/\\")
    ):
        return ("VMDK images with extents other than their own sparse data are not "
                "accepted.")
    return None


def _is_vmdk_descriptor_text(header: bytes) -> bool:
    """A text VMDK descriptor: the usual comment line, or whatever qemu's probe accepts."""
    if header.lstrip().startswith(b"# Disk DescriptorFile"):
        return True
    buf, position = header[:2048], 0  # qemu probes the first 2 KiB
    while position < len(buf):
        if buf[position : position + 1] == b"#":
            newline = buf.find(b"\n", position)
            if newline < 0:
                return False
            position = newline + 1
        elif buf[position : position + 1] == b" ":
            while buf[position : position + 1] == b" ":
                position += 1
            if buf[position : position + 1] == b"\r":
                position += 1
            if buf[position : position + 1] != b"\n":
                return False
            position += 1
        else:
            return buf.startswith(_VMDK_TEXT_VERSIONS, position)
    return False


def _vhd(footer: bytes) -> Inspection:
    if len(footer) < SECTOR:
        return Inspection("vhd", None, _cut_short("VHD footer", len(footer), SECTOR))
    if _be(footer, 60, 4) == _VHD_DIFFERENCING:
        return Inspection("vhd", None, "VHD differencing disks refer to a parent disk in "
                          "another file; they are not accepted.")
    return _sized("vhd", _be(footer, 48, 8))


def _vdi(header: bytes) -> Inspection:
    if len(header) < _VDI_HEADER:
        return Inspection("vdi", None, _cut_short("VDI header", len(header), _VDI_HEADER))
    return _sized("vdi", _le(header, 0x170, 8))


def _vhdx_metadata_region(table: bytes) -> tuple[int, int] | str:
    """Offset and length of the metadata region, from the region table; or why not."""
    if len(table) < 16 or table[:4] != b"regi":
        return "The VHDX region table has no signature."
    count = _le(table, 8, 4)
    if count > _VHDX_REGION_ENTRIES:
        return (f"The VHDX region table lists {count} entries; this service reads at most "
                f"{_VHDX_REGION_ENTRIES}.")
    if len(table) < 16 + 32 * count:
        return _cut_short("VHDX region table", len(table), 16 + 32 * count)
    found: list[tuple[int, int]] = []
    for n in range(count):
        base = 16 + 32 * n
        if uuid.UUID(bytes_le=table[base : base + 16]) == _VHDX_METADATA_GUID:
            found.append((_le(table, base + 16, 8), _le(table, base + 24, 4)))
    if len(found) != 1:
        return f"The VHDX region table lists {len(found)} metadata regions, not one."
    offset, length = found[0]
    if length < _VHDX_METADATA_TABLE:
        return f"The VHDX metadata region is {length} bytes, too small for its table."
    return offset, length


def _vhdx_size_item(table: bytes, region_length: int) -> int | str:
    """Where the virtual disk size lies in the metadata region; or why it cannot be used."""
    if len(table) < 32 or table[:8] != b"metadata":
        return "The VHDX metadata table has no signature."
    count = _le(table, 10, 2)
    if count > _VHDX_METADATA_ENTRIES:
        return (f"The VHDX metadata table lists {count} items; this service reads at most "
                f"{_VHDX_METADATA_ENTRIES}.")
    if len(table) < 32 + 32 * count:
        return _cut_short("VHDX metadata table", len(table), 32 + 32 * count)
    size_at = None
    for n in range(count):
        base = 32 + 32 * n
        guid = uuid.UUID(bytes_le=table[base : base + 16])
        if guid == _VHDX_PARENT_LOCATOR_GUID:
            return ("VHDX differencing disks refer to a parent disk in another file; they "
                    "are not accepted.")
        if guid == _VHDX_VIRTUAL_DISK_SIZE_GUID and size_at is None:
            size_at = _le(table, base + 16, 4)
    if size_at is None:
        return "The VHDX metadata table has no virtual disk size."
    if size_at + 8 > region_length:
        return "The VHDX virtual disk size lies outside the metadata region."
    return size_at
