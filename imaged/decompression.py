"""
Glance's ``image_decompression`` import plugin, streamed: gzip and zip data inflated as it flows.

Glance's plugin decompresses an imported image file on disk after it is staged.  imaged never
holds an image whole: its bytes arrive as an ``IBodyProducer`` and flow into a blob store with
back-pressure, so ``decompressing`` wraps that producer in another that inflates on the way,
keeping Glance's behaviour where a stream allows it:

* The format is found from the first bytes, by Glance's magic numbers: zip (``PK\\x03\\x04``),
  LHA (``-lh`` at offset 2) and gzip (``\\x1f\\x8b`` with compression method 8, deflate).
  Anything else passes through unchanged.
* gzip: every member (a multi-member file decompresses to their concatenation, zero padding
  between members is skipped), checked against each member's CRC and size, as ``gzip`` does.
* zip: the archive must hold exactly one file, as Glance requires; that file is streamed from
  its local header (stored or deflated), checked against its CRC and sizes, and the rest of the
  archive (central directory, end record) is read to find a second file or a truncation.
  Encrypted files and other compression methods are refused.
* LHA: Glance needs the optional ``lhafile`` module (and fails without it), which reads a whole
  file from disk; neither it nor the standard library can decode LHA as a stream, so LHA
  archives are refused.
* Glance leaves images whose ``container_format`` is ``compressed`` as they are: callers ask
  ``decompresses(container_format)`` before wrapping a producer.

Decompression adds what Glance's plugin lacks: a decompression bomb (output beyond the image
size cap, or beyond ``max_ratio`` times its input) fails as soon as it is detected, and a
consumer that pauses stops the source, however much one input chunk inflates to.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

GZIP_MAGIC = b"\x1f\x8b"
#: gzip's compression method byte (after the magic) for deflate, the only one defined; Glance
#: matches it as part of the magic number.
GZIP_DEFLATE = b"\x08"
ZIP_MAGIC = b"PK\x03\x04"
LHA_MAGIC = b"-lh"
LHA_OFFSET = 2
#: The ``container_format`` of images Glance does not decompress.
COMPRESSED_CONTAINER = "compressed"

#: (offset, magic, format), as Glance matches them; at most one can match any data.
_MAGICS = (
    (0, ZIP_MAGIC, "zip"),
    (LHA_OFFSET, LHA_MAGIC, "lha"),
    (0, GZIP_MAGIC + GZIP_DEFLATE, "gzip"),
)
#: The most bytes detection needs.
HEADER_BYTES = max(offset + len(magic) for offset, magic, _ in _MAGICS)

#: The most bytes written to the consumer at once.
CHUNK = 1024 * 1024
#: Output below this size is never a decompression bomb by ratio (a first megabyte of zeros
#: inflates from a kilobyte).
RATIO_GRACE = 1024 * 1024
#: The most compressed bytes handed to zlib in one call (so that what zlib leaves unconsumed,
#: which it copies every call, stays small however large the source's writes are).
_INPUT_STEP = 64 * 1024


class DecompressionError(Exception):
    """The data cannot be decompressed; the message says why, fit for an import task's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def detect(first_bytes: bytes) -> str | None:
    """
    The compression format of data starting with ``first_bytes``: ``"gzip"``, ``"zip"``,
    ``"lha"`` or ``None`` (not compressed, or too few bytes to match a magic number: give at
    least ``HEADER_BYTES`` when there are that many).
    """
    for offset, magic, name in _MAGICS:
        if first_bytes.startswith(magic, offset):
            return name
    return None


def _undecided(prefix: bytes) -> bool:
    """Whether more bytes could make ``prefix`` match a magic number it does not match yet."""
    for offset, magic, _ in _MAGICS:
        if len(prefix) < offset + len(magic):
            seen = prefix[offset:]
            if magic.startswith(seen):
                return True
    return False


def decompresses(container_format: str | None) -> bool:
    """Whether Glance's plugin decompresses images of this container format (not "compressed")."""
    return container_format != COMPRESSED_CONTAINER


