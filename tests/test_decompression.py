"""
The streamed ``image_decompression`` plugin (``imaged.decompression``): formats, errors, bombs
and back-pressure.

Most tests run without a reactor: ``producer_of`` writes synchronously, so the decompressing
producer's ``Deferred`` has fired when ``startProducing`` returns.  A few run on the real
reactor, from a file through ``consume`` into a sink that answers later.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from imaged.decompression import (
    GZIP_MAGIC,
    HEADER_BYTES,
    ZIP_MAGIC,
    DecompressionError,
    decompresses,
    decompressing,
    detect,
)
from imaged.streams import consume
from imaged.testing import producer_of

KiB = 1024
MiB = 1024 * KiB


def sample(size: int, seed: int = 7) -> bytes:
    """Image-like data: compressible runs (text, zeros) between random stretches."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.randrange(3)
        length = rng.randrange(1, 256 * KiB)
        if kind == 0:
            part = rng.randbytes(length)
        elif kind == 1:
            part = (b"imaged sector %d " % rng.randrange(1000)) * (length // 20 + 1)
        else:
            part = bytes(length)
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


DATA = sample(5 * MiB)
DATA_GZ = gzip.compress(DATA, compresslevel=6)


def zipped(
    members: dict[str, bytes],
    method: int = zipfile.ZIP_DEFLATED,
    seekable: bool = True,
    force_zip64: bool = False,
) -> bytes:
    """A zip archive; written to a non-seekable stream its files get data descriptors."""
    out = io.BytesIO()
    target: Any = out if seekable else _Unseekable(out)
    with zipfile.ZipFile(target, "w", compression=method) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with archive.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self, out: io.BytesIO) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        return self._out.write(data)

    def tell(self) -> int:
        raise OSError("not seekable")

    def flush(self) -> None:
        pass


@implementer(IConsumer)
class Collector:
    """A consumer that keeps what it gets; ``pause_every`` pauses its producer after writes."""

    def __init__(self, pause_every: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.pause_every = pause_every
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.pause_every:
            self.producer.pauseProducing()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))


@implementer(IBodyProducer, IPushProducer)
class Spy:
    """A source that records how it is steered and how much it wrote."""

    def __init__(self, data: bytes, chunk: int = 64 * KiB) -> None:
        self._inner = producer_of(data, chunk)
        self.length = self._inner.length
        self.calls: list[str] = []
        self.written = 0

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        spy = self

        @implementer(IConsumer)
        class Counting:
            def registerProducer(self, producer: Any, streaming: bool) -> None:
                pass

            def unregisterProducer(self) -> None:
                pass

            def write(self, data: bytes) -> None:
                spy.written += len(data)
                consumer.write(data)

        d: Deferred[None] = self._inner.startProducing(Counting())
        return d

    def pauseProducing(self) -> None:
        self.calls.append("pause")
        self._inner.pauseProducing()

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        self._inner.resumeProducing()

    def stopProducing(self) -> None:
        self.calls.append("stop")
        self._inner.stopProducing()


def run(producer: IBodyProducer, consumer: Collector | None = None) -> tuple[Collector, list[Any]]:
    """Start ``producer``; the collector, and what its ``Deferred`` fired with (if it did)."""
    consumer = consumer or Collector()
    consumer.producer = producer
    outcome: list[Any] = []
    producer.startProducing(consumer).addBoth(outcome.append)
    return consumer, outcome


def decompressed(data: bytes, chunk: int = 64 * KiB, **limits: Any) -> bytes:
    consumer, outcome = run(decompressing(producer_of(data, chunk), **limits))
    assert outcome == [None], outcome
    return consumer.data


def refused(data: bytes, chunk: int = 64 * KiB, **limits: Any) -> DecompressionError:
    _, outcome = run(decompressing(producer_of(data, chunk), **limits))
    assert len(outcome) == 1 and isinstance(outcome[0], Failure), outcome
    error = outcome[0].value
    assert isinstance(error, DecompressionError), outcome[0]
    assert str(error) == error.message and error.message.endswith(".")
    return error


# -- detection ---------------------------------------------------------------------------------


