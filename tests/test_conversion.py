"""
Converting images with qemu-img (``imaged.conversion``), with the real qemu-img of qemu-utils.

Images are small (8 MiB virtual) and made by qemu-img itself from a raw pattern, so every
conversion's content is checked (``qemu-img compare``, or the raw bytes).  Images that point
outside themselves (backing file, external data file, flat VMDK extents) and images that are not
what they claim must be refused before ``qemu-img convert`` runs.  Fake qemu-img scripts, which
hand over to the real one where they can, show the limits and environment the child gets, and
give the deadline and cancellation something to kill: the only waiting in this module is for a
sleeping fake that the deadline (1 s) kills.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import CancelledError, Deferred

from imaged.conversion import (
    QEMU_FORMATS,
    ConversionError,
    ConversionLimits,
    Converted,
    convert,
)

QEMU_IMG = shutil.which("qemu-img")
pytestmark = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img (qemu-utils) not installed")

MiB = 1 << 20
VIRTUAL = 8 * MiB
#: Recognisable data at the start and in the middle; zeros elsewhere.
PATTERN = ((0, b"\xab" * MiB), (4 * MiB, bytes(range(256)) * 256))
CONVERTIBLE = sorted(QEMU_FORMATS)


def qemu_img(*args: str | Path) -> str:
    assert QEMU_IMG is not None
    result = subprocess.run([QEMU_IMG, *map(str, args)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def info(path: str | Path, fmt: str) -> dict[str, object]:
    described = json.loads(qemu_img("info", "--output=json", "-f", fmt, path))
    assert isinstance(described, dict)
    return described


def expected_raw() -> bytes:
    data = bytearray(VIRTUAL)
    for offset, chunk in PATTERN:
        data[offset:offset + len(chunk)] = chunk
    return bytes(data)


@attrs.frozen
class Dirs:
    src: Path
    work: Path
    tmp: Path

    def raw(self) -> Path:
        path = self.src / "pattern.raw"
        if not path.exists():
            path.write_bytes(expected_raw())
        return path

    def image(self, disk_format: str) -> Path:
        """The pattern as ``disk_format`` (a Glance name), made by qemu-img."""
        if disk_format == "raw":
            return self.raw()
        path = self.src / f"pattern.{disk_format}"
        qemu_img("convert", "-f", "raw", "-O", QEMU_FORMATS[disk_format], self.raw(), path)
        return path

    def left(self) -> list[str]:
        return sorted(os.listdir(self.work))

    def script(self, name: str, body: str) -> str:
        """An executable ``/bin/sh`` fake qemu-img; ``$REAL`` is the real one, ``$DIR`` tmp."""
        path = self.tmp / name
        path.write_text(f'#!/bin/sh\nREAL="{QEMU_IMG}"\nDIR="{self.tmp}"\n{body}')
        path.chmod(0o755)
        return str(path)


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    made = Dirs(tmp_path / "src", tmp_path / "work", tmp_path)
    made.src.mkdir()
    made.work.mkdir()
    return made


async def refused(dirs: Dirs, source: Path | str, source_format: str, output_format: str,
                  limits: ConversionLimits = ConversionLimits(), *,
                  program: str = "qemu-img") -> str:
    """Convert, expecting ``ConversionError``: its message, checked to name no path."""
    with pytest.raises(ConversionError) as caught:
        await convert(reactor, str(source), source_format, output_format, str(dirs.work),
                      limits, qemu_img=program)
    message = str(caught.value)
    assert str(dirs.tmp) not in message and "/" not in message, message
    assert dirs.left() == []
    return message


def alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not on its way out (zombie, or exiting: PF_EXITING)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    state, flags = fields[0], int(fields[6])
    return state not in ("Z", "X") and not flags & 0x4


# -- conversions -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_qcow2_to_raw_keeps_the_content_and_the_size(dirs: Dirs) -> None:
    source = dirs.image("qcow2")
    before = source.read_bytes()
    converted = await convert(reactor, str(source), "qcow2", "raw", str(dirs.work))
    assert isinstance(converted, Converted)
    assert converted.format == "raw"
    assert os.path.dirname(converted.path) == str(dirs.work)
    assert dirs.left() == [os.path.basename(converted.path)]
    assert converted.size == converted.virtual_size == VIRTUAL
    assert Path(converted.path).read_bytes() == expected_raw()
    assert info(converted.path, "raw")["format"] == "raw"
    assert source.read_bytes() == before


@pytest.mark.parametrize("output_format", [f for f in CONVERTIBLE if f != "raw"])
@pytest_twisted.ensureDeferred
async def test_raw_to_each_format(dirs: Dirs, output_format: str) -> None:
    converted = await convert(reactor, str(dirs.raw()), "raw", output_format, str(dirs.work))
    assert converted is not None
    assert converted.format == output_format
    qemu_format = QEMU_FORMATS[output_format]
    described = info(converted.path, qemu_format)
    assert described["format"] == qemu_format
    assert converted.size == os.stat(converted.path).st_size
    assert converted.virtual_size == described["virtual-size"]
    # VHD rounds the size up to its disk geometry; the rest must be exact.
    assert converted.virtual_size is not None and converted.virtual_size >= VIRTUAL
    qemu_img("compare", "-f", "raw", "-F", qemu_format, dirs.raw(), converted.path)


@pytest.mark.parametrize("source_format", [f for f in CONVERTIBLE if f != "raw"])
@pytest_twisted.ensureDeferred
async def test_each_format_to_raw(dirs: Dirs, source_format: str) -> None:
    source = dirs.image(source_format)
    converted = await convert(reactor, str(source), source_format, "raw", str(dirs.work))
    assert converted is not None and converted.format == "raw"
    assert converted.size == converted.virtual_size
    assert Path(converted.path).read_bytes()[:VIRTUAL] == expected_raw()
    assert not any(Path(converted.path).read_bytes()[VIRTUAL:])


@pytest_twisted.ensureDeferred
async def test_qcow2_to_vmdk_is_a_single_file_vmdk(dirs: Dirs) -> None:
    converted = await convert(reactor, str(dirs.image("qcow2")), "qcow2", "vmdk", str(dirs.work))
    assert converted is not None
    assert dirs.left() == [os.path.basename(converted.path)]
    qemu_img("compare", "-f", "raw", "-F", "vmdk", dirs.raw(), converted.path)
    # What convert produces, it would accept as a source.
    again = await convert(reactor, converted.path, "vmdk", "qcow2", str(dirs.work))
    assert again is not None and again.path != converted.path


@pytest.mark.parametrize("disk_format", ["raw", "qcow2", "vhd", "iso", "ami"])
@pytest_twisted.ensureDeferred
async def test_the_same_format_is_nothing_to_do(dirs: Dirs, disk_format: str) -> None:
    missing = str(dirs.tmp / "no-such-qemu-img")
    assert await convert(reactor, str(dirs.raw()), disk_format, disk_format, str(dirs.work),
                         qemu_img=missing) is None
    assert dirs.left() == []


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("source_format", "output_format", "words"), [
    ("iso", "raw", "cannot convert from disk_format 'iso'"),
    ("ami", "raw", "cannot convert from disk_format 'ami'"),
    ("ari", "qcow2", "cannot convert from disk_format 'ari'"),
    ("aki", "raw", "cannot convert from disk_format 'aki'"),
    ("ploop", "raw", "cannot convert from disk_format 'ploop'"),
    ("vpc", "raw", "cannot convert from disk_format 'vpc'"),
    ("raw", "iso", "cannot convert to disk_format 'iso'"),
    ("qcow2", "ami", "cannot convert to disk_format 'ami'"),
])
@pytest_twisted.ensureDeferred
async def test_formats_qemu_img_may_not_handle_are_refused(
    dirs: Dirs, source_format: str, output_format: str, words: str
) -> None:
    message = await refused(dirs, dirs.raw(), source_format, output_format)
    assert message.startswith(words)


@pytest_twisted.ensureDeferred
async def test_a_qcow2_with_a_backing_file_is_refused(dirs: Dirs) -> None:
    secret = dirs.tmp / "host-secret.raw"
    secret.write_bytes(b"secret" * 1000)
    source = dirs.src / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", secret, "-F", "raw", source, "1M")
    assert "backing file" in await refused(dirs, source, "qcow2", "raw")


@pytest_twisted.ensureDeferred
async def test_a_qcow2_with_an_external_data_file_is_refused(dirs: Dirs) -> None:
    source = dirs.src / "external.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={dirs.tmp / 'host-secret.raw'}",
             source, "1M")
    assert "external data file" in await refused(dirs, source, "qcow2", "raw")


@pytest_twisted.ensureDeferred
async def test_a_vmdk_whose_extent_is_another_file_is_refused(dirs: Dirs) -> None:
    source = dirs.src / "flat.vmdk"
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", source, "1M")
    assert "create-type 'monolithicFlat'" in await refused(dirs, source, "vmdk", "raw")
    # A hand-written descriptor naming a host file as its extent.
    descriptor = dirs.src / "descriptor.vmdk"
    descriptor.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW 2048 FLAT "{dirs.raw()}" 0\n\n'
        'ddb.virtualHWVersion = "4"\n'
    )
    assert "cannot be converted" in await refused(dirs, descriptor, "vmdk", "raw")


@pytest_twisted.ensureDeferred
async def test_a_single_file_vmdk_type_with_extents_elsewhere_is_refused(dirs: Dirs) -> None:
    # qemu 7 refuses text descriptors of the single-file types; should one ever open, its
    # extents must still be the image itself.  A fake qemu-img describes such an image.
    described = {
        "format": "vmdk", "virtual-size": MiB,
        "format-specific": {"type": "vmdk", "data": {
            "create-type": "monolithicSparse",
            "extents": [{"filename": "/etc/passwd", "format": "FLAT"}],
        }},
    }
    fake = dirs.script("vmdk-info", f"echo '{json.dumps(described)}'\n")
    message = await refused(dirs, dirs.raw(), "vmdk", "raw", program=fake)
    assert message == "VMDK images with extents in other files cannot be converted"


@pytest.mark.parametrize("claimed", ["qcow2", "vmdk", "vhdx", "vdi"])
@pytest_twisted.ensureDeferred
async def test_raw_data_claimed_as_another_format_is_refused(dirs: Dirs, claimed: str) -> None:
    message = await refused(dirs, dirs.raw(), claimed, "raw")
    assert message == f"qemu-img cannot read the image as {claimed}"


@pytest_twisted.ensureDeferred
async def test_a_qcow2_claimed_as_vmdk_is_refused(dirs: Dirs) -> None:
    assert "cannot read the image as vmdk" in await refused(
        dirs, dirs.image("qcow2"), "vmdk", "raw"
    )


@pytest_twisted.ensureDeferred
async def test_a_missing_qemu_img_is_an_error(dirs: Dirs) -> None:
    message = await refused(dirs, dirs.raw(), "raw", "qcow2",
                            program=str(dirs.tmp / "no-such-qemu-img"))
    assert message == "qemu-img is not installed"


@pytest_twisted.ensureDeferred
async def test_unreadable_info_is_an_error(dirs: Dirs) -> None:
    fake = dirs.script("garbage", 'echo "not json"\n')
    message = await refused(dirs, dirs.raw(), "raw", "qcow2", program=fake)
    assert "cannot be read" in message


@pytest_twisted.ensureDeferred
async def test_a_failed_convert_leaves_nothing(dirs: Dirs) -> None:
    fake = dirs.script("failing", """\