def decompressing(
    producer: IBodyProducer,
    max_output: int | None = None,
    max_ratio: int | None = 1000,
    chunk: int = CHUNK,
) -> IBodyProducer:
    """
    A producer of ``producer``'s bytes, decompressed if they start with a gzip or zip header,
    passed through unchanged otherwise (its ``length`` is ``UNKNOWN_LENGTH`` either way).

    The format is detected from the first bytes (at most ``HEADER_BYTES`` are held for it).
    gzip, including multi-member files, is inflated chunk by chunk; of a zip archive, its only
    file is streamed (stored or deflated, sizes in the local header or in a data descriptor
    after the data).

    The returned producer's ``Deferred`` fails with ``DecompressionError``, and the source is
    stopped, for corrupt or truncated data, LHA archives, zip archives with more than one file,
    an encrypted file or an unsupported method, and for decompressed output beyond
    ``max_output`` bytes (none of which reaches the consumer) or beyond ``max_ratio`` times
    the compressed bytes read once past ``RATIO_GRACE`` (``None``: no ratio check).  Deflate
    inflates at most about 1032 times, so a ratio near 1000 refuses only data that is almost
    all one byte value (an image of a large empty disk, too).  Plain data is not capped here.

    Output is written in pieces of at most ``chunk`` bytes, and none while the consumer has
    the producer paused: the source is paused meanwhile, and what one of its chunks inflates
    to beyond that waits, still compressed, for a resume.  Pausing, resuming and stopping
    reach the source.
    """
    return _DecompressingProducer(producer, max_output, max_ratio, chunk)


# -- decoders: bytes in, bytes out, no Twisted --------------------------------------------------


class _Decoder(Protocol):
    #: Input bytes used so far (for the ratio check).
    consumed: int

    def feed(self, data: bytes) -> None:
        """Take more input (may raise ``DecompressionError``)."""

    def read(self, limit: int) -> bytes:
        """
        At most ``limit`` bytes of output; empty when the input given so far yields no more
        (may raise ``DecompressionError``).
        """

    def finish(self) -> None:
        """The input has ended: raise ``DecompressionError`` unless it was complete."""


def _zlib_detail(error: zlib.error) -> str:
    # "Error -3 while decompressing data: invalid block type" -> "invalid block type"
    return str(error).rpartition(": ")[2] or str(error)


class _Plain:
    """The identity, for data that is not compressed."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.consumed = 0

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)

    def read(self, limit: int) -> bytes:
        if not self._chunks:
            return b""
        data = self._chunks[0]
        if len(data) > limit:
            self._chunks[0] = data[limit:]
            data = data[:limit]
        else:
            del self._chunks[0]
        self.consumed += len(data)
        return data

    def finish(self) -> None:
        pass


class _Gzip:
    """gzip members, one after another (zero bytes between them are padding, as for gzip)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._member: Any = None  # zlib's decompressor of the current member; None between
        self.consumed = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def read(self, limit: int) -> bytes:
        buffer = self._buffer
        while True:
            if self._member is None:
                padding = len(buffer) - len(buffer.lstrip(b"\x00"))
                del buffer[:padding]
                self.consumed += padding
                if not buffer:
                    return b""
                self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if not buffer:
                return b""
            step = bytes(buffer[:_INPUT_STEP])
            try:
                out: bytes = self._member.decompress(step, limit)
            except zlib.error as e:
                raise DecompressionError(
                    f"The gzip data is corrupt: {_zlib_detail(e)}."
                ) from None
            ended = self._member.eof
            left = self._member.unused_data if ended else self._member.unconsumed_tail
            used = len(step) - len(left)
            del buffer[:used]
            self.consumed += used
            if ended:
                self._member = None
            if out:
                return out
            if not used and not ended:
                return b""

    def finish(self) -> None:
        if self._member is not None:
            raise DecompressionError("The gzip data is truncated.")


