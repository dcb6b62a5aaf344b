"""
Converting imported image data to another disk format with ``qemu-img``, safely.

This is the core of Glance's ``image_conversion`` import plugin (for instance qcow2 to raw, so
that a Ceph RBD store can clone images).  ``qemu-img`` parses untrusted data, so ``convert``:

* always names the format (``-f``): qemu never probes, and ``qemu-img info -f FMT`` opens the
  image without its backing file;
* inspects the image with ``qemu-img info`` first and refuses anything that points outside
  itself (a backing file, a qcow2 external data file, a VMDK whose extents are other files or
  whose create-type is not a single-file one) or that qemu does not read as the claimed format:
  converting such an image would copy a file of the server into the image (the CVE-2022-47951 /
  CVE-2024-32498 class of attacks).  The content check of the upload (``imaged.formats``) runs
  before this; this one is what qemu itself will do;
* runs qemu-img under resource limits (address space, CPU time, no core dumps), with a minimal
  environment, never through a shell, and kills it, with anything it started, at a deadline;
* removes the partial output whatever goes wrong (including cancellation of the call).

How the process is run, and why: ``reactor.spawnProcess`` starts ``sys.executable`` on a few
lines (``_LIMITED_EXEC``) that start a new session, set the rlimits and ``exec`` qemu-img.  The
simpler ``subprocess.run(preexec_fn=...)`` in a thread was rejected: ``preexec_fn`` is unsafe in
a process with threads (imaged has several; the child can deadlock between fork and exec), a
conversion may hold a pool thread for an hour, and ``subprocess.run``'s timeout kills only the
direct child and then waits for pipes that a descendant may still hold.  ``prlimit(1)`` would
do, but util-linux is not guaranteed where the Python interpreter running imaged is.  Nothing
here blocks the reactor: the only system calls made in its thread are creating, sizing and
removing one file in ``workdir``.

Error messages (``ConversionError``) are fit for an import task's ``message``: they say why,
never with a path of the server; qemu-img's own messages go to the log.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .logcontext import Logger

log = Logger()

#: Glance ``disk_format`` names that can be converted, and qemu's names for them.
QEMU_FORMATS: dict[str, str] = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
}

#: What ``output_format`` may be configured to (the same set as sources).
SUPPORTED_FORMATS = frozenset(QEMU_FORMATS)

#: VMDK create-types that keep the whole disk in the one file (Glance's default
#: ``vmdk_allowed_types``).
VMDK_CREATE_TYPES = frozenset({"monolithicSparse", "streamOptimized"})

#: ``qemu-img info`` gets at most this long and this much CPU time, whatever the limits say.
INFO_SECONDS = 30

#: ``qemu-img info`` prints a few KiB (snapshot lists can be longer); more is refused.
_STDOUT_LIMIT = 1 << 20
#: The tail of qemu-img's error output kept for the log.
_STDERR_KEPT = 8 << 10

#: All the environment qemu-img gets.
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

#: Run as ``python -I -S -c _LIMITED_EXEC MEMORY CPU QEMU_IMG ARGS...``: a new session (so that
#: the deadline kills the process group), the limits (lowered to a hard limit already lower, as
#: an unprivileged process cannot raise it), then qemu-img in place of the interpreter.
_LIMITED_EXEC = """\
import os, resource, sys
def cap(which, value):
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))
os.setsid()
cap(resource.RLIMIT_AS, int(sys.argv[1]))
cap(resource.RLIMIT_CPU, int(sys.argv[2]))
cap(resource.RLIMIT_CORE, 0)
os.execv(sys.argv[3], sys.argv[3:])
"""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen
class ConversionLimits:
    """What one conversion's qemu-img may use (``qemu-img info`` gets at most 30 s of each)."""

    #: Seconds ``qemu-img convert`` may run before it is killed.
    timeout: float = attrs.field(default=3600.0, validator=_positive)
    #: RLIMIT_AS of the qemu-img process, in bytes.  Address space, not memory used:
    #: qemu-img's worker threads reserve stacks, and 1 GiB once failed a small qcow2 -> vmdk
    #: conversion on a loaded 2-core machine.
    memory: int = attrs.field(default=2 << 30, validator=_positive)
    #: RLIMIT_CPU of the qemu-img process, in seconds.
    cpu_seconds: int = attrs.field(default=3600, validator=_positive)


@attrs.frozen
class Converted:
    """The converted image: a new file in ``workdir``, which the caller now owns."""

    path: str
    #: The output format, as Glance names it (``vhd``, not qemu's ``vpc``).
    format: str
    #: Bytes of the converted file.
    size: int
    virtual_size: int | None


class ConversionError(Exception):
    """The image cannot be converted; the message says why, fit for a task's ``message``."""


@attrs.frozen
class _Outcome:
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflowed: bool