if [ "$1" = convert ]; then
  for last; do :; done
  echo partial > "$last"
  echo "qemu-img: Could not open '$last': it broke" >&2
  exit 1
fi
exec "$REAL" "$@"
""")
    message = await refused(dirs, dirs.raw(), "raw", "qcow2", program=fake)
    assert message == "qemu-img failed to convert the image from raw to qcow2"


@pytest_twisted.ensureDeferred
async def test_output_of_another_format_is_refused(dirs: Dirs) -> None:
    # A convert that "succeeds" with something that is not the output format.
    fake = dirs.script("wrong-output", """\
if [ "$1" = convert ]; then
  for last; do :; done
  cp "$6" "$last"
  exit 0
fi
exec "$REAL" "$@"
""")
    message = await refused(dirs, dirs.raw(), "raw", "qcow2", program=fake)
    assert message == "qemu-img cannot read the converted image as qcow2"


# -- limits, environment, deadline, cancellation -------------------------------------------------


def limits_of(path: Path) -> dict[str, tuple[str, str]]:
    """``/proc/PID/limits`` as {name: (soft, hard)}."""
    lines = path.read_text().splitlines()[1:]
    return {line[:26].strip(): (line[26:47].strip(), line[47:68].strip()) for line in lines}


@pytest_twisted.ensureDeferred
async def test_qemu_img_runs_limited_in_a_minimal_environment(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGED_TEST_SECRET", "do-not-pass")
    fake = dirs.script("recording", """\