def test_detect_matches_glance_magic_numbers() -> None:
    assert HEADER_BYTES == 5
    assert detect(gzip.compress(b"x")) == "gzip"
    assert detect(GZIP_MAGIC + b"\x08") == "gzip"
    assert detect(GZIP_MAGIC + b"\x07") is None  # not deflate: Glance passes it through too
    assert detect(zipped({"a": b"x"})) == "zip"
    assert detect(ZIP_MAGIC) == "zip"
    assert detect(b"PK\x05\x06") is None  # an empty archive: no file header
    assert detect(b"\x1a\x00-lh5-") == "lha"
    assert detect(b"QFI\xfb\x00\x00\x00\x03") is None
    assert detect(b"") is None
    assert detect(b"\x1f") is None


def test_compressed_container_format_is_left_alone() -> None:
    assert not decompresses("compressed")
    assert decompresses("bare")
    assert decompresses(None)


# -- what comes out ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [64 * KiB, 100_003, len(DATA_GZ)], ids=["64KiB", "odd", "whole"])
def test_gzip_in_any_chunking(chunk: int) -> None:
    producer = decompressing(producer_of(DATA_GZ, chunk))
    assert producer.length is UNKNOWN_LENGTH
    consumer, outcome = run(producer)
    assert outcome == [None]
    assert consumer.data == DATA
    assert max(map(len, consumer.chunks)) <= MiB


def test_gzip_seven_bytes_at_a_time() -> None:
    data = DATA[: 3 * MiB // 2]
    assert decompressed(gzip.compress(data), chunk=7) == data


def test_gzip_smaller_writes() -> None:
    consumer, outcome = run(decompressing(producer_of(DATA_GZ), chunk=10_000))
    assert outcome == [None] and consumer.data == DATA
    assert max(map(len, consumer.chunks)) <= 10_000


@pytest.mark.parametrize("chunk", [1, 5, 64 * KiB])
def test_multi_member_gzip(chunk: int) -> None:
    members = [b"first member\n", b"", sample(100 * KiB, seed=1), b"last"]
    data = b"".join(gzip.compress(m) for m in members)
    assert decompressed(data, chunk) == b"".join(members)
    # Zero bytes between and after members are padding, as for gzip.decompress.
    padded = gzip.compress(b"a") + bytes(10) + gzip.compress(b"b") + bytes(3)
    assert gzip.decompress(padded) == b"ab"
    assert decompressed(padded, chunk) == b"ab"


def test_gzip_with_a_file_name_header() -> None:
    out = io.BytesIO()
    with gzip.GzipFile("disk.raw", "wb", fileobj=out, mtime=0) as f:
        f.write(b"named")
    assert decompressed(out.getvalue(), chunk=3) == b"named"


ZIP_KINDS: dict[str, dict[str, Any]] = {
    "deflated": {},
    "stored": {"method": zipfile.ZIP_STORED},
    "deflated-descriptor": {"seekable": False},
    "stored-descriptor": {"method": zipfile.ZIP_STORED, "seekable": False},
    "deflated-zip64": {"force_zip64": True},
    "stored-zip64-descriptor": {"method": zipfile.ZIP_STORED, "seekable": False,
                                "force_zip64": True},
    "deflated-zip64-descriptor": {"seekable": False, "force_zip64": True},
}


@pytest.mark.parametrize("kind", ZIP_KINDS)
@pytest.mark.parametrize("chunk", [64 * KiB, 4099])
def test_zip_yields_its_file(kind: str, chunk: int) -> None:
    data = DATA[: 2 * MiB]
    archive = zipped({"disk.raw": data}, **ZIP_KINDS[kind])
    flags = struct.unpack_from("<H", archive, 6)[0]
    assert bool(flags & 0x08) == ("descriptor" in kind)
    assert zipfile.ZipFile(io.BytesIO(archive)).read("disk.raw") == data
    assert decompressed(archive, chunk) == data


def test_stored_zip_whose_data_holds_a_descriptor_signature() -> None:
    # The data descriptor of a stored file is found by its signature, CRC and size: the same
    # signature inside the data is data.
    data = b"PK\x07\x08" * 5000 + b"PK\x07\x08" + bytes(12) + b"tail"
    archive = zipped({"a": data}, method=zipfile.ZIP_STORED, seekable=False)
    assert decompressed(archive, chunk=1000) == data
    assert decompressed(archive, chunk=3) == data


@pytest.mark.parametrize("kind", ["deflated", "stored-descriptor", "deflated-descriptor"])
def test_zip_of_an_empty_file(kind: str) -> None:
    assert decompressed(zipped({"empty": b""}, **ZIP_KINDS[kind])) == b""


def test_zip_with_a_comment_and_trailing_bytes() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a", b"content")
        archive.comment = b"a comment"
    assert decompressed(out.getvalue() + b"after", chunk=5) == b"content"


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"\x1f", b"\x1f\x8b", b"PK", b"PK\x03", b"xx-l", b"xx-lx", b"\x1f\x8b\x07rest",
     b"QFI\xfb" + bytes(100), b"PK\x05\x06" + bytes(18)],
    ids=repr,
)
def test_plain_data_passes_through(data: bytes) -> None:
    for chunk in (1, 2, 64 * KiB):
        assert decompressed(data, chunk) == data