_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # signature .. extra field length: 30 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_END = struct.Struct("<4sHHHHIIH")  # 22 bytes
_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_SIGNATURE_SIGNATURE = b"PK\x05\x05"  # the central directory's digital signature record
_ENCRYPTED = 0x0001 | 0x0040  # traditional and strong encryption
_DATA_DESCRIPTOR = 0x0008
_STORED, _DEFLATED = 0, 8
_METHODS = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd",
            95: "xz", 98: "ppmd", 99: "AES encryption"}
_State = Callable[[int], "bytes | None"]
_MULTIPLE = ("The zip archive holds more than one file; an image must be the only file in "
             "its archive.")
_TRUNCATED = "The zip archive is truncated."


class _Zip:
    """
    The only file of a zip archive, read front to back: local header, data (and its data
    descriptor), then the records after it, to the end of central directory record.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.consumed = 0
        self._state: _State = self._local_header
        self._then: _State = self._local_header  # after a skip
        self._skip = 0
        self._need = 0  # of the local header's name and extra field
        self._name_length = 0
        self._method = _STORED
        self._descriptor = False
        self._zip64 = False
        self._crc = 0  # expected, from the local header
        self._compressed = 0  # expected
        self._size = 0  # expected
        self._inflate: Any = None
        self._read_in = 0  # compressed bytes of the file read so far
        self._out = 0  # bytes of the file produced so far
        self._out_crc = 0
        self._central = 0  # central directory entries seen
        self._ended = False

    def feed(self, data: bytes) -> None:
        if self._ended:
            self.consumed += len(data)  # what follows the archive's end: ignored, as zipfile does
        else:
            self._buffer += data

    def read(self, limit: int) -> bytes:
        while True:
            out = self._state(limit)
            if out is None:
                return b""
            if out:
                return out

    def finish(self) -> None:
        if not self._ended:
            raise DecompressionError(_TRUNCATED)

    # Each state takes what it can from the buffer: None when it needs more input, b"" when it
    # moved on without output, else output.

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self.consumed += count
        return data

    def _skip_then(self, count: int, then: _State) -> bytes:
        self._skip = count
        self._then = then
        self._state = self._skipping
        return b""

    def _skipping(self, limit: int) -> bytes | None:
        count = min(self._skip, len(self._buffer))
        self._take(count)
        self._skip -= count
        if self._skip:
            return None
        self._state = self._then
        return b""

    def _local_header(self, limit: int) -> bytes | None:
        if len(self._buffer) < _LOCAL.size:
            return None
        (signature, _, flags, method, _, _, crc, compressed, size, name_length,
         extra_length) = _LOCAL.unpack(self._take(_LOCAL.size))
        if signature != ZIP_MAGIC:
            raise DecompressionError("The zip archive is corrupt: no file header.")
        if flags & _ENCRYPTED:
            raise DecompressionError("The zip archive's file is encrypted.")
        if method not in (_STORED, _DEFLATED):
            name = _METHODS.get(method)
            raise DecompressionError(
                f"The zip archive's file is compressed with method {method}"
                + (f" ({name})" if name else "")
                + "; only stored and deflated files are supported."
            )
        self._method = method
        self._descriptor = bool(flags & _DATA_DESCRIPTOR)
        self._crc, self._compressed, self._size = crc, compressed, size
        self._need = name_length + extra_length
        self._name_length = name_length
        self._state = self._local_names
        return b""

    def _local_names(self, limit: int) -> bytes | None:
        if len(self._buffer) < self._need:
            return None
        names = self._take(self._need)
        name, extra = names[: self._name_length], names[self._name_length :]
        if name.endswith(b"/"):
            raise DecompressionError("The zip archive holds a directory, not an image file.")
        self._read_zip64(extra)
        if self._method == _DEFLATED:
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self._state = self._inflating
        elif self._descriptor:
            self._state = self._scanning
        else:
            if self._compressed != self._size:
                raise DecompressionError("The zip archive is corrupt: bad sizes.")
            self._state = self._stored
        return b""

    def _read_zip64(self, extra: bytes) -> None:
        position = 0
        while position + 4 <= len(extra):
            kind, length = struct.unpack_from("<HH", extra, position)
            field = extra[position + 4 : position + 4 + length]
            position += 4 + length
            if kind != 1:
                continue
            self._zip64 = True
            values = [field[i : i + 8] for i in range(0, len(field) - 7, 8)]
            if self._size == 0xFFFFFFFF:
                if not values:
                    raise DecompressionError("The zip archive is corrupt: bad zip64 sizes.")
                self._size = int.from_bytes(values.pop(0), "little")
            if self._compressed == 0xFFFFFFFF:
                if not values:
                    raise DecompressionError("The zip archive is corrupt: bad zip64 sizes.")
                self._compressed = int.from_bytes(values.pop(0), "little")

    def _produced(self, data: bytes) -> bytes:
        self._out += len(data)
        self._out_crc = zlib.crc32(data, self._out_crc)
        return data

    def _check(self) -> None:
        """The file's data has ended: it must be what its header or data descriptor says."""
        if self._read_in != self._compressed or self._out != self._size:
            raise DecompressionError("The zip archive is corrupt: its file's size is wrong.")
        if self._out_crc != self._crc:
            raise DecompressionError("The zip archive is corrupt: its file's CRC is wrong.")

    def _stored(self, limit: int) -> bytes | None:
        left = self._size - self._out
        if not left:
            self._check()
            self._state = self._after
            return b""
        count = min(left, limit, len(self._buffer))
        if not count:
            return None
        self._read_in += count
        return self._produced(self._take(count))

    def _inflating(self, limit: int) -> bytes | None:
        allowed = _INPUT_STEP
        if not self._descriptor:
            allowed = min(allowed, self._compressed - self._read_in)
            if allowed <= 0:
                raise DecompressionError("The zip archive is corrupt: its file's data is bad.")
        step = bytes(self._buffer[:allowed])
        if not step:
            return None
        try:
            out: bytes = self._inflate.decompress(step, limit)
        except zlib.error as e:
            raise DecompressionError(f"The zip archive is corrupt: {_zlib_detail(e)}.") from None
        ended = self._inflate.eof
        left = self._inflate.unused_data if ended else self._inflate.unconsumed_tail
        used = len(step) - len(left)
        self._take(used)
        self._read_in += used
        self._produced(out)
        if ended:
            self._inflate = None
            if self._descriptor:
                self._state = self._data_descriptor
            else:
                self._check()
                self._state = self._after
            return out
        if not out and not used:
            return None
        return out

    def _descriptor_size(self) -> int:
        return 24 if self._zip64 else 16  # with its (optional) signature

    def _data_descriptor(self, limit: int) -> bytes | None:
        size = self._descriptor_size()
        if len(self._buffer) < size:
            return None  # the central directory follows, so these bytes come (or a truncation)
        signed = self._buffer.startswith(_DESCRIPTOR_SIGNATURE)
        if not signed:
            size -= 4
        sizes = "<IQQ" if self._zip64 else "<III"
        self._crc, self._compressed, self._size = struct.unpack(
            sizes, self._take(size)[4 if signed else 0 :]
        )
        self._check()
        self._state = self._after
        return b""

    def _scanning(self, limit: int) -> bytes | None:
        """
        A stored file whose size is in a data descriptor after it: its data ends where a
        signed descriptor holding the CRC and size of the data before it starts.
        """
        size = self._descriptor_size()
        fields = struct.Struct("<IQQ" if self._zip64 else "<III")
        buffer = self._buffer
        safe = max(0, len(buffer) - (len(_DESCRIPTOR_SIGNATURE) - 1))
        start = 0
        while (found := buffer.find(_DESCRIPTOR_SIGNATURE, start)) >= 0:
            if found + size > len(buffer):
                safe = found
                break
            crc, compressed, uncompressed = fields.unpack_from(buffer, found + 4)
            total = self._out + found
            if (
                compressed == uncompressed == total
                and crc == zlib.crc32(buffer[:found], self._out_crc)
            ):
                if found == 0:
                    self._take(size)
                    self._crc, self._compressed, self._size = crc, compressed, uncompressed
                    self._read_in = self._out
                    self._check()
                    self._state = self._after
                    return b""
                safe = found
                break
            start = found + 1
        count = min(safe, limit)
        if not count:
            return None
        return self._produced(self._take(count))

    def _after(self, limit: int) -> bytes | None:
        """The records after the file, up to the end of central directory record."""
        if len(self._buffer) < 4:
            return None
        signature = bytes(self._buffer[:4])
        if signature == ZIP_MAGIC:
            raise DecompressionError(_MULTIPLE)
        if signature == _CENTRAL_SIGNATURE:
            if len(self._buffer) < _CENTRAL.size:
                return None
            fields = _CENTRAL.unpack(self._take(_CENTRAL.size))
            self._central += 1
            if self._central > 1:
                raise DecompressionError(_MULTIPLE)
            return self._skip_then(fields[10] + fields[11] + fields[12], self._after)
        if signature == _ZIP64_END_SIGNATURE:
            if len(self._buffer) < 12:
                return None
            (size,) = struct.unpack("<Q", self._take(12)[4:])
            return self._skip_then(size, self._after)
        if signature == _ZIP64_LOCATOR_SIGNATURE:
            return self._skip_then(20, self._after)
        if signature == _SIGNATURE_SIGNATURE:
            if len(self._buffer) < 6:
                return None
            (size,) = struct.unpack("<H", self._take(6)[4:])
            return self._skip_then(size, self._after)
        if signature == _END_SIGNATURE:
            if len(self._buffer) < _END.size:
                return None
            fields = _END.unpack(self._take(_END.size))
            if fields[4] > 1 and fields[4] != 0xFFFF:
                raise DecompressionError(_MULTIPLE)
            # The end; its comment and anything after it are ignored, as zipfile does.
            self._ended = True
            self.consumed += len(self._buffer)
            del self._buffer[:]
            self._state = self._end
            return None
        raise DecompressionError("The zip archive is corrupt: unknown record after its file.")

    def _end(self, limit: int) -> bytes | None:
        return None