class _Process(ProcessProtocol):
    """Collects a child's output and says when it has ended; kills its process group."""

    def __init__(self) -> None:
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._pgid: int | None = None
        self._waiters: list[Deferred[_Outcome]] = []
        self.timed_out = False
        self.overflowed = False
        self.outcome: _Outcome | None = None

    def started(self, pid: int | None) -> None:
        self._pgid = pid

    def outReceived(self, data: bytes) -> None:
        if len(self._stdout) + len(data) > _STDOUT_LIMIT:
            self.overflowed = True
            self.kill()
        else:
            self._stdout += data

    def errReceived(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-_STDERR_KEPT]

    def processEnded(self, reason: Failure) -> None:
        self.outcome = _Outcome(
            exit_code=getattr(reason.value, "exitCode", None),
            signal=getattr(reason.value, "signal", None),
            stdout=bytes(self._stdout),
            stderr=bytes(self._stderr),
            timed_out=self.timed_out,
            overflowed=self.overflowed,
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:  # a cancelled wait
                waiter.callback(self.outcome)

    def wait(self) -> Deferred[_Outcome]:
        if self.outcome is not None:
            return succeed(self.outcome)
        waiter: Deferred[_Outcome] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """SIGKILL the child's process group (the child and whatever it started)."""
        if self.outcome is not None or self._pgid is None:
            return
        try:
            os.killpg(self._pgid, signal.SIGKILL)
        except ProcessLookupError:
            # The wrapper has not called setsid yet: it is the only process to kill.
            transport = self.transport
            if transport is not None:
                try:
                    transport.signalProcess("KILL")
                except Exception:  # ProcessExitedAlready: nothing left to kill
                    pass
        except PermissionError:
            pass


async def _run(
    reactor: Any, qemu_img: str, args: list[str], workdir: str, memory: int, cpu: int,
    timeout: float,
) -> _Outcome:
    """Run ``qemu_img args`` limited; return once it has ended, whether cancelled or not."""
    process = _Process()
    argv = [sys.executable, "-I", "-S", "-c", _LIMITED_EXEC, str(memory), str(cpu),
            qemu_img, *args]
    try:
        transport = reactor.spawnProcess(process, sys.executable, argv, env=_ENV, path=workdir)
    except OSError as e:
        log.error("qemu-img could not be started: {error}", error=e)
        raise ConversionError("qemu-img could not be started") from e
    process.started(transport.pid)
    transport.closeStdin()
    timer = reactor.callLater(timeout, process.time_out)
    cancelled = False
    try:
        while process.outcome is None:
            try:
                await process.wait()
            except CancelledError:
                # Leave only once the process has gone, so that the caller's clean-up does not
                # race with a qemu-img still writing.
                cancelled = True
                process.kill()
    finally:
        if timer.active():
            timer.cancel()
    if cancelled:
        raise CancelledError()
    return process.outcome


def _failed(outcome: _Outcome, command: str, timed_out: str, failed: str) -> None:
    """Raise ``ConversionError`` unless ``outcome`` is a success; log what qemu-img said."""
    if outcome.exit_code == 0 and outcome.signal is None and not outcome.overflowed:
        return
    log.warn(
        "qemu-img {command} failed (exit {exit_code}, signal {signal}): {stderr}",
        command=command, exit_code=outcome.exit_code, signal=outcome.signal,
        stderr=outcome.stderr.decode("utf-8", "replace").strip(),
    )
    if outcome.timed_out:
        raise ConversionError(timed_out)
    if outcome.overflowed:
        raise ConversionError("qemu-img produced too much output")
    if outcome.signal == signal.SIGXCPU:
        raise ConversionError("qemu-img exceeded its CPU time limit")
    if outcome.signal is not None:
        raise ConversionError(
            f"qemu-img was killed by signal {outcome.signal} (a resource limit?)"
        )
    raise ConversionError(failed)


def _qemu_format(disk_format: str, direction: str) -> str:
    try:
        return QEMU_FORMATS[disk_format]
    except KeyError:
        raise ConversionError(
            f"cannot convert {direction} disk_format {_shown(disk_format)}: only "
            f"{', '.join(sorted(QEMU_FORMATS))} can be converted"
        ) from None


def _shown(value: object) -> str:
    text = str(value)
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


async def _info(
    reactor: Any, qemu_img: str, path: str, fmt: str, workdir: str, limits: ConversionLimits,
    what: str,
) -> dict[str, Any]:
    """``qemu-img info --output=json -f fmt path``, parsed and checked to be of ``fmt``."""
    outcome = await _run(
        reactor, qemu_img, ["info", "--output=json", "-f", fmt, path], workdir,
        limits.memory, min(limits.cpu_seconds, INFO_SECONDS), min(limits.timeout, INFO_SECONDS),
    )
    _failed(outcome, "info", f"inspecting {what} timed out", f"qemu-img cannot read {what}")
    try:
        info = json.loads(outcome.stdout)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise ConversionError(f"qemu-img's description of {what} cannot be read")
    if info.get("format") != fmt:
        raise ConversionError(f"qemu-img reads {what} as {_shown(info.get('format'))}")
    return info


def _virtual_size(info: dict[str, Any]) -> int | None:
    size = info.get("virtual-size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return None


def _refusal(info: dict[str, Any], path: str, fmt: str) -> str | None:
    """Why an image qemu-img describes as ``info`` must not be converted, or ``None``."""
    if any(key in info for key in
           ("backing-filename", "full-backing-filename", "backing-filename-format")):
        return "images with a backing file cannot be converted"
    if info.get("encrypted"):
        return "encrypted images cannot be converted"
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if not isinstance(data, dict):
        data = {}
    if data.get("data-file") is not None:
        return "qcow2 images with an external data file cannot be converted"
    if data.get("corrupt"):
        return "the image is marked corrupt"
    if fmt == "vmdk":
        create_type = data.get("create-type")
        if create_type not in VMDK_CREATE_TYPES:
            return (
                f"VMDK images of create-type {_shown(create_type)} cannot be converted "
                f"(only {', '.join(sorted(VMDK_CREATE_TYPES))})"
            )
        extents = data.get("extents")
        if not isinstance(extents, list) or not all(
            isinstance(extent, dict) and extent.get("filename") == path for extent in extents
        ):
            return "VMDK images with extents in other files cannot be converted"
    return None


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.error("Cannot remove the partial conversion output {path}: {error}",
                  path=path, error=e)


async def convert(
    reactor: Any,
    source: str,
    source_format: str,
    output_format: str,
    workdir: str,
    limits: ConversionLimits = ConversionLimits(),
    *,
    qemu_img: str = "qemu-img",
) -> Converted | None:
    """
    Convert the image at ``source`` from ``source_format`` to ``output_format`` (Glance
    ``disk_format`` names) into a new file in ``workdir``.

    ``None`` when there is nothing to do (``source_format == output_format``).  Otherwise runs
    ``qemu-img info --output=json -f SOURCE_FORMAT source`` and refuses (``ConversionError``)
    images with a backing file, an external data file, extents in other files, or that qemu
    does not read as ``source_format``; then ``qemu-img convert -f ... -O ...`` into a new
    file of ``workdir``; then ``qemu-img info`` of the output for its sizes.  On any failure,
    cancellation included, the partial output is removed.  ``reactor`` provides
    ``IReactorProcess`` and ``IReactorTime``; ``qemu_img`` is the program to run (a name
    looked up on ``PATH``, or a path).  ``source`` is left alone.
    """
    if source_format == output_format:
        return None
    source_driver = _qemu_format(source_format, "from")
    output_driver = _qemu_format(output_format, "to")
    program = shutil.which(qemu_img)
    if program is None:
        raise ConversionError("qemu-img is not installed")
    # Absolute paths: qemu-img never reads a "protocol:" prefix or an option into them.
    source = os.path.abspath(source)
    workdir = os.path.abspath(workdir)

    info = await _info(reactor, program, source, source_driver, workdir, limits,
                       f"the image as {source_format}")
    refusal = _refusal(info, source, source_driver)
    if refusal is not None:
        log.warn("Refusing to convert {source}: {refusal}", source=source, refusal=refusal)
        raise ConversionError(refusal)

    try:
        fd, output = tempfile.mkstemp(prefix="converted-", suffix=f".{output_format}",
                                      dir=workdir)
    except OSError as e:
        log.error("Cannot create a conversion output in {workdir}: {error}",
                  workdir=workdir, error=e)
        reason = "no space left" if e.errno == errno.ENOSPC else "cannot create the output"
        raise ConversionError(f"conversion failed: {reason}") from e
    os.close(fd)
    try:
        outcome = await _run(
            reactor, program,
            ["convert", "-f", source_driver, "-O", output_driver, source, output],
            workdir, limits.memory, limits.cpu_seconds, limits.timeout,
        )
        _failed(outcome, "convert", "conversion timed out",
                f"qemu-img failed to convert the image from {source_format} to {output_format}")
        converted = await _info(reactor, program, output, output_driver, workdir, limits,
                                f"the converted image as {output_format}")
        size = os.stat(output).st_size
    except BaseException:
        _remove(output)
        raise
    return Converted(output, output_format, size, _virtual_size(converted))


__all__ = [
    "QEMU_FORMATS",
    "SUPPORTED_FORMATS",
    "VMDK_CREATE_TYPES",
    "ConversionError",
    "ConversionLimits",
    "Converted",
    "convert",
]