def test_plain_data_passes_through_without_limits() -> None:
    # The caps guard decompression; plain data is the blob store's to cap.
    data = sample(3 * MiB, seed=3)
    assert detect(data) is None
    assert decompressed(data, chunk=7777, max_output=MiB, max_ratio=1) == data


# -- refusals ----------------------------------------------------------------------------------


def test_corrupt_gzip() -> None:
    broken = bytearray(DATA_GZ)
    broken[len(broken) // 2 : len(broken) // 2 + 64] = bytes(64)
    assert "gzip data is corrupt" in refused(bytes(broken)).message


def test_gzip_with_a_wrong_checksum() -> None:
    data = bytearray(gzip.compress(b"hello, world"))
    data[-8] ^= 0xFF  # the CRC-32 in the trailer
    assert "corrupt" in refused(bytes(data)).message


def test_gzip_with_a_bad_header() -> None:
    assert "corrupt" in refused(b"\x1f\x8b\x08\xff" + bytes(20)).message


@pytest.mark.parametrize("cut", [10, 1000, len(DATA_GZ) // 2, len(DATA_GZ) - 1])
def test_truncated_gzip(cut: int) -> None:
    error = refused(DATA_GZ[:cut])
    assert error.message == "The gzip data is truncated."


def test_gzip_followed_by_garbage() -> None:
    refused(gzip.compress(b"x") + b"garbage")
    refused(gzip.compress(b"x") + b"\x1f")


@pytest.mark.parametrize("kind", ["deflated", "stored", "stored-descriptor",
                                  "deflated-descriptor"])
def test_truncated_zip(kind: str) -> None:
    data = random.Random(1).randbytes(200 * KiB) + DATA[: 100 * KiB]
    archive = zipped({"disk.raw": data}, **ZIP_KINDS[kind])
    central = archive.rindex(b"PK\x01\x02")
    end = archive.rindex(b"PK\x05\x06")
    assert detect(archive[:3]) is None  # too short to be told from plain data
    for cut in (4, 20, 40, 1000, central - 5, central, central + 10, end, end + 10):
        assert refused(archive[:cut]).message == "The zip archive is truncated.", cut


def test_zip_with_a_wrong_checksum() -> None:
    archive = bytearray(zipped({"a": b"some data " * 100}, method=zipfile.ZIP_STORED))
    archive[50] ^= 0xFF
    assert "CRC" in refused(bytes(archive)).message


def test_corrupt_deflated_zip() -> None:
    archive = bytearray(zipped({"a": DATA[:200 * KiB]}))
    archive[40:200] = bytes(160)
    assert "corrupt" in refused(bytes(archive)).message


def test_encrypted_zip_file() -> None:
    archive = bytearray(zipped({"secret": b"x" * 1000}))
    archive[6] |= 0x01  # the local header's general purpose flags: encrypted
    assert refused(bytes(archive)).message == "The zip archive's file is encrypted."


def test_zip_with_two_files() -> None:
    archive = zipped({"one": b"1" * 1000, "two": b"2" * 1000})
    assert "more than one file" in refused(archive).message
    for kind in ("stored", "deflated-descriptor", "stored-descriptor"):
        archive = zipped({"one": b"1" * 1000, "two": b"2"}, **ZIP_KINDS[kind])
        assert "more than one file" in refused(archive, chunk=100).message


def test_zip_whose_central_directory_lists_two_files() -> None:
    archive = zipped({"one": b"1" * 1000, "two": b"2" * 1000}, method=zipfile.ZIP_STORED)
    second = archive.index(ZIP_MAGIC, 4)
    central = archive.index(b"PK\x01\x02")
    # Without the second local header, the central directory still names two files.
    assert "more than one file" in refused(archive[:second] + archive[central:]).message


def test_zip_compressed_with_another_method() -> None:
    archive = zipped({"a": b"x" * 1000}, method=zipfile.ZIP_BZIP2)
    message = refused(archive).message
    assert "method 12 (bzip2)" in message


def test_zip_of_a_directory() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.mkdir("images")
    assert "directory" in refused(out.getvalue()).message


def test_lha_is_refused() -> None:
    assert refused(b"\x1a\x00-lh5-" + bytes(100)).message == "LHA archives are not supported."
    assert refused(b"\x1a\x00-lh5-", chunk=1).message == "LHA archives are not supported."


def test_refusal_stops_the_source() -> None:
    source = Spy(b"\x1a\x00-lh5-" + bytes(1 * MiB))
    consumer, outcome = run(decompressing(source))
    assert isinstance(outcome[0].value, DecompressionError)
    assert source.calls == ["stop"] and source.written == 64 * KiB
    assert consumer.chunks == []


# -- bombs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = gzip.compress(bytes(100 * MiB), compresslevel=9)
    assert len(data) < 200 * KiB
    return data


def test_bomb_past_max_output(bomb: bytes) -> None:
    cap = 10 * MiB
    source = Spy(bomb)
    consumer, outcome = run(decompressing(source, max_output=cap, max_ratio=None))
    error = outcome[0].value
    assert isinstance(error, DecompressionError)
    assert "more than 10485760 bytes" in error.message
    assert consumer.size <= cap
    assert source.calls[-1] == "stop"
    assert source.written <= 64 * KiB  # 10 MiB came from the first chunk


def test_bomb_in_zip_past_max_output() -> None:
    archive = zipped({"zeros": bytes(30 * MiB)}, seekable=False)
    consumer, outcome = run(
        decompressing(producer_of(archive), max_output=5 * MiB, max_ratio=None)
    )
    assert isinstance(outcome[0].value, DecompressionError)
    assert consumer.size <= 5 * MiB


def test_max_output_is_inclusive() -> None:
    data = DATA[:MiB]
    assert decompressed(gzip.compress(data), max_output=len(data)) == data
    assert "more than" in refused(gzip.compress(data), max_output=len(data) - 1).message


def test_bomb_past_max_ratio(bomb: bytes) -> None:
    source = Spy(bomb)
    consumer, outcome = run(decompressing(source, max_ratio=100))
    error = outcome[0].value
    assert isinstance(error, DecompressionError)
    assert "100 times" in error.message
    assert consumer.size <= 2 * MiB  # the grace, then the first chunk over the ratio
    assert source.calls[-1] == "stop"


def test_ordinary_data_is_no_bomb() -> None:
    assert decompressed(DATA_GZ, max_output=len(DATA), max_ratio=10) == DATA


def test_zeros_are_past_a_ratio_of_1000() -> None:
    # Deflate inflates zeros about 1030 times: the default ratio refuses a long run of them.
    zeros = gzip.compress(bytes(20 * MiB))
    assert "1000 times" in refused(zeros).message
    assert decompressed(zeros, max_ratio=None) == bytes(20 * MiB)
    assert decompressed(zeros, max_ratio=2000) == bytes(20 * MiB)


# -- back-pressure -----------------------------------------------------------------------------


def test_a_paused_consumer_pauses_the_source(bomb: bytes) -> None:
    source = Spy(bomb, chunk=16 * KiB)
    producer = decompressing(source, max_ratio=None)
    consumer, outcome = run(producer, Collector(pause_every=True))
    # One chunk of input inflates to far more than one write: the rest waits, compressed.
    assert len(consumer.chunks) == 1 and len(consumer.chunks[0]) == MiB
    assert source.calls == ["pause"]
    assert source.written == 16 * KiB
    assert outcome == []
    written = source.written
    for _ in range(5):
        producer.resumeProducing()
    assert len(consumer.chunks) == 6  # one write a resume, from what was held
    assert source.written == written and source.calls == ["pause"]
    consumer.pause_every = False
    producer.resumeProducing()
    assert outcome == [None]
    assert consumer.size == 100 * MiB and consumer.data.count(0) == 100 * MiB
    assert source.calls[0] == "pause" and "resume" in source.calls


@pytest.mark.parametrize("data", [DATA_GZ, zipped({"a": DATA}, seekable=False), DATA],
                         ids=["gzip", "zip", "plain"])
def test_pausing_after_every_write(data: bytes) -> None:
    source = Spy(data)
    producer = decompressing(source)
    consumer, outcome = run(producer, Collector(pause_every=True))
    writes = 0
    while not outcome:
        assert len(consumer.chunks) == writes + 1  # nothing more until resumed
        writes += 1
        assert source.calls[-1] == "pause"
        producer.resumeProducing()
    assert outcome == [None]
    assert consumer.data == DATA
    assert source.calls.count("pause") >= 2 and source.calls.count("resume") >= 1


def test_pausing_before_the_source_ends() -> None:
    # The source finishes while output is still held: the Deferred waits for the resume.
    data = DATA[: 3 * MiB]
    producer = decompressing(producer_of(gzip.compress(data), chunk=10 * MiB))
    consumer, outcome = run(producer, Collector(pause_every=True))
    assert outcome == [] and len(consumer.chunks) == 1 and consumer.size < len(data)
    consumer.pause_every = False
    producer.resumeProducing()
    assert outcome == [None] and consumer.data == data


def test_stop_reaches_the_source() -> None:
    source = Spy(DATA_GZ)
    producer = decompressing(source)
    consumer, outcome = run(producer, Collector(pause_every=True))
    producer.stopProducing()
    assert source.calls == ["pause", "stop"]
    producer.resumeProducing()
    assert len(consumer.chunks) == 1
    assert outcome == []  # stopped: never fires, as IBodyProducer says


def test_source_failure_is_reported() -> None:
    @implementer(IBodyProducer)
    class Failing:
        length = UNKNOWN_LENGTH

        def startProducing(self, consumer: IConsumer) -> Deferred[None]:
            consumer.write(gzip.compress(b"x")[:5])
            return fail(OSError("disk on fire"))

        def pauseProducing(self) -> None:
            pass

        def resumeProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            pass

    _, outcome = run(decompressing(Failing()))
    assert isinstance(outcome[0].value, OSError)


# -- with the reactor, through consume ---------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("compress", ["gzip", "zip"])
async def test_file_through_consume_into_a_slow_sink(tmp_path: Path, compress: str) -> None:
    path = tmp_path / "image"
    path.write_bytes(DATA_GZ if compress == "gzip" else zipped({"a": DATA}))
    received: list[bytes] = []

    def write_chunk(data: bytes) -> Deferred[None]:
        received.append(data)
        return deferLater(reactor, 0.001, lambda: None)

    with path.open("rb") as f:
        source = FileBodyProducer(f, readSize=32 * KiB)
        size = await consume(decompressing(source), write_chunk, chunk=256 * KiB,
                             high_water=MiB)
    assert size == len(DATA) and b"".join(received) == DATA


@pytest_twisted.ensureDeferred
async def test_consume_reports_a_bomb(tmp_path: Path, bomb: bytes) -> None:
    path = tmp_path / "bomb.gz"
    path.write_bytes(bomb)
    received: list[bytes] = []

    def write_chunk(data: bytes) -> Deferred[None]:
        received.append(data)
        return deferLater(reactor, 0, lambda: None)

    with path.open("rb") as f:
        source = FileBodyProducer(f, readSize=32 * KiB)
        with pytest.raises(DecompressionError):
            await consume(decompressing(source, max_output=8 * MiB, max_ratio=None),
                          write_chunk)
    assert sum(map(len, received)) <= 8 * MiB


def test_zlib_agrees_with_gzip_on_the_sample() -> None:
    assert zlib.decompress(DATA_GZ, 16 + zlib.MAX_WBITS) == DATA
