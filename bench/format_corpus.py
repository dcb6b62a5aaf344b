#!/usr/bin/env python3
"""
Format-inspection corpus: imaged's FormatInspector against oslo.utils' format_inspector (the one
Glance uses since CVE-2022-47951 / CVE-2024-32498) on the same bytes, fed chunk by chunk.

The corpus is built in a temporary directory: qemu-img images of each format (and hand-made
ISO, MBR and GPT raw disks), truncations of them at several lengths, and hostile mutations
(backing and data files, VMDK parents and extents, differencing VHD/VHDX, absurd sizes, counts
and offsets).  Each case gets a row: what a careful inspector should do (accept, refuse, or
either), imaged's verdict (format, virtual size, why refused), oslo's (format, virtual size,
safety check), whether they agree, and the time each took.  Then throughput (ms per MiB) and
peak traced memory of both on a large raw and qcow2 image fed in 1 MiB chunks.  Not a test:

    .venv/bin/python bench/format_corpus.py [--big 256] [--runs 3]

Only this script imports oslo_utils; imaged's own code does not.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
from oslo_utils.imageutils import format_inspector as oslo

from imaged.formats import SECTOR, FormatInspector, Inspection

MiB = 1024 * 1024
CHUNK = 64 * 1024  # what the table's cases are fed in
QEMU_IMG = "qemu-img"
VHDX_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VHDX_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")


# -- building the corpus -----------------------------------------------------------------------


def qemu_img(*args: str) -> None:
    subprocess.run([QEMU_IMG, *args], check=True, capture_output=True)


def qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run([QEMU_IMG, "info", "--output=json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    info: dict[str, object] = json.loads(out)
    return info


def made(tmp: Path, name: str, *create: str, size: str = "64M") -> bytes:
    qemu_img("create", "-q", *create, str(tmp / name), size)
    return (tmp / name).read_bytes()


def patched(data: bytes, offset: int, fmt: str, *values: int | bytes) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def iso_image(blocks: int = 64) -> bytes:
    """A minimal ISO 9660 image: 16 system sectors, then a primary volume descriptor."""
    pvd = bytearray(2048)
    pvd[0], pvd[1:6], pvd[6] = 1, b"CD001", 1
    struct.pack_into("<I", pvd, 80, blocks)
    struct.pack_into(">I", pvd, 84, blocks)
    struct.pack_into("<H", pvd, 128, 2048)
    struct.pack_into(">H", pvd, 130, 2048)
    return bytes(16 * 2048) + bytes(pvd) + bytes((blocks - 17) * 2048)


def mbr_disk(size: int = MiB, gpt: bool = False) -> bytes:
    """A raw disk with one MBR partition, or a protective MBR and a GPT header."""
    disk = bytearray(size)
    entry = (struct.pack("<B3BB3BII", 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, size // 512 - 1)
             if gpt else
             struct.pack("<B3BB3BII", 0x80, 0, 33, 0, 0x83, 0xFE, 0xFF, 0xFF, 2048, 2048))
    disk[446:462] = entry
    disk[510:512] = b"\x55\xaa"
    if gpt:
        disk[512:520] = b"EFI PART"
    return bytes(disk)


def vmdk_descriptor(data: bytes, text: bytes, sectors: int = 20) -> bytes:
    """``data`` (a sparse VMDK) with ``text`` as its descriptor of ``sectors`` sectors."""
    out = bytearray(patched(data, 36, "<Q", sectors))
    room = sectors * SECTOR
    out[SECTOR:SECTOR + room] = text[:room] + bytes(max(0, room - len(text)))
    return bytes(out) + bytes(max(0, SECTOR + room - len(out)))


def vmdk_footer(data: bytes, footer: bytes | None = None) -> bytes:
    """A streamOptimized VMDK whose grain directory is in a footer, as VMware writes them."""
    marker = struct.pack("<QII", 1, 0, 3) + bytes(496)
    return (patched(data, 56, "<Q", 2**64 - 1) + marker + (footer or data[:SECTOR])
            + bytes(SECTOR))


def vhdx_layout(data: bytes) -> tuple[int, int, int, int]:
    """Region table entry of the metadata, metadata table, its size entry, the size item."""
    table = 192 * 1024
    (count,) = struct.unpack_from("<I", data, table + 8)
    entry = next(table + 16 + 32 * n for n in range(count)
                 if uuid.UUID(bytes_le=data[table + 16 + 32 * n:][:16]) == VHDX_METADATA)
    (metadata,) = struct.unpack_from("<Q", data, entry + 16)
    (count,) = struct.unpack_from("<H", data, metadata + 10)
    item = next(metadata + 32 + 32 * n for n in range(count)
                if uuid.UUID(bytes_le=data[metadata + 32 + 32 * n:][:16]) == VHDX_VIRTUAL_DISK_SIZE)
    (offset,) = struct.unpack_from("<I", data, item + 16)
    return entry, metadata, item, metadata + offset


@attrs.frozen
class Case:
    name: str
    data: bytes
    #: What a careful inspector should do: "accept", "refuse", or "either" (harmless either way).
    should: str


def corpus(tmp: Path) -> Iterator[Case]:
    """Every case, legitimate ones first."""
    qcow2 = made(tmp, "v3.qcow2", "-f", "qcow2")
    sparse = made(tmp, "sparse.vmdk", "-f", "vmdk")
    stream = made(tmp, "stream.vmdk", "-f", "vmdk", "-o", "subformat=streamOptimized")
    dynamic = made(tmp, "dynamic.vhd", "-f", "vpc")
    vhdx = made(tmp, "disk.vhdx", "-f", "vhdx")
    vdi = made(tmp, "disk.vdi", "-f", "vdi")
    (tmp / "some.raw").write_bytes(os.urandom(3 * MiB))
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
             str(tmp / "some.raw"), str(tmp / "converted.vmdk"))

    yield Case("raw (zeros)", bytes(MiB), "accept")
    yield Case("raw MBR", mbr_disk(), "accept")
    yield Case("raw GPT", mbr_disk(gpt=True), "accept")
    yield Case("iso", iso_image(), "accept")
    yield Case("qcow2 v3", qcow2, "accept")
    yield Case("qcow2 v2", made(tmp, "v2.qcow2", "-f", "qcow2", "-o", "compat=0.10"), "accept")
    yield Case("vmdk monolithicSparse", sparse, "accept")
    yield Case("vmdk streamOptimized", stream, "accept")
    yield Case("vmdk streamOptimized 3M data", (tmp / "converted.vmdk").read_bytes(), "accept")
    yield Case("vmdk streamOptimized footer", vmdk_footer(stream), "accept")
    yield Case("vhd dynamic", dynamic, "accept")
    yield Case("vhd fixed", made(tmp, "fixed.vhd", "-f", "vpc", "-o", "subformat=fixed",
                                 size="16M"), "accept")
    yield Case("vhdx", vhdx, "accept")
    yield Case("vdi", vdi, "accept")

    # What CVE-2022-47951 and CVE-2024-32498 are about: reading host files.
    yield Case("qcow2 backing file", made(tmp, "b.qcow2", "-f", "qcow2", "-b", "/etc/passwd",
                                          "-F", "raw"), "refuse")
    yield Case("qcow2 external data file", made(
        tmp, "d.qcow2", "-f", "qcow2", "-o", f"data_file={tmp / 'd.raw'}"), "refuse")
    yield Case("vmdk monolithicFlat", made(tmp, "flat.vmdk", "-f", "vmdk", "-o",
                                           "subformat=monolithicFlat", size="16M"), "refuse")
    made(tmp, "base.vmdk", "-f", "vmdk", size="16M")
    child = made(tmp, "child.vmdk", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", size="16M")
    assert qemu_info(tmp / "child.vmdk").get("backing-filename") == "base.vmdk"
    yield Case("vmdk parentFileNameHint", child, "refuse")
    flat_line = b'RW 131072 FLAT "/etc/shadow" 0'
    start = sparse.index(b"RW ")
    end = sparse.index(b"\n", start)
    yield Case("vmdk sparse + FLAT extent", sparse[:start] + flat_line.ljust(end - start)
               + sparse[end:], "refuse")
    yield Case("vmdk SPARSE extent abs path", vmdk_descriptor(
        sparse, b'createType="monolithicSparse"\nRW 1 SPARSE "/var/lib/nova/x/disk"\n'),
        "refuse")
    capacity0 = vmdk_descriptor(patched(sparse, 12, "<Q", 0),
                                b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                                b'createType="monolithicFlat"\nRW 8 FLAT "/etc/hostname" 0\n')
    (tmp / "cap0.vmdk").write_bytes(capacity0)
    assert "hostname" in json.dumps(qemu_info(tmp / "cap0.vmdk"))  # qemu follows it
    yield Case("vmdk capacity 0 (descriptor file)", capacity0, "refuse")
    yield Case("vmdk text descr, no comment", b'version=1\ncreateType="monolithicFlat"\n'
               b'RW 8 FLAT "/etc/passwd" 0\n', "refuse")
    yield Case("vhd differencing", patched(dynamic, 60, ">I", 4), "refuse")
    entry, metadata, item, size_at = vhdx_layout(vhdx)
    yield Case("vhdx parent locator", patched(vhdx, item + 32, "16s",
                                              VHDX_PARENT_LOCATOR.bytes_le), "refuse")
    yield Case("qed with backing file", made(tmp, "b.qed", "-f", "qed", "-b", "/etc/passwd",
                                             "-F", "raw", size="16M"), "refuse")

    # Malformed: values no disk has, counts and offsets out of range, garbage text.
    yield Case("qcow2 size 2^64-1", patched(qcow2, 24, ">Q", 2**64 - 1), "refuse")
    yield Case("qcow2 version 1", patched(qcow2, 4, ">I", 1), "either")
    yield Case("qcow2 unknown incompat bit", patched(qcow2, 72, ">Q", 1 << 40), "either")
    yield Case("vmdk capacity 2^64-1", patched(sparse, 12, "<Q", 2**64 - 1), "refuse")
    yield Case("vmdk descriptor 2048 sectors", patched(sparse, 36, "<Q", 2048), "either")
    yield Case("vmdk descriptor at 2^63", patched(sparse, 28, "<Q", 2**63), "either")
    yield Case("vmdk version 4", patched(sparse, 4, "<I", 4), "either")
    yield Case("vmdk createType 5000 x \\x01", vmdk_descriptor(
        sparse, b'createType="' + b"\x01" * 5000 + b'"\nRW 1 SPARSE "a"\n'), "refuse")
    yield Case("vmdk descriptor 64K newlines", vmdk_descriptor(
        sparse, b'createType="monolithicSparse"\n' + b"\n" * 65000, 128), "either")
    yield Case("vmdk footer != header", vmdk_footer(
        stream, patched(stream[:SECTOR], 12, "<Q", 0)), "either")
    yield Case("vmdk footer missing", patched(stream, 56, "<Q", 2**64 - 1), "either")
    yield Case("vhd size 2^64-1", patched(dynamic, 48, ">Q", 2**64 - 1), "refuse")
    table = 192 * 1024
    yield Case("vhdx region count 2^32-1", patched(vhdx, table + 8, "<I", 2**32 - 1), "either")
    yield Case("vhdx metadata count 65535", patched(vhdx, metadata + 10, "<H", 0xFFFF), "either")
    yield Case("vhdx metadata at 2^64-1", patched(vhdx, entry + 16, "<Q", 2**64 - 1), "either")
    yield Case("vhdx metadata at 128K", patched(vhdx, entry + 16, "<Q", 0x20000), "either")
    yield Case("vhdx size item at 4G", patched(vhdx, item + 16, "<I", 0xFFFFFFF0), "either")
    yield Case("vhdx size 2^64-1", patched(vhdx, size_at, "<Q", 2**64 - 1), "refuse")
    yield Case("vdi size 2^64-1", patched(vdi, 0x170, "<Q", 2**64 - 1), "refuse")
    yield Case("qed", made(tmp, "plain.qed", "-f", "qed", size="16M"), "either")
    yield Case("qcow2 + iso polyglot", qcow2[:0x8000] + iso_image()[0x8000:], "either")

    # Truncations: the reliability review's case (a header cut short must not be a 500).
    for name, data, lengths in [
        ("qcow2", qcow2, (4, 8, 20, 71, 103, 512)),
        ("vmdk", sparse, (4, 20, 63, 600, 10000)),
        ("vhd", dynamic, (8, 50, 511)),
        ("vhdx", vhdx, (8, 4096, 200 * 1024, metadata + 100, size_at + 4)),
        ("vdi", vdi, (0x44, 0x100, 0x177)),
    ]:
        for length in lengths:
            yield Case(f"{name} cut at {length}", data[:length], "either")


# -- running both inspectors -------------------------------------------------------------------


@attrs.frozen
class Verdict:
    format: str
    virtual_size: int | None
    refused: str | None  # why, or None when accepted
    crashed: bool = False
    seconds: float = 0.0

    def shown(self, width: int) -> str:
        size = "-" if self.virtual_size is None else str(self.virtual_size)
        text = f"{self.format} {size} {'CRASH ' if self.crashed else ''}{self.refused or 'ok'}"
        return text if len(text) <= width else text[:width - 1] + "~"


def chunks_of(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def ours(chunks: list[bytes]) -> Verdict:
    started = time.perf_counter()
    try:
        inspector = FormatInspector()
        for chunk in chunks:
            inspector.feed(chunk)
        result: Inspection = inspector.result(sum(map(len, chunks)))
    except Exception as e:  # the bug this script looks for
        return Verdict("?", None, f"{type(e).__name__}: {e}", True,
                       time.perf_counter() - started)
    return Verdict(result.format, result.virtual_size, result.unsafe,
                   seconds=time.perf_counter() - started)


class ChunkSource(io.RawIOBase):
    """A file whose reads hand out ready-made chunks, so that reading costs nothing."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)

    def read(self, size: int = -1) -> bytes:
        return next(self._chunks, b"")