cat /proc/self/limits > "$DIR/limits-$1"
env > "$DIR/env-$1"
echo $$ $(cut -d' ' -f5,6 /proc/$$/stat) > "$DIR/stat-$1"
exec "$REAL" "$@"
""")
    limits = ConversionLimits(timeout=120.0, memory=768 * MiB, cpu_seconds=100)
    converted = await convert(reactor, str(dirs.image("qcow2")), "qcow2", "raw",
                              str(dirs.work), limits, qemu_img=fake)
    assert converted is not None and converted.size == VIRTUAL

    memory = str(768 * MiB)
    info_limits = limits_of(dirs.tmp / "limits-info")
    assert info_limits["Max address space"] == (memory, memory)
    assert info_limits["Max cpu time"] == ("30", "30")  # info gets at most 30 s
    assert info_limits["Max core file size"] == ("0", "0")
    convert_limits = limits_of(dirs.tmp / "limits-convert")
    assert convert_limits["Max address space"] == (memory, memory)
    assert convert_limits["Max cpu time"] == ("100", "100")

    for step in ("info", "convert"):
        env = dict(
            line.split("=", 1) for line in (dirs.tmp / f"env-{step}").read_text().splitlines()
        )
        assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
        assert env["LC_ALL"] == "C"
        assert "IMAGED_TEST_SECRET" not in env and "HOME" not in env
        assert set(env) <= {"PATH", "LC_ALL", "PWD", "OLDPWD", "SHLVL", "_"}
        # Its own session and process group, so that a deadline kills all it started.
        pid, pgid, sid = (dirs.tmp / f"stat-{step}").read_text().split()
        assert pid == pgid == sid


@pytest_twisted.ensureDeferred
async def test_a_tiny_memory_limit_fails_cleanly(dirs: Dirs) -> None:
    message = await refused(dirs, dirs.image("qcow2"), "qcow2", "raw",
                            ConversionLimits(memory=4 * MiB))
    assert message == "qemu-img cannot read the image as qcow2"


SLEEPING_CONVERT = """\
if [ "$1" = convert ]; then
  for last; do :; done
  echo partial > "$last"
  echo $$ > "$DIR/shell.pid"
  sleep 30 &
  echo $! > "$DIR/sleep.pid"
  {signal}
  wait
  exit 0