class _Sniffer:
    """Holds the first bytes until they show the format, then decodes with its decoder."""

    def __init__(self) -> None:
        self._head = b""
        self._decoder: _Decoder | None = None
        #: The format found ("gzip", "zip"), None for data passed through; set once decided.
        self.format: str | None = None

    @property
    def consumed(self) -> int:
        return 0 if self._decoder is None else self._decoder.consumed

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            self._decoder.feed(data)
            return
        self._head += data
        found = detect(self._head)
        if found is not None or not _undecided(self._head):
            self._start(found)

    def _start(self, found: str | None) -> None:
        if found == "lha":
            raise DecompressionError("LHA archives are not supported.")
        self.format = found
        decoder: _Decoder = _Gzip() if found == "gzip" else _Zip() if found == "zip" else _Plain()
        decoder.feed(self._head)
        self._head = b""
        self._decoder = decoder

    def read(self, limit: int) -> bytes:
        return b"" if self._decoder is None else self._decoder.read(limit)

    def settle(self) -> bool:
        """The input has ended: decide on the bytes held, if undecided (True then)."""
        if self._decoder is not None:
            return False
        self._start(detect(self._head))
        return True

    def finish(self) -> None:
        assert self._decoder is not None, "settle() first"
        self._decoder.finish()


# -- the producer ---------------------------------------------------------------------------------