def oslo_verdict(chunks: list[bytes]) -> Verdict:
    """As Glance does: stream through InspectWrapper, take .format, run safety_check()."""
    started = time.perf_counter()
    try:
        wrapper = oslo.InspectWrapper(ChunkSource(chunks))  # type: ignore[arg-type]
        while wrapper.read(CHUNK):
            pass
        wrapper.close()
        try:
            found = wrapper.format
        except oslo.ImageFormatError as e:
            return Verdict("?", None, f"format: {e}", seconds=time.perf_counter() - started)
        assert found is not None  # closed: a decision is reached
        try:
            found.safety_check()
            refused = None
        except oslo.SafetyCheckFailed as e:
            refused = "; ".join(f"{k}: {v}" for k, v in e.failures.items())
        except oslo.ImageFormatError as e:
            refused = str(e)
        size = found.virtual_size
    except Exception as e:  # not documented by oslo: a crash
        return Verdict("?", None, f"{type(e).__name__}: {e}", True,
                       time.perf_counter() - started)
    return Verdict(found.NAME, size or None, refused, seconds=time.perf_counter() - started)


def oslo_file_format(path: Path) -> str:
    """``detect_file_format``: oslo's one-shot API, reading only as far as it needs."""
    try:
        found = oslo.detect_file_format(str(path))
    except oslo.ImageFormatError as e:
        return f"? ({e})"
    return found.NAME if found is not None else "none"