fi
exec "$REAL" "$@"
"""


@pytest_twisted.ensureDeferred
async def test_the_deadline_kills_qemu_img_and_what_it_started(dirs: Dirs) -> None:
    fake = dirs.script("sleeping", SLEEPING_CONVERT.format(signal=""))
    began = reactor.seconds()
    message = await refused(dirs, dirs.image("qcow2"), "qcow2", "raw",
                            ConversionLimits(timeout=1.0), program=fake)
    assert message == "conversion timed out"
    assert reactor.seconds() - began < 10  # not the 30 s of the sleep
    # The sleep held qemu-img's output pipes: the call returned, so it was killed too.
    for name in ("shell.pid", "sleep.pid"):
        assert not alive(int((dirs.tmp / name).read_text()))


@pytest_twisted.ensureDeferred
async def test_cancelling_kills_qemu_img_and_removes_the_output(dirs: Dirs) -> None:
    fifo = dirs.tmp / "started"
    os.mkfifo(fifo)
    fake = dirs.script("sleeping", SLEEPING_CONVERT.format(signal='echo started > "$DIR/started"'))

    def read_fifo() -> str:
        with open(fifo) as f:
            return f.read()

    started: Deferred[str] = threads.deferToThread(read_fifo)
    conversion = Deferred.fromCoroutine(
        convert(reactor, str(dirs.image("qcow2")), "qcow2", "raw", str(dirs.work), qemu_img=fake)
    )

    def unblock(result: object) -> object:
        if not started.called:  # the conversion ended first: free the reading thread
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return result

    conversion.addBoth(unblock)
    assert await started == "started\n"
    assert not conversion.called
    assert len(dirs.left()) == 1  # the partial output
    began = reactor.seconds()
    conversion.cancel()
    with pytest.raises(CancelledError):
        await conversion
    assert reactor.seconds() - began < 10  # not the 30 s of the sleep
    assert dirs.left() == []
    for name in ("shell.pid", "sleep.pid"):
        assert not alive(int((dirs.tmp / name).read_text()))


@pytest.mark.parametrize("field", ["timeout", "memory", "cpu_seconds"])
def test_limits_must_be_positive(field: str) -> None:
    make: Callable[..., ConversionLimits] = ConversionLimits
    with pytest.raises(ValueError, match=field):
        make(**{field: 0})