@implementer(IBodyProducer, IPushProducer)
class _DecompressingProducer:
    def __init__(
        self,
        source: IBodyProducer,
        max_output: int | None,
        max_ratio: int | None,
        chunk: int,
    ) -> None:
        self.length = UNKNOWN_LENGTH
        self._source = source
        self._max_output = max_output
        self._max_ratio = max_ratio
        self._chunk = chunk
        self._decoder = _Sniffer()
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._produced = 0
        self._paused = False  # by our consumer
        self._source_paused = False  # by us
        self._source_done = False
        self._stopped = False  # by our consumer
        self._over = False  # our Deferred has fired
        self._pumping = False

    # IBodyProducer / IPushProducer

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done: Deferred[None] = Deferred()
        self._done = done
        started: Deferred[None] = maybeDeferred(self._source.startProducing, _Intake(self))
        started.addCallbacks(self._source_finished, self._source_failed)
        return done

    def pauseProducing(self) -> None:
        self._paused = True
        self._pause_source()

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """Stop for good, the source too; the ``Deferred`` from ``startProducing`` never fires."""
        if self._stopped:
            return
        self._stopped = True
        self._decoder = _Sniffer()  # drop what is held
        if not (self._over or self._source_done):
            self._source.stopProducing()

    # the source's side

    def received(self, data: bytes) -> None:
        if self._stopped or self._over:
            return
        try:
            self._decoder.feed(data)
        except DecompressionError as e:
            self._fail(e)
            return
        if self._pumping or self._paused:
            # Held until the loop that is running (or a resume) gets to it; nothing more now.
            self._pause_source()
        else:
            self._pump()

    def _source_finished(self, _: object) -> None:
        self._source_done = True
        self._pump()

    def _source_failed(self, failure: Failure) -> None:
        self._source_done = True
        if not (self._stopped or self._over):
            self._finish(failure)

    def _pause_source(self) -> None:
        if not (self._source_paused or self._source_done or self._over or self._stopped):
            self._source_paused = True
            self._source.pauseProducing()

    # moving bytes

    def _pump(self) -> None:
        """Write what the input held yields until the consumer pauses or more input is needed."""
        if self._pumping or self._done is None:
            return
        self._pumping = True
        try:
            while not (self._stopped or self._over or self._paused):
                out = self._read()
                if out:
                    assert self._consumer is not None
                    self._consumer.write(out)
                elif self._source_done:
                    if not self._decoder.settle():  # else what was held is output next
                        self._decoder.finish()
                        self._finish(None)
                elif self._source_paused:
                    self._source_paused = False
                    self._source.resumeProducing()  # may write at once: received() holds it
                else:
                    break
            if self._paused:
                self._pause_source()
        except DecompressionError as e:
            self._fail(e)
        finally:
            self._pumping = False

    def _read(self) -> bytes:
        decoder = self._decoder
        limit = self._chunk
        decompressing = decoder.format is not None
        if decompressing and self._max_output is not None:
            limit = min(limit, self._max_output - self._produced + 1)
        out = decoder.read(limit)
        if decoder.format is None:
            return out
        self._produced += len(out)
        if self._max_output is not None and self._produced > self._max_output:
            raise DecompressionError(
                f"The {decoder.format} data decompresses to more than {self._max_output} "
                "bytes, the most an image may have."
            )
        if (
            self._max_ratio is not None
            and self._produced > RATIO_GRACE
            and self._produced > self._max_ratio * decoder.consumed
        ):
            raise DecompressionError(
                f"The {decoder.format} data decompresses to more than {self._max_ratio} times "
                "its size, which looks like a decompression bomb."
            )
        return out

    def _fail(self, error: DecompressionError) -> None:
        if self._over:
            return
        if not self._source_done:
            self._source_done = True  # as far as we care: nothing more is taken from it
            try:
                self._source.stopProducing()
            except Exception:
                pass
        self._decoder = _Sniffer()
        self._finish(Failure(error))

    def _finish(self, failure: Failure | None) -> None:
        self._over = True
        done, self._done = self._done, None
        if done is None:
            return
        if failure is None:
            done.callback(None)
        else:
            done.errback(failure)


@implementer(IConsumer)
class _Intake:
    """The consumer the source writes to."""

    def __init__(self, producer: _DecompressingProducer) -> None:
        self._producer = producer

    # The source is steered by the decompressing producer, never by the final consumer.
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self._producer.received(data)