def same_format(a: Verdict, b: Verdict) -> bool:
    # oslo calls MBR/GPT-partitioned raw disks "gpt"; imaged calls them raw.
    return a.format == b.format or (a.format, b.format) == ("raw", "gpt")


def agreement(a: Verdict, b: Verdict) -> str:
    if (a.refused is None) != (b.refused is None):
        return "NO: verdict"
    if a.refused is None and not same_format(a, b):
        return "NO: format"
    if a.refused is None and a.virtual_size != b.virtual_size:
        return "size differs"
    return "yes"


def score(should: str, verdict: Verdict) -> str:
    """'' when the verdict is what a careful inspector does, else what is wrong with it."""
    if verdict.crashed:
        return "crash"
    if should == "accept" and verdict.refused is not None:
        return "refuses good"
    if should == "refuse" and verdict.refused is None:
        return "ACCEPTS BAD"
    return ""


def table(cases: list[Case], tmp: Path) -> None:
    wide = 50
    print(f"{'case':<34} {'should':<6} | {'imaged (format size unsafe)':<{wide}} | "
          f"{'oslo (format size safety)':<{wide}} | {'agree':<12} | ms ours/oslo")
    print("-" * (34 + 7 + 2 * wide + 40))
    wrong: dict[str, list[str]] = {"imaged": [], "oslo": []}
    disagree, file_mismatch = 0, []
    for case in cases:
        chunks = chunks_of(case.data)
        a, b = ours(chunks), oslo_verdict(chunks)
        agree = agreement(a, b)
        disagree += agree.startswith("NO")
        for who, verdict in (("imaged", a), ("oslo", b)):
            problem = score(case.should, verdict)
            if problem:
                wrong[who].append(f"{case.name} ({problem})")
        path = tmp / "case.img"
        path.write_bytes(case.data)
        file_format = oslo_file_format(path)
        if file_format != b.format and not file_format.startswith("?"):
            file_mismatch.append(f"{case.name}: streamed {b.format}, file {file_format}")
        print(f"{case.name:<34} {case.should:<6} | {a.shown(wide):<{wide}} | "
              f"{b.shown(wide):<{wide}} | {agree:<12} | "
              f"{a.seconds * 1000:.1f}/{b.seconds * 1000:.1f}")
    print()
    print(f"{len(cases)} cases; verdicts or formats differ on {disagree}.")
    for who, problems in wrong.items():
        print(f"{who}: {len(problems)} wrong: " + ("; ".join(problems) or "none"))
    if file_mismatch:
        print("oslo detect_file_format differs from its streamed InspectWrapper on: "
              + "; ".join(file_mismatch))


# -- speed and memory ---------------------------------------------------------------------------


def measure(run: Callable[[list[bytes]], Verdict], chunks: list[bytes],
            runs: int) -> tuple[float, int, Verdict]:
    """Best ms per MiB over ``runs``, then peak traced memory of one more run."""
    best, verdict = float("inf"), None
    for _ in range(runs):
        verdict = run(chunks)
        best = min(best, verdict.seconds)
    tracemalloc.start()
    run(chunks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert verdict is not None
    return best * 1000 / (sum(map(len, chunks)) / MiB), peak, verdict


def speed(tmp: Path, big: int, runs: int) -> None:
    block = os.urandom(MiB)
    raw_chunks = [block] * big  # one object: feeding allocates nothing but the inspectors
    with open(tmp / "big.raw", "wb") as f:
        for chunk in raw_chunks:
            f.write(chunk)
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp / "big.raw"), str(tmp / "big.qcow2"))
    (tmp / "big.raw").unlink()
    data = (tmp / "big.qcow2").read_bytes()
    qcow2_chunks = [data[i:i + MiB] for i in range(0, len(data), MiB)]
    del data
    print(f"\n{big} MiB fed in 1 MiB chunks (best of {runs}; peak = tracemalloc peak during one "
          "more run, chunks excluded):")
    print(f"{'image':<8} {'inspector':<8} {'ms/MiB':>8} {'MiB/s':>8} {'peak KiB':>9}  verdict")
    for name, chunks in (("raw", raw_chunks), ("qcow2", qcow2_chunks)):
        for who, run in (("imaged", ours), ("oslo", oslo_verdict)):
            per_mib, peak, verdict = measure(run, chunks, runs)
            print(f"{name:<8} {who:<8} {per_mib:>8.4f} {1000 / per_mib:>8.0f} "
                  f"{peak / 1024:>9.1f}  {verdict.shown(60)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=256, help="MiB for the speed runs")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("oslo_utils").setLevel(logging.CRITICAL + 1)  # its per-case warnings
    with tempfile.TemporaryDirectory(prefix="format-corpus-") as name:
        tmp = Path(name)
        table(list(corpus(tmp)), tmp)
        speed(tmp, args.big, args.runs)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
