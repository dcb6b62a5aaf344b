"""The fuzzer behind tests/test_fuzz.py: a request grammar, raw HTTP on the real Site, checks."""

from __future__ import annotations

import collections
import copy
import gc
import json
import re
import shlex
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import attrs
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from imaged.api import APIConfig, Limits, routes
from imaged.metadefs.model import NAMESPACE_SORT_KEYS, TAG_SORT_KEYS
from imaged.metadefs.service import MetadefService
from imaged.store import tables
from imaged.store.sql import SQLMetadataStore
from imaged.stores import NamedStore, Stores
from imaged.testing import LOCAL_PEER, MemoryBlobStore, memory_image_service
from imaged.web.app import ImagesAPI
from imaged.web.errors import error_format
from imaged.web.metadefs import ROUTES as METADEF_ROUTES
from imaged.web.site import make_site

from .conftest import ADMIN, PROJECT_A, PROJECT_B

# -- raw HTTP ----------------------------------------------------------------------------------

#: How long a body, header or target may be in a failure report before it is cut.
SHOWN = 300


def _cut(data: bytes, limit: int = SHOWN) -> str:
    """``repr`` of ``data``, cut to ``limit`` bytes with the full length noted."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}... ({len(data)} bytes)"


def compact_bytes(data: bytes) -> str:
    """
    A Python expression for ``data`` with long repeats folded (``b"[" * 50000``,
    ``b"%ff" * 256``), so a reproduction of a 100 kB nested-JSON body is one readable line.
    """
    parts: list[str] = []
    position = 0
    for repeat in re.finditer(rb"(.{1,8}?)\1{7,}", data, re.S):
        if repeat.start() > position:
            parts.append(repr(data[position : repeat.start()]))
        unit = repeat.group(1)
        parts.append(f"{unit!r} * {(repeat.end() - repeat.start()) // len(unit)}")
        position = repeat.end()
    if position < len(data) or not parts:
        parts.append(repr(data[position:]))
    return " + ".join(parts)


def _shell(data: bytes, names: Mapping[str, str] | None = None) -> str:
    """
    A shell word for ``data``: plain quoting when printable, else bash's ``$'...'``; each id
    in ``names`` becomes its shell variable (an image a previous line created).
    """
    for created, name in (names or {}).items():
        if created.encode() in data:
            return f'"${name}"'.join(
                _shell(piece, names) if piece else "" for piece in data.split(created.encode()))
    if all(32 <= b < 127 for b in data):
        return shlex.quote(data.decode("ascii"))
    escaped = "".join(
        chr(b) if 32 <= b < 127 and b not in b"\\'" else f"\\x{b:02x}" for b in data
    )
    return f"$'{escaped}'"


@attrs.frozen(repr=False)
class Request:
    """
    One HTTP/1.1 request as bytes on the wire.  ``target`` and ``body`` may hold ``@@newN@@``
    (the Nth image this run created, resolved just before sending: see ``World.resolve``).
    ``length`` replaces the Content-Length the body would get (junk lengths).
    """

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    chunked: bool = False
    length: bytes | None = None
    version: bytes = b"HTTP/1.1"
    #: How many pieces the bytes reach the server in (bodies streamed in several writes).
    pieces: int = 1

    def __repr__(self) -> str:
        """Python that makes this request, long repeats folded."""
        fields = [repr(self.method), compact_bytes(self.target)]
        if self.headers:
            fields.append(f"headers={self.headers!r}")
        if self.body:
            fields.append(f"body={compact_bytes(self.body)}")
        for name, default in (("chunked", False), ("length", None),
                              ("version", b"HTTP/1.1"), ("pieces", 1)):
            if getattr(self, name) != default:
                fields.append(f"{name}={getattr(self, name)!r}")
        return f"Request({', '.join(fields)})"

    def promises_more(self) -> bool:
        """Whether its Content-Length promises more body than it sends: a server is right to
        wait for the rest (or to refuse the length at once)."""
        if self.length is None or self.chunked:
            return False
        try:
            return int(self.length) > len(self.body)
        except ValueError:
            return False

    def encode(self) -> bytes:
        """The bytes on the wire: Host, the headers, then framing for the body."""
        lines = [b" ".join((self.method, self.target, self.version)), b"Host: imaged.test"]
        lines += [name + b": " + value for name, value in self.headers]
        body = self.body
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        elif self.length is not None:
            lines.append(b"Content-Length: " + self.length)
        elif body or self.method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def describe(self) -> str:
        """Method, target, headers and body, each cut to a readable length."""
        lines = [f"{self.method.decode('latin-1')} {_cut(self.target)} "
                 f"{self.version.decode('latin-1')}"]
        lines += [f"  {name.decode('latin-1')}: {_cut(value)}" for name, value in self.headers]
        if self.chunked:
            lines.append("  Transfer-Encoding: chunked")
        if self.length is not None:
            lines.append(f"  Content-Length: {self.length!r}")
        if self.body:
            lines.append(f"  body: {_cut(self.body)}")
        return "\n".join(lines)

    def curl(self, names: Mapping[str, str] | None = None,
             base: str = "http://127.0.0.1:9292") -> str:
        """The request as a shell command against ``./dev run`` (``names``: see ``_shell``)."""
        words = ["curl", "-sS", "-i", "--path-as-is"]
        if self.method == b"HEAD":
            words.append("--head")
        else:
            words += ["-X", _shell(self.method)]
        if self.version == b"HTTP/1.0":
            words.append("--http1.0")
        for name, value in self.headers:
            words += ["-H", _shell(name + b": " + value, names)]
        if self.chunked:
            words += ["-H", "'Transfer-Encoding: chunked'"]
        if self.length is not None:
            words += ["-H", _shell(b"Content-Length: " + self.length)]
        target = self.target if self.target.startswith(b"/") else b"/" + self.target
        if self.target.startswith(b"http://"):
            target = b"/" + self.target.split(b"/", 3)[-1]
            words += ["--request-target", _shell(self.target, names)]
        words.append(_shell(base.encode() + target, names))
        command = " ".join(words)
        if not self.body:
            return command
        if len(self.body) <= 200 and all(32 <= b < 127 for b in self.body):
            return f"{command} --data-binary {_shell(self.body, names)}"
        body, environment = self.body, []
        for created, name in (names or {}).items():
            if created.encode() in body:
                body = body.replace(created.encode(), f"@@{name}@@".encode())
                environment.append(name)
        writer = f"import sys; sys.stdout.buffer.write({compact_bytes(body)}"
        writer += "".join(f'.replace(b"@@{n}@@", os.environ["{n}"].encode())'
                          for n in environment) + ")"
        if environment:
            writer = "import os; " + writer
        exports = "".join(f'{n}="${n}" ' for n in environment)
        return f"{exports}python3 -c {shlex.quote(writer)} | {command} --data-binary @-"


@attrs.frozen
class Response:
    code: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[-1] if found else None

    def describe(self) -> str:
        lines = [f"HTTP {self.code}"]
        lines += [f"  {k.decode('latin-1')}: {_cut(v)}" for k, v in self.headers]
        lines.append(f"  body: {_cut(self.body)}")
        return "\n".join(lines)


class NoAnswer(Exception):
    """The server did not answer a complete request with a complete response."""


def _dechunk(data: bytes) -> bytes | None:
    out = bytearray()
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        if len(data) < size + 2:
            return None
        out += data[:size]
        data = data[size + 2 :]


#: What ``send`` returns when the server closed the connection without a word: how Twisted
#: refuses a request line or header longer than it reads (16 KiB).  A refusal, not a hang.
CLOSED = 0


def parse_response(raw: bytes, method: bytes, closed: bool) -> Response:
    """
    The response in ``raw`` (interim 100s skipped); a ``CLOSED`` one if the server hung up
    without answering; ``NoAnswer`` if the connection is open and the response incomplete.
    """
    if not raw and closed:
        return Response(CLOSED, (), b"")
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise NoAnswer(f"no complete status line and headers: {_cut(raw)}")
    lines = head.split(b"\r\n")
    code = int(lines[0].split(b" ", 2)[1])
    headers = tuple(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(b":") for line in lines[1:])
    )
    response = Response(code, headers, b"")
    if method == b"HEAD" or code in (204, 304):
        return response
    length = response.header(b"content-length")
    if length is not None:
        size = int(length)
        if len(rest) < size:
            raise NoAnswer(f"body shorter than its Content-Length {size}: {_cut(rest)}")
        return attrs.evolve(response, body=rest[:size])
    if (response.header(b"transfer-encoding") or b"").lower() == b"chunked":
        body = _dechunk(rest)
        if body is None:
            raise NoAnswer(f"chunked body without its last chunk: {_cut(rest)}")
        return attrs.evolve(response, body=body)
    if not closed:
        raise NoAnswer("no Content-Length, not chunked, and the connection is still open")
    return attrs.evolve(response, body=rest)


# -- what gets logged --------------------------------------------------------------------------


class LogWatch:
    """
    Every error, critical or failure event logged while it watches (imaged's handlers, Klein,
    Twisted's "Unhandled Error" and "Unhandled error in Deferred"): what a 500 leaves in the
    daemon's log, and what a swallowed exception leaves even behind a 4xx.
    """

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def __call__(self, event: Mapping[str, Any]) -> None:
        if _failure_of(event) is not None or event.get("isError") or event.get(
            "log_level") in (LogLevel.error, LogLevel.critical):
            self.events.append(event)

    def __enter__(self) -> LogWatch:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        globalLogPublisher.removeObserver(self)

    def take(self) -> list[Logged]:
        """The events seen since the last ``take``."""
        taken = [Logged(describe_event(event), event_kind(event)) for event in self.events]
        self.events.clear()
        return taken


@attrs.frozen
class Logged:
    """A logged event: its text with the traceback's tail, and what kind of failure it is."""

    text: str
    kind: str


def _failure_of(event: Mapping[str, Any]) -> Failure | None:
    """The event's failure: ``log_failure``, or ``failure`` from the legacy ``log.err``."""
    for key in ("log_failure", "failure"):
        if isinstance(event.get(key), Failure):
            failure: Failure = event[key]
            return failure
    return None


def describe_event(event: Mapping[str, Any]) -> str:
    """The event's message and, if it carries a failure, imaged's frames and the exception."""
    text = (formatEvent(dict(event)) or repr(event.get("log_format"))).split("\nTraceback")[0]
    failure = _failure_of(event)
    if failure is None:
        return text
    frames = [(name, path, line) for name, path, line, *_ in failure.frames]
    lines = [f"  {path.split('/imaged/', 1)[1]}:{line} in {name}"
             for name, path, line in frames if "/imaged/" in path]
    if frames and "/imaged/" not in frames[-1][1]:
        name, path, line = frames[-1]
        lines.append(f"  ... {path.split('site-packages/', 1)[-1]}:{line} in {name}")
    return "\n".join([text, "Traceback (imaged's frames, innermost last):", *lines,
                      f"{failure.type.__name__}: {failure.getErrorMessage()[:300]}"])


def event_kind(event: Mapping[str, Any]) -> str:
    """
    What kind of failure a logged event shows, to tell bugs apart: the exception and the
    innermost frame of imaged's (else of anyone's) that raised it; without a traceback, the
    message with its variable parts (ids, quoted bytes, numbers) blanked.
    """
    failure = _failure_of(event)
    if failure is not None:
        frames = [(name, path, line) for name, path, line, *_ in failure.frames]
        ours = [f for f in frames if "/imaged/" in f[1]] or frames
        where = ""
        if ours:
            name, path, line = ours[-1]
            short = ("imaged/" + path.split("/imaged/", 1)[1] if "/imaged/" in path
                     else path.split("site-packages/", 1)[-1])
            where = f" at {short}:{line} ({name})"
        return f"{failure.type.__name__}{where}"
    message = (formatEvent(dict(event)) or "\n").splitlines()[0]
    message = re.sub(r"[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}", "{id}", message)
    message = re.sub(r"b'[^']*'|\d+", "_", message)
    return f"logged: {message[:100]}"


# -- the service, its state, and one connection per request ----------------------------------

#: Limits small enough that the quota paths are reached by a few requests.
LIMITS = Limits(
    image_size_cap=1024 * 1024,
    image_property_quota=16,
    image_tag_quota=16,
    image_member_quota=4,
    user_storage_quota=2 * 1024 * 1024,
    image_count_total=24,
)

#: The tables holding images (the state a request may change); ``imaged_nodes`` and the like
#: are the processes' own bookkeeping.
IMAGE_TABLES = ("images", "image_tags", "image_properties", "image_members")
#: The tables of the metadata definitions catalog (``/v2/metadefs``).
METADEF_TABLES = ("metadef_namespaces", "metadef_definitions", "metadef_resource_types",
                  "metadef_associations")
#: Every table whose rows a request may change: what ``State`` holds.
STATE_TABLES = IMAGE_TABLES + METADEF_TABLES


#: How many leading columns identify a row of each table of the state.
_KEY_COLUMNS = {"images": 1, "image_tags": 2, "image_properties": 2, "image_members": 2,
                "metadef_namespaces": 1, "metadef_definitions": 1, "metadef_resource_types": 1,
                "metadef_associations": 2}


@attrs.frozen
class State:
    """Everything a request could change: every row of the image and catalog tables, every
    blob."""

    columns: tuple[tuple[str, ...], ...]
    tables: tuple[tuple[tuple[Any, ...], ...], ...]
    blobs: tuple[tuple[str, bytes], ...]

    def differences(self, after: State) -> list[tuple[str, str]]:
        """
        What changed from ``self`` to ``after``: rows gone or new, columns changed, blobs;
        each as what changed (``images.updated_at``, ``image_tags+``) and the details.
        """
        found: list[tuple[str, str]] = []
        for table, columns, before_rows, after_rows in zip(
            STATE_TABLES, self.columns, self.tables, after.tables, strict=True
        ):
            width = _KEY_COLUMNS[table]
            before = {row[:width]: row for row in before_rows}
            now = {row[:width]: row for row in after_rows}
            for key in sorted(set(before) | set(now), key=repr):
                old, new = before.get(key), now.get(key)
                if old == new:
                    continue
                if old is None or new is None:
                    sign = "+" if old is None else "-"
                    found.append((f"{table}{sign}", f"{table} {sign} {old or new!r}"))
                    continue
                found += [(f"{table}.{name}", f"{table} {key!r}: {name} {a!r} -> {b!r}")
                          for name, a, b in zip(columns, old, new, strict=True) if a != b]
        before_blobs, after_blobs = dict(self.blobs), dict(after.blobs)
        for location in sorted(set(before_blobs) | set(after_blobs)):
            if before_blobs.get(location) != after_blobs.get(location):
                found.append(("blob", f"blob {location}: {len(before_blobs.get(location, b''))}"
                                      f" -> {len(after_blobs.get(location, b''))} bytes"))
        return found


def read_state(engine: Engine, blobs: MemoryBlobStore) -> State:
    """
    The whole state, one ``SELECT *`` per table (every column, whatever the schema grows):
    the fuzzer's database holds a few dozen images and namespaces, so this is cheaper than
    being clever.
    """
    columns, rows = [], []
    with engine.connect() as connection:
        for name in STATE_TABLES:
            result = connection.exec_driver_sql(f"SELECT * FROM {name}")
            columns.append(tuple(result.keys()))
            width = _KEY_COLUMNS[name]  # a primary key: one order, whatever the database's
            rows.append(tuple(sorted((tuple(row) for row in result), key=lambda r: r[:width])))
    return State(tuple(columns), tuple(rows), tuple(sorted(blobs.blobs.items())))


def store_engine(store: SQLMetadataStore) -> Engine:
    """The engine under a metadata store: the state is read straight from its tables."""
    engine: Engine = store._engine
    return engine


@attrs.frozen
class Snapshot:
    """Every row of every table, and the blobs, to start each run from the same seed."""

    rows: Mapping[str, Sequence[Mapping[str, Any]]]
    blobs: MemoryBlobStore

    @classmethod
    def take(cls, engine: Engine, blobs: MemoryBlobStore) -> Snapshot:
        with engine.connect() as connection:
            rows = {
                table.name: [dict(row._mapping) for row in connection.execute(select(table))]
                for table in tables.metadata.sorted_tables
            }
        return cls(rows, blobs.copy())

    def restore(self, engine: Engine) -> MemoryBlobStore:
        """
        Put the database back as it was and return a copy of the blobs: a few ms, where
        seeding through HTTP again takes a few hundred.
        """
        with engine.begin() as connection:
            for table in reversed(tables.metadata.sorted_tables):
                connection.execute(table.delete())
            for table in tables.metadata.sorted_tables:
                if self.rows[table.name]:
                    connection.execute(table.insert(), list(self.rows[table.name]))
        return self.blobs.copy()


def multi(blobs: MemoryBlobStore) -> Stores:
    """Two named stores, ``fast`` (default) and ``cheap``, both keeping their bytes in
    ``blobs``' dicts (each under its own prefix): the state and the snapshots see both."""
    cheap = MemoryBlobStore("cheap")
    cheap.blobs, cheap.written_at = blobs.blobs, blobs.written_at
    return Stores(
        [NamedStore("fast", "memory", blobs, weight=10), NamedStore("cheap", "memory", cheap)],
        "fast", multi=True,
    )


class World:
    """
    One imaged as the daemon serves it (the real ``Site``, streaming uploads and all, and the
    metadata definitions catalog on the same database) over ``store`` and blobs in memory,
    driven with raw bytes over one in-memory connection per request, as a client on loopback
    would.  Everything runs inline: a complete request is answered before ``send`` returns, or
    never.
    """

    def __init__(self, store: SQLMetadataStore, clock: Clock,
                 blobs: MemoryBlobStore | None = None, multi_store: bool = False) -> None:
        self.store = store
        self.engine = store_engine(store)
        self.blobs = MemoryBlobStore() if blobs is None else blobs
        self.service = memory_image_service(
            limits=LIMITS, metadata=store, blobs=multi(self.blobs) if multi_store else self.blobs,
            clock=clock,
        )
        self.metadefs = MetadefService(store, clock=clock)
        api = routes(APIConfig(image_service=self.service, limits=LIMITS, metadefs=self.metadefs))
        self.site = make_site(api.resource(), body_router=api.bodies)
        # Connection timeouts go to the test's clock, which nobody advances.
        self.site.reactor = clock
        #: The ids of the images this run created, in order (``@@newN@@``).
        self.created: list[str] = []

    def resolve(self, request: Request) -> Request:
        """``request`` with each ``@@newN@@`` replaced by an image this run created."""

        def image(match: re.Match[bytes]) -> bytes:
            if not self.created:
                return SEED_IDS["active"].encode()
            return self.created[int(match.group(1)) % len(self.created)].encode()

        target = re.sub(rb"@@new(\d+)@@", image, request.target)
        body = re.sub(rb"@@new(\d+)@@", image, request.body)
        if target == request.target and body == request.body:
            return request
        return attrs.evolve(request, target=target, body=body)

    def send(self, request: Request) -> Response:
        """
        Send ``request`` on a new connection; its response, or ``NoAnswer``.  An exception
        out of the protocol is what the reactor would log as "Unhandled Error" before dropping
        the connection: it propagates.
        """
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=LOCAL_PEER)
        protocol.makeConnection(transport)
        try:
            data = request.encode()
            step = max(1, -(-len(data) // max(1, request.pieces)))
            for start in range(0, len(data), step):
                protocol.dataReceived(data[start : start + step])
            return parse_response(transport.value(), request.method, transport.disconnecting)
        finally:
            protocol.connectionLost(Failure(ConnectionDone()))

    def state(self) -> State:
        return read_state(self.engine, self.blobs)

    def remember(self, request: Request, response: Response) -> None:
        """Note the image a successful create made, for later ``@@newN@@`` (not a namespace:
        the catalog's names are the grammar's own, ``FRESH_NAMESPACES``)."""
        if response.code != 201 or request.method != b"POST" or is_metadef(request):
            return
        location = response.header(b"location") or b""
        self.created.append(location.rsplit(b"/", 1)[-1].decode())


def is_metadef(request: Request) -> bool:
    """Whether ``request`` is for the metadata definitions catalog (its routes or schemas)."""
    return b"/metadefs" in request.target.partition(b"?")[0]


# -- the images every run starts with ----------------------------------------------------------

#: Where the catalog's namespaces are (``imaged/web/metadefs.py``).
METADEF_NAMESPACES = "/v2/metadefs/namespaces"
#: A member of project-c, in keystonemiddleware's older header names.
PROJECT_C = {"X-Tenant-Id": "project-c", "X-User": "carol", "X-Role": "member"}

#: The seed's images, by what is special about them (fixed ids: reproductions name them).
SEED_IDS = {
    name: f"5eed0000-0000-4000-8000-{number:012d}"
    for number, name in enumerate(
        ["queued", "active", "deactivated", "shared", "public", "community", "hidden",
         "foreign", "formatless", "ownerless"],
        start=1,
    )
}
SEED_DATA = b"seed" * 1024  # 4 KiB of raw image

#: The seed's namespaces of the metadata definitions catalog: a public protected one with
#: everything in it (two resource types with prefixes), and a private one project-a owns.
SEED_NAMESPACES = {"public": "Seed::Public", "private": "Seed::Private"}
#: The seed's objects, properties, tags and resource types (in either namespace).
SEED_OBJECTS = ("Engine", "Wheel", "Box", "Crate")
SEED_PROPERTIES = ("speed", "mode", "flags", "color", "size")
SEED_TAGS = ("alpha", "zeta", "mid", "red", "blue", "green")
SEED_RESOURCE_TYPES = ("OS::Glance::Image", "OS::Nova::Flavor", "OS::Cinder::Volume")


def _json_request(method: str, path: str, identity: Mapping[str, str], document: Any,
                  content_type: str = "application/json") -> Request:
    headers = [(k.encode(), v.encode()) for k, v in identity.items()]
    headers.append((b"Content-Type", content_type.encode()))
    return Request(method.encode(), path.encode(), tuple(headers), json.dumps(document).encode())


def _plain_request(method: str, path: str, identity: Mapping[str, str],
                   extra: Mapping[str, str] | None = None, body: bytes = b"") -> Request:
    headers = {**identity, **(extra or {})}
    return Request(method.encode(), path.encode(),
                   tuple((k.encode(), v.encode()) for k, v in headers.items()), body)


def seed_requests() -> list[Request]:
    """
    The images each run starts from, one in each interesting state: queued, active with data,
    deactivated, shared with members (accepted and pending), public and protected, community,
    hidden and protected, another project's, without formats, and without an owner.
    """
    ids = SEED_IDS
    raw = {"disk_format": "raw", "container_format": "bare"}
    octets = {"Content-Type": "application/octet-stream"}
    requests = [
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["queued"], "name": "queued", **raw, "tags": ["seed", "q"],
            "os_distro": "cirros"}),
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["active"], "name": "active", **raw, "min_ram": 512, "tags": ["seed"],
            "hw_disk_bus": "virtio"}),
        _plain_request("PUT", f"/v2/images/{ids['active']}/file", PROJECT_A, octets, SEED_DATA),
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["deactivated"], "name": "deactivated", **raw}),
        _plain_request("PUT", f"/v2/images/{ids['deactivated']}/file", PROJECT_A, octets,
                       SEED_DATA[:1000]),
        _plain_request("POST", f"/v2/images/{ids['deactivated']}/actions/deactivate", ADMIN),
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["shared"], "name": "shared", **raw, "visibility": "shared"}),
        _plain_request("PUT", f"/v2/images/{ids['shared']}/file", PROJECT_A, octets,
                       SEED_DATA[:2048]),
        _json_request("POST", f"/v2/images/{ids['shared']}/members", PROJECT_A,
                      {"member": "project-b"}),
        _json_request("PUT", f"/v2/images/{ids['shared']}/members/project-b", PROJECT_B,
                      {"status": "accepted"}),
        _json_request("POST", f"/v2/images/{ids['shared']}/members", PROJECT_A,
                      {"member": "project-c"}),
        _json_request("POST", "/v2/images", ADMIN, {
            "id": ids["public"], "name": "public", **raw, "visibility": "public",
            "protected": True, "owner": "project-a"}),
        _plain_request("PUT", f"/v2/images/{ids['public']}/file", ADMIN, octets, SEED_DATA),
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["community"], "name": "community", "disk_format": "qcow2",
            "container_format": "bare", "visibility": "community"}),
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["hidden"], "name": "hidden", **raw, "os_hidden": True,
            "protected": True}),
        _json_request("POST", "/v2/images", PROJECT_B, {
            "id": ids["foreign"], "name": "foreign", **raw, "visibility": "private",
            "os_distro": "ubuntu"}),
        _json_request("POST", "/v2/images", PROJECT_A, {
            "id": ids["formatless"], "name": "formatless"}),
        _json_request("POST", "/v2/images", {}, {"id": ids["ownerless"], "name": "ownerless"}),
    ]
    return requests + metadef_seed_requests()


def metadef_seed_requests() -> list[Request]:
    """
    The catalog each run starts from (an administrator's writes: Glance's default policy):
    ``Seed::Public``, public and protected, made whole in one create; ``Seed::Private``, owned
    by project-a, filled through each sub-collection's create.
    """
    public, private = SEED_NAMESPACES["public"], SEED_NAMESPACES["private"]
    base = f"{METADEF_NAMESPACES}/{private}"
    return [
        _json_request("POST", METADEF_NAMESPACES, ADMIN, {
            "namespace": public, "display_name": "Public", "description": "Everything",
            "visibility": "public", "protected": True,
            "resource_type_associations": [
                {"name": "OS::Glance::Image", "prefix": "hw_", "properties_target": "image"},
                {"name": "OS::Nova::Flavor", "prefix": "hw:"},
            ],
            "properties": {
                "speed": {"title": "Speed", "type": "integer", "minimum": 1, "maximum": 10,
                          "default": 5},
                "mode": {"title": "Mode", "type": "string", "enum": ["fast", "slow"],
                         "default": "fast", "readonly": False},
                "flags": {"title": "Flags", "type": "array", "uniqueItems": True,
                          "items": {"type": "string", "enum": ["a", "b"]}},
            },
            "objects": [
                {"name": "Engine", "description": "An engine", "required": ["cylinders"],
                 "properties": {"cylinders": {"title": "Cylinders", "type": "integer"}}},
                {"name": "Wheel", "properties": {}},
            ],
            "tags": [{"name": "alpha"}, {"name": "zeta"}, {"name": "mid"}],
        }),
        _json_request("POST", METADEF_NAMESPACES, ADMIN, {
            "namespace": private, "visibility": "private", "owner": "project-a",
            "properties": {"color": {"title": "Color", "type": "string", "maxLength": 20}},
            "objects": [{"name": "Box", "properties": {
                "depth": {"title": "Depth", "type": "number", "minimum": 0}}}],
        }),
        _json_request("POST", f"{base}/properties", ADMIN, {
            "name": "size", "title": "Size", "type": "integer", "minimum": 0}),
        _json_request("POST", f"{base}/objects", ADMIN, {
            "name": "Crate", "required": ["size"], "properties": {
                "size": {"title": "Size", "type": "integer"}}}),
        _json_request("POST", f"{base}/tags", ADMIN, {"tags": [{"name": "red"},
                                                                {"name": "blue"}]}),
        _plain_request("POST", f"{base}/tags/green", ADMIN),
        _json_request("POST", f"{base}/resource_types", ADMIN, {
            "name": "OS::Cinder::Volume", "prefix": "vol_"}),
    ]


def seed(world: World) -> None:
    """Make the seed's images in ``world`` (each request must succeed)."""
    for request in seed_requests():
        response = world.send(request)
        assert response.code < 300, (
            f"the fuzzer's seed failed:\n{request.describe()}\n{response.describe()}")


# -- the grammar ------------------------------------------------------------------------------

#: A path segment or query part: text is percent-encoded (as UTF-8, lone surrogates kept as
#: their CESU bytes, ``%ED%A0%80``); bytes go on the wire as they are (``%ff``, ``%``).
Segment = str | bytes


def encode_part(value: Segment, safe: str = "") -> bytes:
    """``value`` as it goes into a request target (see ``Segment``)."""
    if isinstance(value, bytes):
        return value
    return quote(value.encode("utf-8", "surrogatepass"), safe=safe).encode("ascii")


def _repeat(pieces: Sequence[Any], counts: Sequence[int]) -> st.SearchStrategy[Any]:
    """``piece * count``: long values from two small draws (hypothesis' buffer stays small)."""
    return st.tuples(st.sampled_from(pieces), st.sampled_from(counts)).map(
        lambda pair: pair[0] * pair[1])


#: Strings that break things: empty, NUL, lone surrogates, non-BMP, separators, markup.
NASTY_TEXT = (
    "", " ", "a", "\x00", "a\x00b", "\ud800", "\udfff", "x\ud83dy", "é", "日本語", "\U0001f600",
    "\u2028", "\ufeff", "\x7f", "%", "%ff", "/", "../", "~1", "~0", "~", "null", "true", "0",
    "-1", "in:a,b", 'in:"a,b', "eq:x:y", "gt:", ",", '"', "'", "<b>", "\\", "\n", "\r\n", "\t",
    "os_glance_x", "locations", "status", "properties",
)

#: What databases and encoders choke on: lone surrogates (JSON may escape them, UTF-8 cannot
#: encode them) and NUL (PostgreSQL's text refuses it).
POISON_TEXT = ("\ud800", "\udfff", "x\ud83dy", "\x00", "a\x00b")

nasty_text: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(POISON_TEXT),
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=12),
    _repeat(["a", "é", "\x00", "\ud800", "\U0001f600", "%"], [254, 255, 256, 1000, 70000]),
)

#: Integers at the edges of every column and parser they meet.
EDGE_INTS = (
    0, 1, -1, 512, 2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
    -(2**63) - 1, 2**64, 10**20,
)
edge_ints: st.SearchStrategy[int] = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(min_value=-5, max_value=10**6),
    st.sampled_from([400, 4000]).map(lambda digits: 10**digits))

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), edge_ints, st.sampled_from([1.5, -0.0, 1e308, float("inf"),
                                                          float("nan")]),
    nasty_text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(nasty_text, inner, max_size=3)),
    max_leaves=6,
)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """
    One of the strategies, each as often as its weight says (relative to the others).
    (``st.one_of`` cannot weigh: it draws its branches evenly and drops repeated ones.)
    """
    table = st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)])

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        return draw(draw(table))

    return pick()


def _one_of_weighted(usual: st.SearchStrategy[Any], *odd: st.SearchStrategy[Any]) -> Any:
    """Mostly ``usual``, sometimes one of ``odd``."""
    return weighted((3, usual), *[(1, o) for o in odd])


DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami", "ari", "aki",
                "ploop")
CONTAINER_FORMATS = ("bare", "ovf", "ova", "docker", "compressed", "ami", "ari", "aki")
VISIBILITIES = ("private", "shared", "community", "public")
PROPERTY_KEYS = ("os_distro", "hw_disk_bus", "description", "owner_specified.openstack.md5",
                 "x", "os_glance_foo", "location", "deleted", "checksum", "id", "self")

names = st.one_of(st.sampled_from(["cirros", "ubuntu", None]), nasty_text,
                  _repeat(["n", "é", "\U0001f600"], [255, 256]))
disk_formats = _one_of_weighted(st.sampled_from(DISK_FORMATS),
                                st.sampled_from([None, "RAW", "junk", "", 1]))
container_formats = _one_of_weighted(st.sampled_from(CONTAINER_FORMATS),
                                     st.sampled_from([None, "BARE", "junk", 0]))
visibilities = _one_of_weighted(st.sampled_from(VISIBILITIES), json_scalars)
booleans = _one_of_weighted(st.booleans(), st.sampled_from(["true", 1, None, "False"]))
tag_values = st.one_of(st.sampled_from(["seed", "q", "new"]), nasty_text)
tag_lists = st.one_of(st.lists(tag_values, max_size=4), st.lists(json_scalars, max_size=3),
                      _repeat([["t"], ["t", "t"]], [17, 200]), json_scalars)
property_keys = st.one_of(st.sampled_from(PROPERTY_KEYS), nasty_text)
property_values = _one_of_weighted(st.sampled_from(["ubuntu", "virtio", ""]), nasty_text,
                                   json_values)
image_ids_in_body = st.one_of(
    st.sampled_from(sorted(SEED_IDS.values())), st.uuids().map(str), nasty_text,
    st.integers(0, 5).map(lambda n: f"@@new{n}@@"))
owners = st.one_of(st.sampled_from(["project-a", "project-b", "admin-project", None]),
                   nasty_text)

CREATE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "disk_format": disk_formats,
    "container_format": container_formats,
    "visibility": visibilities,
    "protected": booleans,
    "os_hidden": booleans,
    "min_disk": edge_ints,
    "min_ram": edge_ints,
    "tags": tag_lists,
    "owner": owners,
    "id": image_ids_in_body,
    "properties": st.one_of(st.dictionaries(property_keys, property_values, max_size=3),
                            json_scalars),
    "status": json_scalars,
    "locations": json_values,
    "size": json_scalars,
}
_USABLE = ({}, {"disk_format": "raw", "container_format": "bare"},
           {"disk_format": "raw", "container_format": "bare"},
           {"disk_format": "qcow2", "container_format": "bare"})


@st.composite
def create_documents(draw: st.DrawFn) -> dict[str, Any]:
    """
    A create body: often with formats (so uploads to it can work); half the time only with
    a name and ordinary properties (an image to use later), else with a few odd fields.
    """
    document: dict[str, Any] = dict(draw(st.sampled_from(_USABLE)))
    if draw(st.booleans()):
        document["name"] = draw(names)
        document.update(draw(st.dictionaries(st.sampled_from(PROPERTY_KEYS[:4]),
                                             st.sampled_from(["ubuntu", "virtio", ""]),
                                             max_size=2)))
        return document
    for key in draw(st.lists(st.sampled_from(sorted(CREATE_FIELDS)), max_size=4, unique=True)):
        document[key] = draw(CREATE_FIELDS[key])
    extras = draw(st.dictionaries(property_keys, property_values, max_size=2))
    return {**extras, **document}


#: A value a patch path usually takes, so that patches often succeed.
_PATH_VALUES: tuple[tuple[str, st.SearchStrategy[Any]], ...] = (
    ("/name", names),
    ("/tags", tag_lists),
    ("/visibility", visibilities),
    ("/protected", booleans),
    ("/os_hidden", booleans),
    ("/min_ram", edge_ints),
    ("/min_disk", edge_ints),
    ("/disk_format", disk_formats),
    ("/container_format", container_formats),
    ("/owner", owners),
    ("/os_distro", property_values),
    ("/hw_disk_bus", property_values),
    ("/description", property_values),
)
_ODD_POINTERS = (
    "/tags/-", "/tags/0", "/locations", "/locations/-", "/locations/0", "/status", "/id",
    "/size", "/checksum", "/os_glance_x", "/deleted", "/properties", "/name/x", "/", "",
    "name", "//", "/~1x", "/~2", "/a~0b", "/\ud800", "/\x00", "/" + "p" * 256,
)

patch_pointers_and_values = st.one_of(
    *[st.tuples(st.just(path), values) for path, values in _PATH_VALUES],
    st.tuples(st.one_of(st.sampled_from(_ODD_POINTERS), nasty_text.map(lambda t: "/" + t),
                        json_scalars), json_values),
)
patch_ops = _one_of_weighted(st.sampled_from(["add", "replace", "remove"]),
                             st.sampled_from(["move", "copy", "test", "", "ADD", None, 1]))


@st.composite
def patch_operations(draw: st.DrawFn) -> Any:
    """One op object of either media type's shape, with the odd one missing a member."""
    op = draw(patch_ops)
    path, value = draw(patch_pointers_and_values)
    shape = draw(st.sampled_from(["v2.1", "v2.1", "v2.1", "v2.0", "no-value", "no-path",
                                  "no-op", "scalar"]))
    if shape == "v2.0":
        return {str(op): path, "value": value}
    if shape == "scalar":
        return draw(json_scalars)
    operation: dict[str, Any] = {"op": op, "path": path, "value": value}
    if shape == "no-value" or (op == "remove" and draw(st.booleans())):
        del operation["value"]
    elif shape == "no-path":
        del operation["path"]
    elif shape == "no-op":
        del operation["op"]
    return operation


patch_documents = weighted((3, st.lists(patch_operations(), max_size=4)), (1, json_values))

member_ids = st.one_of(st.sampled_from(["project-b", "project-c", "project-a", "project-d",
                                        "admin-project"]), nasty_text)
member_documents = st.one_of(
    st.fixed_dictionaries({"member": member_ids}),
    st.fixed_dictionaries({"member": json_scalars}),
    st.fixed_dictionaries({"status": st.sampled_from(["accepted", "rejected", "pending"])}),
    st.fixed_dictionaries({"status": json_scalars}),
    json_values,
)

#: Starts of disk image formats: the format inspector's magic numbers, whole or cut short.
MAGICS = (
    b"QFI\xfb", b"QFI\xfb\x00\x00\x00\x03", b"conectix", b"KDMV", b"KDMV\x01\x00\x00\x00",
    b"vhdxfile", b"# Disk DescriptorFile\n", b"<<< Oracle VM VirtualBox Disk Image >>>\n",
)
_HUGE_SIZES = (0, 1, 2**30, 2**63 - 1, 2**63, 2**64 - 1)


def _qcow2(version: int, backing: int, size: int, incompatible: int, cut: int) -> bytes:
    header = struct.pack(">4sIQIIQ", b"QFI\xfb", version, backing, 0, 16, size)
    header += b"\0" * (72 - len(header)) + struct.pack(">Q", incompatible) + b"\0" * 24
    return header[:cut]


def _vhd_footer(size: int, at_end: bool) -> bytes:
    footer = b"conectix" + b"\0" * 40 + struct.pack(">QQ", size, size) + b"\0" * 448
    return (b"\0" * 1024 + footer) if at_end else footer


def _vmdk(descriptor: bytes, offset_sectors: int, sectors: int, cut: int) -> bytes:
    header = b"KDMV" + struct.pack("<II", 1, 3) + struct.pack("<Q", 2048)
    header += struct.pack("<QQ", offset_sectors, sectors)
    image = header + b"\0" * (512 * offset_sectors - len(header)) + descriptor
    return image[:cut]


def _vdi(size: int) -> bytes:
    header = bytearray(0x180)
    struct.pack_into("<I", header, 0x40, 0xBEDA107F)
    struct.pack_into("<Q", header, 0x170, size)
    return bytes(header)


def _vhdx(metadata_offset: int, item_offset: int, size: int, cut: int) -> bytes:
    """A VHDX whose region table points at a metadata table (perhaps beyond the data)."""
    region_guid = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
    size_guid = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8").bytes_le
    image = bytearray(b"vhdxfile" + b"\0" * (192 * 1024 - 8))
    image += b"regi" + struct.pack("<II", 0, 1) + b"\0" * 4
    image += region_guid + struct.pack("<QII", metadata_offset, 64 * 1024, 1)
    if metadata_offset - len(image) < 1024 * 1024:
        image += b"\0" * (metadata_offset - len(image))
        table = b"metadata" + struct.pack("<HH", 0, 1) + b"\0" * 20
        table += size_guid + struct.pack("<II", item_offset, 8) + b"\0" * 8
        if item_offset < 1024 * 1024:
            table += b"\0" * max(0, item_offset - len(table)) + struct.pack("<Q", size)
        image += table
    return bytes(image[:cut])


_DESCRIPTORS = (
    b'# Disk DescriptorFile\ncreateType="monolithicSparse"\nRW 2048 SPARSE "x.vmdk"\n',
    b'# Disk DescriptorFile\ncreateType="monolithicFlat"\nRW 2048 FLAT "/etc/passwd" 0\n',
    b'createType="streamOptimized"\nRW 1 SPARSE\nRW 1 SPARSE\n',
    b"\xff\xfe\x00garbage",
    b"",
)

upload_bodies = weighted(
    (1, st.binary(max_size=64)),
    (3, st.tuples(st.sampled_from(MAGICS), st.binary(max_size=24)).map(b"".join)),
    (2, st.builds(_qcow2, st.sampled_from([2, 3, 0, 2**32 - 1]), st.sampled_from([0, 0, 512]),
                  st.sampled_from(_HUGE_SIZES), st.sampled_from([0, 4, 2**64 - 1]),
                  st.sampled_from([4, 8, 20, 31, 32, 75, 80, 104, 4096]))),
    (1, st.builds(_vhd_footer, st.sampled_from(_HUGE_SIZES), st.booleans())),
    (1, st.builds(_vmdk, st.sampled_from(_DESCRIPTORS), st.sampled_from([1, 2, 3]),
                  st.sampled_from([1, 2, 4096]), st.sampled_from([20, 44, 600, 1200, 10**6]))),
    (1, st.builds(_vdi, st.sampled_from(_HUGE_SIZES))),
    (1, st.builds(_vhdx, st.sampled_from([256 * 1024, 10**12]),
                  st.sampled_from([64, 65536 - 8, 10**9]), st.sampled_from(_HUGE_SIZES),
                  st.sampled_from([8, 200 * 1024, 10**7]))),
    (1, st.sampled_from([
        b"\0" * 510 + b"\x55\xaa",
        b"\0" * 512 + b"EFI PART" + b"\0" * 100,
        b"\0" * 0x8001 + b"CD001" + b"\0" * 200,
        b"\0" * 0x8001 + b"CD001",
    ])),
    (1, _repeat([b"\0", b"\xff", b"A"], [4096, 65536, 65537, 300_000, 1024 * 1024 + 1])),
)

#: Where uploads go: mostly images that can take data (queued, with formats), so that the
#: format inspection sees the bodies.
upload_targets = weighted(
    (4, st.sampled_from([SEED_IDS["queued"], SEED_IDS["community"], SEED_IDS["hidden"]])),
    (3, st.integers(0, 7).map(lambda n: f"@@new{n}@@".encode())),
    (2, st.sampled_from(sorted(SEED_IDS.values()))),
)

#: Bodies that are not the JSON document a route expects, from empty to 50,000 levels deep.
odd_json_bodies = st.one_of(
    st.sampled_from([
        b"", b" ", b"{", b"null", b"1", b'"x"', b"[]", b"{}", b"\xff\xfe", b"\xef\xbb\xbf{}",
        b'{"a": 1e999999}', b"NaN", b'{"name": "\\ud800"}', b'{"name": "\\u0000"}',
        b'{"name": "x", "name": "y"}', b'{"name": "\xed\xa0\x80"}', b"[" * 3 + b"]" * 2,
    ]),
    st.sampled_from([b"%s", b'{"min_ram": %s}', b'{"name": "x", "size_min": %s}']).map(
        lambda template: template % (b"1" + b"0" * 5000)),
    st.builds(lambda opener, closer, depth: opener * depth + closer * depth,
              st.sampled_from([b"[", b'{"a":[']), st.sampled_from([b"]"]),
              st.sampled_from([10, 900, 1000, 5000, 50_000])).map(
        lambda body: body if body.startswith(b"[") else body.replace(b"]", b"]}")),
    st.builds(lambda key, depth: b'{"%s": ' % key + b"[" * depth + b"]" * depth + b"}",
              st.sampled_from([b"name", b"tags", b"os_distro", b"properties", b"member"]),
              st.sampled_from([100, 990, 1000, 50_000])),
)


def encode_json(document: Any, style: str) -> bytes:
    """``document`` as JSON: escaped (``\\ud800`` stays an escape), raw UTF-8 (lone
    surrogates become invalid bytes), or with NaN/Infinity left in."""
    if style == "raw":
        return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(document).encode()


json_styles = st.sampled_from(["escaped", "escaped", "escaped", "raw"])


def json_bodies(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Mostly ``documents`` as JSON, sometimes a body that is not the JSON expected."""
    return weighted((4, st.builds(encode_json, documents, json_styles)), (1, odd_json_bodies))


# Path segments.
JUNK_SEGMENTS: tuple[Segment, ...] = (
    b"%ff", b"%ed%a0%80", b"%00", b"%", b"%zz", b"%2F", b"%2e%2e", b"..", b".", b"\xff",
    b"%c0%ae", b";x=1", b"%20", b"~", b"*", "\x00", "\ud800", "é", " ", "", "a/b",
)
#: Short enough for the request line (Twisted hangs up on lines over 16 KiB: see ``CLOSED``).
segment_text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=12),
                         _repeat(["a", "é", "\ud800", "\U0001f600"], [255, 256, 1000]))
junk_segments = st.one_of(
    st.sampled_from(JUNK_SEGMENTS), segment_text, segment_text,
    _repeat([b"a", b"%ff", b"%00"], [256, 5000]),
    st.just(b"a" * 20000),
)
image_segments = weighted(
    (6, st.sampled_from(sorted(SEED_IDS.values()))),
    (3, st.integers(0, 7).map(lambda n: f"@@new{n}@@".encode())),
    (1, st.uuids().map(str)),
    (1, st.sampled_from([SEED_IDS["active"].upper(), SEED_IDS["active"] + "x",
                         SEED_IDS["active"][:-1], SEED_IDS["active"].replace("-", "")])),
    (2, junk_segments),
)
tag_segments = st.one_of(st.sampled_from(["seed", "q", "new"]), segment_text, junk_segments)
member_segments = st.one_of(st.sampled_from(["project-b", "project-c", "project-d"]),
                            junk_segments)

# Query strings of the list.
TIMESTAMPS = (
    "2027-01-15T08:00:00Z", "2027-01-15T08:00:00", "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00", "2027-01-15", "2027-13-45T99:99:99Z", "now", "",
    "2027-01-15T08:00:00.123456+05:30", "1e9",
)
HUGE_TEXT_INTS = ("99999999999999999999", "-1", "0", "1", "2147483648", "9223372036854775808",
                  "-9223372036854775809", "1.5", "1e3", "", "0x10", " 5", "١٢")
LIST_VALUES: dict[str, st.SearchStrategy[Segment]] = {
    "limit": st.sampled_from(["0", "1", "2", "25", "1000", "1001", *HUGE_TEXT_INTS]),
    "marker": image_segments,
    "sort": st.sampled_from(["name:asc", "name:asc,size:desc", "size", "created_at:desc,id",
                             "bogus:asc", "name:sideways", "", ",", "name,name", "name:"]),
    "sort_key": st.sampled_from(["name", "size", "updated_at", "bogus", "", "id"]),
    "sort_dir": st.sampled_from(["asc", "desc", "up", ""]),
    "name": st.one_of(st.sampled_from(["active", "eq:active", "in:active,queued",
                                       'in:"a,b",c', 'in:"a', "gt:x", "eq:x:y"]),
                      segment_text),
    "id": st.one_of(st.sampled_from(sorted(SEED_IDS.values())),
                    st.sampled_from(["in:" + ",".join(sorted(SEED_IDS.values())[:3])]),
                    segment_text),
    "status": st.sampled_from(["active", "queued", "in:active,queued", "bogus", "neq:active"]),
    "visibility": st.sampled_from([*VISIBILITIES, "all", "bogus", ""]),
    "member_status": st.sampled_from(["accepted", "pending", "rejected", "all", "bogus"]),
    "owner": st.one_of(st.sampled_from(["project-a", "project-b", ""]), segment_text),
    "size": st.sampled_from(HUGE_TEXT_INTS),
    "size_min": st.sampled_from(HUGE_TEXT_INTS),
    "size_max": st.sampled_from(HUGE_TEXT_INTS),
    "min_ram": st.sampled_from(HUGE_TEXT_INTS),
    "min_disk": st.sampled_from(HUGE_TEXT_INTS),
    "created_at": st.tuples(st.sampled_from(["", "gt:", "gte:", "lt:", "lte:", "eq:", "neq:",
                                             "in:", "bogus:"]),
                            st.sampled_from(TIMESTAMPS)).map("".join),
    "updated_at": st.tuples(st.sampled_from(["", "gt:", "lte:", "neq:"]),
                            st.sampled_from(TIMESTAMPS)).map("".join),
    "tag": tag_segments,
    "os_hidden": st.sampled_from(["true", "false", "True", "1", "maybe", ""]),
    "protected": st.sampled_from(["true", "false", "True", ""]),
    "checksum": st.sampled_from(["0" * 32, "", "x"]),
    "os_hash_value": st.sampled_from(["0" * 128, ""]),
    "changes-since": st.just("2027-01-01T00:00:00Z"),
    "os_distro": st.one_of(st.sampled_from(["cirros", "ubuntu"]), segment_text),
    "hw_disk_bus": st.sampled_from(["virtio", "in:virtio,scsi"]),
}
#: The filters whose values meet parsers and columns with limits: twice as often.
_EDGY = frozenset({"limit", "marker", "sort", "size", "size_min", "size_max", "min_ram", "min_disk",
                   "created_at", "updated_at", "name", "tag"})
query_pairs = weighted(
    *[(2 if key in _EDGY else 1, st.tuples(st.just(key), values))
      for key, values in LIST_VALUES.items()],
    (2, st.tuples(junk_segments, st.one_of(segment_text, junk_segments))),
)


def encode_query(pairs: Iterable[tuple[Segment, Segment]]) -> bytes:
    return b"&".join(encode_part(k) + b"=" + encode_part(v) for k, v in pairs)


query_strings = weighted(
    (5, st.lists(query_pairs, min_size=1, max_size=4).map(encode_query)),
    (1, st.sampled_from([b"", b"&", b"=", b"limit", b"limit=1&limit=2", b"%ff=%ff", b"a=%",
                         b"tag=a&tag=b&tag=c", b"a" * 20000, b"sort=name&sort_key=name"])),
)

# Headers.
ACCEPTS = (
    b"application/json", b"*/*", b"text/plain", b"", b"application/json;q=0",
    b"text/html;q=abc", b"application/vnd.openstack.images-v2.1+json", b"\xff", b";;;,,,",
    b"*/*;q=1e999", b"application/json, text/html;q=0.9",
)
PATCH_V21 = b"application/openstack-images-v2.1-json-patch"
PATCH_V20 = b"application/openstack-images-v2.0-json-patch"
CONTENT_TYPES = (
    b"application/json", PATCH_V21, PATCH_V20, b"application/json-patch+json",
    b"application/octet-stream", b"text/plain", b"", PATCH_V21 + b"; charset=UTF-8",
    PATCH_V21.upper(), b"\xff", b"application/octet-stream; x=\x00",
)
RANGES = (
    b"bytes=0-99", b"bytes=-5", b"bytes=5-", b"bytes=0-0,1-1", b"items=1-2", b"bytes=--1",
    b"bytes=1-0", b"bytes=99999999999999999999-", b"bytes=-99999999999999999999", b"bytes=",
    b"bytes=4095-4095", b"bytes=4096-", b"\xff",
)
CONTENT_RANGES = (b"bytes 0-1/2", b"bytes */*", b"garbage", b"bytes 99999999999999999999-1/*",
                  b"bytes -1", b"")
HEADER_TEXT = (b"", b"project-a", b"a" * 300, b"\xc3\xa9t\xc3\xa9", b"\xff", b"\x00",
               b"a\x00b", b"a,b", b" admin ", b"ADMIN", b"admin,admin", b"reader", b",,")


def _identity(identity: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode(), v.encode()) for k, v in identity.items())


IDENTITY_HEADERS: tuple[tuple[tuple[bytes, bytes], ...], ...] = tuple(
    _identity(identity)
    for identity in (
        {}, PROJECT_A, PROJECT_A, PROJECT_B, PROJECT_C, ADMIN,
        {"X-Project-Id": "project-a", "X-Roles": "reader"},
        {"X-Roles": "member"},
        {"X-Project-Id": "project-d", "X-Roles": "member"},
    )
)
identities = weighted(
    (5, st.just(IDENTITY_HEADERS[1])),  # project-a's member: owns most of the seed
    (2, st.just(IDENTITY_HEADERS[5])),  # an admin
    (4, st.sampled_from(IDENTITY_HEADERS)),
    (1, st.tuples(st.sampled_from([b"X-Project-Id", b"X-Tenant-Id", b"X-Tenant", b"X-User-Id"]),
                  st.sampled_from(HEADER_TEXT),
                  st.sampled_from([b"X-Roles", b"X-Role"]),
                  st.sampled_from(HEADER_TEXT)).map(lambda t: ((t[0], t[1]), (t[2], t[3])))),
)
extra_headers = st.lists(
    st.one_of(
        st.tuples(st.just(b"Accept"), st.sampled_from(ACCEPTS)),
        st.tuples(st.just(b"X-Openstack-Request-Id"),
                  st.sampled_from([b"req-1", b"x" * 65, b"../..", b"\xff", b""])),
        st.tuples(st.just(b"Content-Type"), st.sampled_from(CONTENT_TYPES)),
        st.tuples(st.just(b"Range"), st.sampled_from(RANGES)),
        st.tuples(st.just(b"Content-Range"), st.sampled_from(CONTENT_RANGES)),
        st.tuples(st.just(b"X-Openstack-Image-Size"),
                  st.sampled_from([b"10", b"-1", b"abc", b"99999999999999999999", b"0"])),
        st.tuples(st.just(b"X-Identity-Status"), st.sampled_from([b"Confirmed", b"Invalid"])),
        st.tuples(st.just(b"Expect"), st.just(b"100-continue")),
        st.tuples(st.just(b"Connection"), st.sampled_from([b"close", b"keep-alive"])),
        st.tuples(st.sampled_from([b"X-Junk", b"x" * 300]), st.sampled_from(HEADER_TEXT)),
    ),
    max_size=3,
)

# The routes (Klein's table in imaged/web/app.py), and paths that are none.


@attrs.frozen
class Shape:
    """A request before the mutations: method, path under the prefix, query, headers, body."""

    method: bytes
    path: tuple[Segment, ...]
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    prefix: bytes = b"/v2"


def _shape(method: str, *path: Any, query: Any = None, headers: Any = None, body: Any = None,
           prefix: bytes = b"/v2") -> st.SearchStrategy[Shape]:
    """A strategy of ``Shape``; each piece is a value or a strategy of values."""

    def strategy(piece: Any, default: Any) -> st.SearchStrategy[Any]:
        if piece is None:
            return st.just(default)
        return piece if isinstance(piece, st.SearchStrategy) else st.just(piece)

    return st.tuples(
        st.tuples(*[strategy(p, p) for p in path]),
        strategy(query, b""), strategy(headers, ()), strategy(body, b""),
    ).map(lambda parts: Shape(method.encode(), tuple(parts[0]), parts[1], tuple(parts[2]),
                              parts[3], prefix))


def _json_content(types: Sequence[bytes]) -> st.SearchStrategy[tuple[tuple[bytes, bytes]]]:
    return _one_of_weighted(st.just(((b"Content-Type", types[0]),)),
                            st.sampled_from(types).map(lambda t: ((b"Content-Type", t),)),
                            st.just(()))


#: ``X-Image-Meta-Store``: the fuzzer's stores (on its multi-store world), none, odd ones.
_store_header = st.sampled_from([b"fast", b"cheap", b"nope", b"", b"\xff", b"fast,cheap"]).map(
    lambda name: ((b"X-Image-Meta-Store", name),))
upload_headers = weighted(
    (4, st.just(((b"Content-Type", b"application/octet-stream"),))),
    (1, _store_header.map(lambda h: ((b"Content-Type", b"application/octet-stream"), *h))),
    (1, st.sampled_from(CONTENT_TYPES).map(lambda t: ((b"Content-Type", t),))),
    (1, st.just(())),
)

#: ``POST /import`` bodies: every method name Glance has (and some it has not), with their
#: arguments well-formed, ill-typed or missing, and the multi-store keys.
import_documents = st.one_of(
    st.fixed_dictionaries(
        {"method": st.fixed_dictionaries(
            {"name": st.sampled_from(["glance-direct", "web-download", "glance-download",
                                      "copy-image", "", "GLANCE-DIRECT"])},
            optional={
                "uri": st.sampled_from(["http://127.0.0.1/x", "http://169.254.169.254/",
                                        "ftp://example.org/x", "http://u:p@example.org/",
                                        "", "http://[::1]:80/", "not a uri"]),
                "glance_image_id": st.sampled_from(["foo", str(uuid.UUID(int=7)), ""]),
                "glance_region": st.sampled_from(["RegionOne", "", "\u00e9"]),
                "glance_service_interface": st.sampled_from(["public", "x"]),
            })},
        optional={"all_stores": st.sampled_from([True, False, "yes", None]),
                  "stores": st.sampled_from([[], ["fast"], ["cheap", "fast"], ["nope"],
                                             [""], [7], "fast", None]),
                  "all_stores_must_succeed": st.sampled_from([True, 1])},
    ),
    json_values,
)
#: Legacy ``POST /v2/tasks`` bodies.
task_documents = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["import", "api_image_import", "", None])},
        optional={"input": st.one_of(
            st.fixed_dictionaries(
                {"import_from": st.sampled_from(["http://example.org/x.qcow2",
                                                 "http://127.0.0.1/", "", 7])},
                optional={"import_from_format": st.sampled_from(["qcow2", "raw", 3]),
                          "image_properties": st.one_of(create_documents(), json_values)}),
            json_values)}),
    json_values,
)

_create_headers = _json_content([b"application/json", b"text/plain", PATCH_V21])
_patch_headers = _json_content([PATCH_V21, PATCH_V20, b"application/json"])
_range_headers = st.lists(st.tuples(st.sampled_from([b"Range", b"Content-Range"]),
                                    st.sampled_from(RANGES + CONTENT_RANGES)), max_size=2)

#: Every route of imaged/web/app.py (weighted by how much can go wrong behind it), Glance's
#: routes imaged does not have, and paths no route has.
shapes: st.SearchStrategy[Shape] = weighted(
    (8, _shape("GET", "images", query=query_strings)),
    (5, _shape("POST", "images", body=json_bodies(create_documents()),
               headers=_create_headers)),
    (2, _shape("GET", "images", image_segments)),
    (5, _shape("PATCH", "images", image_segments, body=json_bodies(patch_documents),
               headers=_patch_headers)),
    (1, _shape("DELETE", "images", image_segments)),
    (1, _shape("POST", "images", image_segments, "actions",
               st.sampled_from(["deactivate", "reactivate", "reactivate", "bogus", ""]))),
    (2, _shape("PUT", "images", image_segments, "tags", tag_segments)),
    (1, _shape("DELETE", "images", image_segments, "tags", tag_segments)),
    (2, _shape("POST", "images", image_segments, "members",
               body=json_bodies(member_documents))),
    (1, _shape("GET", "images", image_segments, "members")),
    (1, _shape("GET", "images", image_segments, "members", member_segments)),
    (2, _shape("PUT", "images", image_segments, "members", member_segments,
               body=json_bodies(member_documents))),
    (1, _shape("DELETE", "images", image_segments, "members", member_segments)),
    (6, _shape("PUT", "images", upload_targets, "file", body=upload_bodies,
               headers=upload_headers)),
    (2, _shape("GET", "images", image_segments, "file", headers=_range_headers)),
    (1, _shape("GET", "images", image_segments, "file",
               query=st.sampled_from([b"prefer=cheap", b"prefer=fast,cheap", b"prefer=nope",
                                      b"prefer=", b"prefer=%ff"]))),
    (3, _shape("PUT", "images", upload_targets, "stage", body=upload_bodies,
               headers=upload_headers)),
    (3, _shape("POST", "images", image_segments, "import",
               body=json_bodies(import_documents), headers=_create_headers)),
    (1, _shape("POST", "images", image_segments, "import",
               body=json_bodies(import_documents),
               headers=_store_header.map(lambda h: ((b"Content-Type", b"application/json"),
                                                    *h)))),
    (1, _shape("GET", "images", image_segments, "tasks")),
    (1, _shape("GET", "tasks", query=query_strings)),
    (1, _shape("GET", "tasks", st.one_of(image_segments, junk_segments))),
    (1, _shape("DELETE", "tasks", image_segments)),
    (2, _shape("POST", "tasks", body=json_bodies(task_documents), headers=_create_headers)),
    (1, _shape("GET", "info", st.sampled_from(["usage", "import", "stores"]))),
    (1, _shape("GET", "info", "stores", "detail")),
    (1, _shape("GET", "schemas", st.sampled_from(["image", "images", "member", "members",
                                                  "task", "tasks", "bogus", ""]))),
    (1, _shape("GET", prefix=b"")),
    (1, _shape("GET", "versions", prefix=b"")),
    (1, _shape("GET", "healthcheck", prefix=b"")),
    (1, _shape("HEAD", "healthcheck", prefix=b"")),
    (1, _shape("GET", prefix=b"/v2")),
    # Glance routes imaged does not have, and paths nothing routes.
    (1, _shape("GET", "images", image_segments, "locations")),
    (1, _shape("POST", "images", image_segments, "locations",
               body=json_bodies(json_values))),
    (1, _shape("DELETE", "stores", st.sampled_from(["fast", "cheap", "file", "x", ""]),
               image_segments)),
    (2, _shape("GET", st.one_of(junk_segments, st.sampled_from(["images", "v2", "info"])),
               st.one_of(junk_segments, image_segments), query=query_strings)),
)

METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE",
           b"CONNECT", b"PROPFIND", b"get", b"FOO", b"G\xc3\x89T", b"M-SEARCH", b"A" * 300)
PREFIXES = (b"/v2", b"/v2.0", b"/v2.1", b"/v2.9", b"/v2.10", b"/v2.17", b"/v2.99", b"/v2.", b"/V2",
            b"/v1", b"/v3", b"", b"/versions", b"/healthcheck", b"/v2/v2", b"/%76%32")


@attrs.frozen
class Mutation:
    """What is done to a route's ``Shape``: the odd method, prefix, slash, body, framing."""

    method: bytes | None = None
    prefix: bytes | None = None
    slashes: str = "none"
    extra_segment: Segment | None = None
    body: bytes | None = None
    chunked: bool = False
    length: bytes | None = None
    version: bytes = b"HTTP/1.1"
    absolute: bool = False
    pieces: int = 1


def _rarely(strategy: st.SearchStrategy[Any], usual: Any = None) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, else a value of ``strategy``."""
    return weighted((3, st.just(usual)), (1, strategy))


#: Mostly nothing; else a few odd things at once (each field is odd one time in four).
mutations = weighted(
    (5, st.just(Mutation())),
    (2, st.builds(
        Mutation,
        method=_rarely(st.sampled_from(METHODS)),
        prefix=_rarely(st.sampled_from(PREFIXES)),
        slashes=_rarely(st.sampled_from(["trailing", "double", "leading"]), "none"),
        extra_segment=_rarely(junk_segments),
        body=_rarely(st.one_of(st.sampled_from([b"{}", b"x", b"[]"]), odd_json_bodies)),
        chunked=_rarely(st.just(True), False),
        length=_rarely(st.sampled_from([b"abc", b"-1", b"1, 1", b"0x10", b"",
                                        b"99999999999999999999999"])),
        version=_rarely(st.just(b"HTTP/1.0"), b"HTTP/1.1"),
        absolute=_rarely(st.just(True), False),
        pieces=_rarely(st.sampled_from([2, 3, 7]), 1),
    )),
)


def assemble(shape: Shape, mutation: Mutation, identity: tuple[tuple[bytes, bytes], ...],
             extras: list[tuple[bytes, bytes]]) -> Request:
    """The bytes of one request: a route's shape, mutated, with an identity and headers."""
    segments = [encode_part(s) for s in shape.path]
    if mutation.extra_segment is not None:
        segments.append(encode_part(mutation.extra_segment))
    prefix = shape.prefix if mutation.prefix is None else mutation.prefix
    path = prefix + b"".join(b"/" + s for s in segments)
    if mutation.slashes == "trailing":
        path += b"/"
    elif mutation.slashes == "double":
        path = path.replace(b"/", b"//", 2)[1:] if path.count(b"/") > 1 else path + b"//"
    elif mutation.slashes == "leading":
        path = b"/" + path
    if not path.startswith(b"/"):
        path = b"/" + path
    target = path + (b"?" + shape.query if shape.query else b"")
    if mutation.absolute:
        target = b"http://imaged.test:9292" + target
    body = shape.body if mutation.body is None else mutation.body
    length = mutation.length
    if length == b"1, 1":
        length = b"%d, %d" % (len(body), len(body))
    return Request(
        method=shape.method if mutation.method is None else mutation.method,
        target=target,
        headers=identity + shape.headers + tuple(extras),
        body=body,
        chunked=mutation.chunked and length is None,
        length=length,
        version=mutation.version,
        pieces=mutation.pieces,
    )


# The metadata definitions catalog (imaged/web/metadefs.py): every route of its ROUTES table,
# each with the methods it does not take, names the seed has and names no URL or column can
# hold, bodies valid, nearly valid (one member wrong) and junk.

#: Namespaces the grammar creates (and then finds, renames, fills and deletes).
FRESH_NAMESPACES = ("Fuzz::A", "Fuzz::B", "Fuzz::C")
NAMESPACE_NAMES = (*SEED_NAMESPACES.values(), *FRESH_NAMESPACES, "No::Such")
OBJECT_NAMES = (*SEED_OBJECTS, "Fresh")
#: Properties by their own names, and by the names they have on a resource type (prefixed).
PROPERTY_NAMES = (*SEED_PROPERTIES, "fresh")
PREFIXED_PROPERTY_NAMES = ("hw_speed", "hw:mode", "vol_size", "hw_", "speed")
TAG_NAMES = (*SEED_TAGS, "fresh", "ALPHA")
RESOURCE_TYPES = (*SEED_RESOURCE_TYPES, "OS::Fuzz::Fresh")
SCHEMA_NAMES = ("namespace", "namespaces", "object", "objects", "property", "properties", "tag",
                "tags", "resource_type", "resource_types", "resource_type_association", "bogus",
                "")

#: Names no column (80 characters) or URL can hold, and names that are nearly others.
ODD_NAMES = (
    "N" * 80, "N" * 81, "é" * 80, "é" * 81, "\U0001f600" * 80, "\U0001f600" * 81, "a/b", "/",
    "a%2Fb", "%2F", "\x00", "a\x00b", "\ud800", "x\ud83dy", "", " ", "Seed::Public ",
    "seed::public", "SEED::PUBLIC", ".", "..", "?", "#", "a?b&c=d", "%", "%zz", "\u2028", "~",
)
#: Path segments sent as they are: encoded slashes, NUL, surrogates, over-long.
ODD_NAME_SEGMENTS = (
    b"a%2Fb", b"%2F", b"%2f", b"%00", b"a%00", b"%ED%A0%80", b"%ff", b"N" * 81, b"%C3%A9" * 81,
    b"", b".", b"..", b"Seed::Public%00", b"Seed%3A%3APublic", b"Seed%3a%3aPrivate",
    b"Seed::Public%2Fobjects", b"Seed::Private;x", b"%20Seed::Public",
)


def _colons(name: str) -> bytes:
    """``name`` in a path as clients send the catalog's names: ``OS::Glance::Image``."""
    return quote(name, safe=":").encode("ascii")


def name_segments(pool: Sequence[str]) -> st.SearchStrategy[Segment]:
    """A path segment naming something: mostly one of ``pool``, else an odd name."""
    return weighted(
        (8, st.sampled_from(pool).map(_colons)),
        (1, st.sampled_from(pool)),  # every ':' percent-encoded
        (2, st.sampled_from(ODD_NAMES)),
        (1, st.sampled_from(ODD_NAME_SEGMENTS)),
        (1, junk_segments),
    )


def body_names(pool: Sequence[str]) -> st.SearchStrategy[Any]:
    """A name in a body: mostly one of ``pool``, else an odd name or text."""
    return weighted((12, st.sampled_from(pool)), (2, st.sampled_from(ODD_NAMES)),
                    (1, nasty_text))


#: Mostly the seed's namespaces (``Seed::Private`` is not protected: its content goes).
namespace_segments = weighted(
    (3, name_segments(tuple(SEED_NAMESPACES.values()))),
    (1, name_segments(NAMESPACE_NAMES)),
)
metadef_segments = {
    "objects": name_segments(OBJECT_NAMES),
    "properties": weighted((3, name_segments(PROPERTY_NAMES)),
                           (1, st.sampled_from(PREFIXED_PROPERTY_NAMES).map(_colons))),
    "tags": name_segments(TAG_NAMES),
    "resource_types": name_segments(RESOURCE_TYPES),
    "metadefs": weighted((4, st.sampled_from(SCHEMA_NAMES)), (1, junk_segments)),
}

PROPERTY_TYPES = ("string", "integer", "number", "boolean", "array", "object", None)


def _mostly(usual: Sequence[Any], edges: Sequence[Any]) -> st.SearchStrategy[Any]:
    """One of ``usual`` six times in seven, else one of ``edges``."""
    return weighted((6, st.sampled_from(usual)), (1, st.sampled_from(edges)))


#: Numbers for the bounds and counts of a property: ordinary, else past some column, parser
#: or sanity (Glance's schema has no upper bounds).
_BOUNDS = _mostly((0, 1, -1, 1.5, 10), (-0.0, 2**31, 2**63, -(2**63) - 1, 2**64, 10**400, 1e308))
_COUNTS = _mostly((0, 1, 5), (2**31, 2**63, 2**64, 10**400))
property_types = _one_of_weighted(st.sampled_from(PROPERTY_TYPES),
                                  st.sampled_from(["STRING", "", "bogus", "null"]))
PROPERTY_MEMBERS: dict[str, st.SearchStrategy[Any]] = {
    "description": _mostly(("How fast", ""), ("d" * 501, "\u2028")),
    "default": _mostly(("fast", 5, True, ""), (False, 1.5, None, [], {}, 2**64, 10**400, ["a"],
                                               {"a": 1})),
    "enum": weighted((6, st.lists(st.sampled_from(["fast", "slow"]), max_size=3, unique=True)),
                     (1, st.lists(st.sampled_from(["fast", 1, None, True, 1.5, [], {}, "fast"]),
                                  max_size=3))),
    "minimum": _BOUNDS,
    "maximum": _BOUNDS,
    "minLength": _COUNTS,
    "maxLength": _COUNTS,
    "minItems": _COUNTS,
    "maxItems": _COUNTS,
    "pattern": _mostly(("^[a-z]+$", ""), ("(", "[", "a{99999999999}", "\\")),
    "readonly": st.booleans(),
    "uniqueItems": st.booleans(),
    "additionalItems": st.booleans(),
    "operators": st.lists(st.sampled_from(["<or>", "<in>", "<all-in>", ""]), max_size=2),
    "items": st.fixed_dictionaries({}, optional={
        "type": property_types,
        "enum": st.lists(st.sampled_from(["a", "b", 1, None]), max_size=3)}),
    "required": st.lists(st.sampled_from(PROPERTY_NAMES), min_size=1, max_size=2, unique=True),
}


# Strategies made once: hypothesis works out a label for each strategy it meets, which costs
# more than the draw for strategies made afresh in every draw.
_titles = _mostly(("Speed", "T"), ("", "t" * 300))
_property_names = body_names(PROPERTY_NAMES)
_property_members = st.lists(st.sampled_from(sorted(PROPERTY_MEMBERS)), max_size=4, unique=True)


@st.composite
def property_documents(draw: st.DrawFn, named: bool) -> dict[str, Any]:
    """A property definition with a few of its optional members; ``named`` as its own
    document, else as a value of a ``properties`` map (whose keys name them)."""
    document: dict[str, Any] = {"title": draw(_titles), "type": draw(property_types)}
    if named:
        document["name"] = draw(_property_names)
    for key in draw(_property_members):
        document[key] = draw(PROPERTY_MEMBERS[key])
    return document


property_maps = st.dictionaries(_property_names, property_documents(named=False),
                                max_size=2)
object_documents = st.fixed_dictionaries({"name": body_names(OBJECT_NAMES)}, optional={
    "description": st.sampled_from(["An object", "", "d" * 1000]),
    "required": st.lists(st.sampled_from(PROPERTY_NAMES), max_size=2, unique=True),
    "properties": property_maps,
})
tag_documents = st.fixed_dictionaries({"name": body_names(TAG_NAMES)})
tag_list_documents = st.fixed_dictionaries({}, optional={
    "tags": st.lists(tag_documents, max_size=4)})
association_documents = st.fixed_dictionaries({"name": body_names(RESOURCE_TYPES)}, optional={
    "prefix": st.sampled_from(["hw_", "hw:", "", "p" * 80, "p" * 81, "a/b", "é" * 81]),
    "properties_target": st.sampled_from(["image", "", "t" * 80, "t" * 81]),
})
#: A new namespace's name: one the grammar then addresses, one it never does (a create of
#: everything that works), a taken one, an odd one.
new_namespace_names = weighted(
    (3, st.uuids().map(lambda u: f"Fuzz::{u.hex[:12]}")),
    (4, st.sampled_from(FRESH_NAMESPACES)),
    (2, st.sampled_from(NAMESPACE_NAMES)),
    (2, st.sampled_from(ODD_NAMES)),
    (1, nasty_text),
)
namespace_documents = st.fixed_dictionaries(
    {"namespace": new_namespace_names},
    optional={
        "display_name": _one_of_weighted(st.sampled_from(["Fuzz", "", "d" * 80, "é" * 80]),
                                         st.sampled_from(["d" * 81, "é" * 81])),
        "description": _one_of_weighted(st.sampled_from(["Fuzzed", "", "d" * 500]),
                                        st.just("d" * 501)),
        "visibility": _one_of_weighted(st.sampled_from(["public", "private"]),
                                       st.sampled_from(["shared", "community", "", None])),
        "protected": _one_of_weighted(st.booleans(), st.sampled_from(["true", 1, None])),
        "owner": _one_of_weighted(st.sampled_from(["project-a", "project-b", "admin-project",
                                                   "", "o" * 255]),
                                  st.sampled_from(["o" * 256, "é" * 256])),
        "resource_type_associations": st.lists(association_documents, max_size=3),
        "properties": property_maps,
        "objects": st.lists(object_documents, max_size=2),
        "tags": st.lists(tag_documents, max_size=4),
    },
)

#: What one member of a document becomes in a nearly valid one: another JSON type (lists for
#: objects, objects for strings), numbers past every column and parser, names too long.
CONFUSIONS: tuple[Any, ...] = (
    [], [1], ["a", "a"], [None], [[]], [{}], {}, {"a": 1}, {"name": {}}, {"type": "string"},
    {"title": "T", "type": "string"}, "", "x", "N" * 81, None, True, False, 0, -1, 1.5, -0.0,
    2**63, 2**64, -(2**63) - 1, 10**400, 1e308, float("inf"), float("-inf"), float("nan"),
)
confusions = weighted((4, st.sampled_from(CONFUSIONS)), (1, json_scalars), (1, json_values))


#: What a key becomes in a nearly valid document.
_odd_keys = st.sampled_from(("Name", "NAME", "name ", "", "N" * 81, "é", "\x00", "\ud800",
                             "self", "id"))
_hows = st.sampled_from(["confuse", "confuse", "confuse", "drop", "rename"])


@st.composite
def nearly(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """
    A document of ``documents`` with one thing wrong anywhere in it: a member or element of
    another type (``confusions``), a member missing, or a key renamed to an odd name.
    """
    document = copy.deepcopy(draw(documents))
    places: list[tuple[Any, Any]] = []
    pending = [document]
    while pending:
        value = pending.pop()
        items = (value.items() if isinstance(value, dict) else enumerate(value)
                 if isinstance(value, list) else ())
        for key, item in items:
            places.append((value, key))
            pending.append(item)
    if not places:
        return draw(confusions)
    container, key = places[draw(st.integers(0, len(places) - 1))]
    how = draw(_hows)
    if how == "drop" or (how == "rename" and isinstance(container, dict)):
        value = container.pop(key)
        if how == "rename":
            container[draw(_odd_keys)] = value
    else:
        container[key] = draw(confusions)
    return document


def metadef_bodies(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A route's documents: valid, nearly valid, any JSON, or a body that is not JSON."""
    return json_bodies(weighted((5, documents), (4, nearly(documents)), (1, json_values)))


def _many_tags(count: int, clash: bool) -> dict[str, Any]:
    """A bulk tag create of ``count`` tags; if ``clash``, the first again at the end."""
    tags = [{"name": f"t{i}"} for i in range(count)]
    return {"tags": tags + tags[:1] if clash else tags}


def _big_namespace(name: str, count: int, clash: bool) -> dict[str, Any]:
    """
    A namespace with ``count`` properties and tags and a tenth as many objects, near the
    body limit: all of it is inserted, and all of it must go again if ``clash`` (its last
    tag is its first again: a 409 once everything else is in).
    """
    return {
        "namespace": name,
        "resource_type_associations": [{"name": f"OS::Fuzz::T{i}"} for i in range(count // 100)],
        "properties": {f"p{i}": {"title": "P", "type": "string"} for i in range(count)},
        "objects": [{"name": f"o{i}", "required": ["p"], "properties": {
            "p": {"title": "P", "type": "integer"}}} for i in range(count // 10)],
        **_many_tags(count, clash),
    }


#: Documents of hundreds or thousands of definitions, built from small draws.
big_tag_lists = st.builds(_many_tags, st.sampled_from([100, 1000, 4000]), st.booleans())
big_namespaces = st.builds(
    _big_namespace, st.sampled_from((*FRESH_NAMESPACES, SEED_NAMESPACES["public"])),
    st.sampled_from([100, 500]), st.booleans())


def _big(documents: st.SearchStrategy[Any], big: st.SearchStrategy[Any]
         ) -> st.SearchStrategy[bytes]:
    """``metadef_bodies(documents)``, and one time in ten a big document."""
    return weighted((9, metadef_bodies(documents)),
                    (1, big.map(lambda document: json.dumps(document).encode())))


#: Where a body is not expected: mostly none.
no_body = weighted((8, st.just(b"")), (1, st.sampled_from([b"{}", b"x", b'{"name": "t"}'])))

METADEF_HUGE_INTS = ("99999999999999999999", "-1", "0", "1", "1.5", "1e3", "", " 5", "١٢",
                     "0x10", "9223372036854775808")
namespace_query_pairs = weighted(
    (2, st.tuples(st.just("limit"), st.sampled_from(["1", "2", "1000", *METADEF_HUGE_INTS]))),
    (2, st.tuples(st.just("marker"), namespace_segments)),
    (2, st.tuples(st.just("sort_key"), st.sampled_from(
        [*NAMESPACE_SORT_KEYS, "bogus", "", "name", "id", "created_at,namespace"]))),
    (2, st.tuples(st.just("sort_dir"), st.sampled_from(["asc", "desc", "up", "", "ASC"]))),
    (2, st.tuples(st.just("visibility"), st.one_of(
        st.sampled_from(["public", "private", "shared", "all", "", "PUBLIC"]), segment_text))),
    (2, st.tuples(st.just("resource_types"), st.one_of(st.sampled_from(
        ["OS::Glance::Image", "OS::Glance::Image,OS::Nova::Flavor", ",", " , ", "No::Such",
         "OS::Cinder::Volume,", ""]), segment_text))),
    (1, st.tuples(st.just("resource_type"), st.sampled_from(RESOURCE_TYPES))),
    (1, st.tuples(junk_segments, st.one_of(segment_text, junk_segments))),
)
tag_query_pairs = weighted(
    (2, st.tuples(st.just("limit"), st.sampled_from(["1", "2", *METADEF_HUGE_INTS]))),
    (2, st.tuples(st.just("marker"), metadef_segments["tags"])),
    (2, st.tuples(st.just("sort_key"), st.sampled_from([*TAG_SORT_KEYS, "bogus", "", "id"]))),
    (2, st.tuples(st.just("sort_dir"), st.sampled_from(["asc", "desc", "up", ""]))),
    (1, st.tuples(junk_segments, st.one_of(segment_text, junk_segments))),
)
resource_type_query_pairs = weighted(
    (4, st.tuples(st.just("resource_type"), st.one_of(
        st.sampled_from(RESOURCE_TYPES).map(_colons), st.sampled_from(["", "No::Such"]),
        segment_text))),
    (1, st.tuples(junk_segments, st.one_of(segment_text, junk_segments))),
)


def metadef_queries(pairs: st.SearchStrategy[tuple[Segment, Segment]]
                    ) -> st.SearchStrategy[bytes]:
    """Query strings of ``pairs`` (a key may repeat), none, or odd ones."""
    return weighted(
        (2, st.just(b"")),
        (5, st.lists(pairs, min_size=1, max_size=4).map(encode_query)),
        (1, st.sampled_from([b"&", b"=", b"limit", b"limit=1&limit=2", b"marker=&limit=",
                             b"sort_key=name&sort_key=bogus", b"%ff=%ff", b"a=%",
                             b"resource_types=OS::Glance::Image&resource_types=",
                             b"visibility=public&visibility=", b"limit=%00", b"marker=%ff",
                             b"marker=%ED%A0%80", b"a" * 20000])),
    )


#: ``X-Openstack-Append`` (a bulk tag create appends rather than replaces): Glance's true
#: values, false ones, and odd ones.
APPEND_VALUES = (b"true", b"True", b"TRUE", b"1", b"yes", b"on", b"t", b"y", b"false", b"0",
                 b"", b" true ", b"\xff", b"tru\te", b"true, true", b"a" * 300)
append_headers = st.lists(st.tuples(st.sampled_from([b"X-Openstack-Append",
                                                     b"x-openstack-append"]),
                                    st.sampled_from(APPEND_VALUES)), max_size=2)
_metadef_json_headers = _json_content([b"application/json", b"text/plain", PATCH_V21])
_tags_headers = st.tuples(_metadef_json_headers, append_headers).map(
    lambda parts: (*parts[0], *parts[1]))


@attrs.frozen
class RouteGrammar:
    """How often a route of the catalog is drawn, and its query, headers and body."""

    weight: int
    query: st.SearchStrategy[bytes] = st.just(b"")
    headers: st.SearchStrategy[Any] = st.just(())
    body: st.SearchStrategy[bytes] = no_body


_NS = METADEF_NAMESPACES + "/<namespace>"


def _writes(documents: st.SearchStrategy[Any], weight: int) -> RouteGrammar:
    return RouteGrammar(weight, headers=_metadef_json_headers, body=metadef_bodies(documents))


#: Each route of ``imaged.web.metadefs.ROUTES`` by (method, rule): its weight and parts.  A
#: route missing here is drawn with weight 1 and no parts, and ``tests/test_fuzz.py`` fails.
METADEF_GRAMMAR: dict[tuple[str, str], RouteGrammar] = {
    ("GET", "/v2/schemas/metadefs/<name>"): RouteGrammar(1),
    ("GET", "/v2/metadefs/resource_types"): RouteGrammar(1),
    ("GET", METADEF_NAMESPACES): RouteGrammar(4, query=metadef_queries(namespace_query_pairs)),
    ("POST", METADEF_NAMESPACES): RouteGrammar(5, headers=_metadef_json_headers,
                                               body=_big(namespace_documents, big_namespaces)),
    ("GET", _NS): RouteGrammar(2, query=metadef_queries(resource_type_query_pairs)),
    ("PUT", _NS): _writes(namespace_documents, 3),
    ("DELETE", _NS): RouteGrammar(1),
    ("GET", _NS + "/objects"): RouteGrammar(1),
    ("POST", _NS + "/objects"): _writes(object_documents, 3),
    ("DELETE", _NS + "/objects"): RouteGrammar(1),
    ("GET", _NS + "/objects/<name>"): RouteGrammar(1),
    ("PUT", _NS + "/objects/<name>"): _writes(object_documents, 2),
    ("DELETE", _NS + "/objects/<name>"): RouteGrammar(1),
    ("GET", _NS + "/properties"): RouteGrammar(1),
    ("POST", _NS + "/properties"): _writes(property_documents(named=True), 3),
    ("DELETE", _NS + "/properties"): RouteGrammar(1),
    ("GET", _NS + "/properties/<name>"): RouteGrammar(
        1, query=metadef_queries(resource_type_query_pairs)),
    ("PUT", _NS + "/properties/<name>"): _writes(property_documents(named=True), 2),
    ("DELETE", _NS + "/properties/<name>"): RouteGrammar(1),
    ("GET", _NS + "/tags"): RouteGrammar(2, query=metadef_queries(tag_query_pairs)),
    ("POST", _NS + "/tags"): RouteGrammar(3, headers=_tags_headers,
                                          body=_big(tag_list_documents, big_tag_lists)),
    ("DELETE", _NS + "/tags"): RouteGrammar(1),
    ("GET", _NS + "/tags/<name>"): RouteGrammar(1),
    ("POST", _NS + "/tags/<name>"): RouteGrammar(2),
    ("PUT", _NS + "/tags/<name>"): _writes(tag_documents, 2),
    ("DELETE", _NS + "/tags/<name>"): RouteGrammar(1),
    ("GET", _NS + "/resource_types"): RouteGrammar(1),
    ("POST", _NS + "/resource_types"): _writes(association_documents, 2),
    ("DELETE", _NS + "/resource_types/<resource_type>"): RouteGrammar(1),
}


def rule_segments(rule: str) -> tuple[Any, ...]:
    """The path of a Klein rule under ``/v2``, each ``<variable>`` a strategy of what names
    it (by the collection before it)."""
    parts = rule.split("/")[2:]
    return tuple(
        (namespace_segments if part == "<namespace>" else metadef_segments[parts[i - 1]])
        if part.startswith("<") else part
        for i, part in enumerate(parts)
    )


def _route_shape(method: str, rule: str, grammar: RouteGrammar) -> st.SearchStrategy[Shape]:
    return _shape(method, *rule_segments(rule), query=grammar.query, headers=grammar.headers,
                  body=grammar.body)


_ALLOWED: dict[str, set[str]] = collections.defaultdict(set)
for _rule, _method, _ in METADEF_ROUTES:
    _ALLOWED[_rule].add(_method)
_ANY_BODY = weighted((2, st.just(b"")), (1, metadef_bodies(namespace_documents)),
                     (1, metadef_bodies(object_documents)))

#: Every route of the catalog, each rule with the methods it does not take (405s), and paths
#: under ``/v2/metadefs`` that no route has.
metadef_shapes: st.SearchStrategy[Shape] = weighted(
    # Heaviest first: hypothesis draws the first of a table more often than its weight says.
    *sorted(((grammar.weight, _route_shape(method, rule, grammar))
             for rule, method, _ in METADEF_ROUTES
             for grammar in [METADEF_GRAMMAR.get((method, rule), RouteGrammar(1))]),
            key=lambda pair: -pair[0]),
    (4, st.one_of(*[
        _shape(method, *rule_segments(rule), body=_ANY_BODY, headers=_metadef_json_headers)
        for rule in sorted(_ALLOWED)
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        if method not in _ALLOWED[rule]])),
    (1, _shape("GET", "metadefs", st.one_of(st.sampled_from(
        ["", "namespaces", "resource_types", "objects", "bogus"]), junk_segments),
        st.one_of(st.sampled_from(["", "x", "OS::Glance::Image"]), junk_segments))),
    (1, _shape("GET", "metadefs", "namespaces", namespace_segments,
               st.sampled_from(["objects", "properties", "tags", "resource_types", "bogus", ""]),
               st.one_of(st.sampled_from(["", "x", "alpha"]), junk_segments),
               st.sampled_from(["", "x", "alpha"]))),
)

#: Who asks the catalog: mostly an administrator (Glance's default policy lets only them
#: write it) and project-a (a reader and member, the owner of ``Seed::Private``).
metadef_identities = weighted(
    (5, st.just(_identity(ADMIN))),
    (3, st.just(_identity(PROJECT_A))),
    (4, identities),
)
metadef_extra_headers = weighted(
    (4, extra_headers),
    (1, st.tuples(extra_headers, append_headers).map(lambda parts: [*parts[0], *parts[1]])),
)


#: Requests from the grammar: any route, mostly well-formed, with one thing odd in some; one
#: in four for the catalog (hypothesis favours the first of a table: a little less, seen).
image_requests: st.SearchStrategy[Request] = st.tuples(
    shapes, mutations, identities, extra_headers).map(lambda parts: assemble(*parts))
metadef_requests: st.SearchStrategy[Request] = st.tuples(
    metadef_shapes, mutations, metadef_identities, metadef_extra_headers).map(
    lambda parts: assemble(*parts))
requests: st.SearchStrategy[Request] = weighted((3, image_requests), (1, metadef_requests))


# -- the property -------------------------------------------------------------------------------

READ_ONLY_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

_ADMIN_HEADERS = _identity(ADMIN)
#: What shows the service still alive: the versions document, a list of images and one of
#: namespaces.
LIVENESS = (Request(b"GET", b"/versions"), Request(b"GET", b"/v2/images", _ADMIN_HEADERS),
            Request(b"GET", METADEF_NAMESPACES.encode(), _ADMIN_HEADERS))


def handler_name(request: Request) -> str:
    """The route handler (``imaged/web/app.py``) that ``request`` reaches, or ``unrouted``."""
    target = request.target
    if target.startswith(b"http://"):
        target = b"/" + target.split(b"/", 3)[-1]
    try:
        match = ImagesAPI.router.match(request.method, target)
    except Exception:
        match = None
    if match is None:
        return "unrouted"
    return str(match.handler.__name__).rsplit(" ", 1)[-1]  # Klein: "route ... for <name>"


@attrs.frozen
class Problem:
    """
    A request that broke the property: which parts (``5xx``, ``logged``, ``no answer``,
    ``exception``, ``changed``, ``dead``), what came back, what proves it, and how to replay
    it: ``planned`` (as drawn, with ``@@newN@@``) after ``before``, the planned requests
    that changed something earlier in its run.
    """

    broken: tuple[str, ...]
    request: Request
    response: Response | None
    details: tuple[str, ...]
    planned: Request
    before: tuple[Request, ...] = ()
    #: The kinds of the events it logged (``event_kind``).
    logged: tuple[str, ...] = ()
    #: What a refused request changed (``State.differences``), e.g. ``images.updated_at``.
    changed: tuple[str, ...] = ()

    def kind(self) -> str:
        """
        What sort of bug this is, for telling bugs apart: the exception logged and the
        innermost imaged frame it was raised in, else what broke, the status and the route.
        """
        if self.logged:
            return self.logged[0]
        code = self.response.code if self.response is not None else "-"
        what = "+".join(self.broken)
        if self.changed:
            what = f"changed {', '.join(self.changed)} by a refused"
        return f"{what} {code} from {handler_name(self.request)}"

    def describe(self) -> str:
        lines = [f"broken: {', '.join(self.broken)}", "request:", self.request.describe(),
                 "response:",
                 self.response.describe() if self.response is not None else "(none)"]
        if self.details:
            lines += ["details:", *("  " + d.replace("\n", "\n  ") for d in self.details)]
        return "\n".join(lines)


_ERROR_TYPES = {"json": b"application/json", "plain": b"text/plain; charset=UTF-8",
                "html": b"text/html; charset=UTF-8"}


def error_format_problems(request: Request, response: Response) -> list[str]:
    """
    What is wrong with an error response's format: Glance's (WebOb's) page of ``code title``
    and the message, as HTML, flat JSON or plain text as the last ``Accept`` asks
    (``imaged.web.errors.error_format``; tests/test_api_versions_errors.py pins it down).
    Twisted's refusals of requests it cannot parse (a bare status line, the connection
    closed: ``twisted.web.http``'s ``_respondToBadRequestAndDisconnect``) are not imaged's.
    """
    if response.code < 400 or request.method == b"HEAD" or (not response.headers
                                                             and not response.body):
        return []
    accepts = [v for k, v in request.headers if k.lower() == b"accept"]
    fmt = error_format(accepts[-1].decode("latin-1") if accepts else None)
    content_type = response.header(b"content-type")
    if content_type != _ERROR_TYPES[fmt]:
        return [f"an error answered as {content_type!r}, not Glance's {fmt} "
                f"({_ERROR_TYPES[fmt]!r})"]
    status = b"%d " % response.code
    if fmt == "json":
        try:
            document = json.loads(response.body)
        except ValueError:
            return ["an error's JSON body is not JSON"]
        if not (isinstance(document, dict) and set(document) == {"message", "code", "title"}
                and str(document["code"]).startswith(status.decode())):
            return [f"an error's JSON body is not Glance's: {_cut(response.body)}"]
    elif fmt == "plain" and not response.body.startswith(status):
        return [f"an error's plain body is not Glance's: {_cut(response.body)}"]
    elif fmt == "html" and not (response.body.startswith(b"<html>")
                                and b"<title>" + status in response.body):
        return [f"an error's HTML body is not Glance's: {_cut(response.body)}"]
    return []


class Checker:
    """
    Sends requests in a ``World`` and checks each against the property: an answer below 500
    to every request, errors in Glance's format, nothing logged at error level or with a
    traceback, and nothing changed by a refused (4xx) request.
    """

    def __init__(self, world: World, watch: LogWatch) -> None:
        self.world = world
        self.watch = watch
        self.state = world.state()
        #: The planned requests that changed something, to replay before a problem.
        self.changes: list[Request] = []
        #: Read-only requests sent since ``state`` was read: if the state is found changed,
        #: they are suspects too.
        self.unread: list[Request] = []
        self.last_response: Response | None = None
        self.sent = 0

    def run(self, planned: Request) -> Problem | None:
        """Send one request (its ``@@newN@@`` resolved); what it broke, if anything."""
        world = self.world
        request = world.resolve(planned)
        self.sent += 1
        broken: list[str] = []
        details: list[str] = []
        response: Response | None = None
        try:
            response = world.send(request)
        except NoAnswer as e:
            if not request.promises_more():
                broken.append("no answer")
                details.append(str(e))
        except Exception:
            broken.append("exception")
            details.append(Failure().getTraceback())
        logged = self.watch.take()
        if logged:
            broken.append("logged")
            details += [event.text for event in logged]
        if response is not None and response.code >= 500:
            broken.append("5xx")
        if response is not None and (wrong := error_format_problems(request, response)):
            broken.append("error format")
            details += wrong
        self.last_response = response
        if response is not None:
            world.remember(request, response)
        refused = response is not None and (
            response.code == CLOSED or 400 <= response.code < 500)
        before = tuple(self.changes)
        changed: list[str] = []
        if refused or response is None or request.method not in READ_ONLY_METHODS:
            after = world.state()
            if after != self.state:
                if refused:
                    broken.append("changed")
                    differences = self.state.differences(after)
                    changed = sorted({what for what, _ in differences})
                    details += [detail for _, detail in differences]
                    details += [f"(or by this earlier read-only request)\n{r.describe()}"
                                for r in self.unread]
                self.changes.append(planned)
            self.state = after
            self.unread = []
        else:
            self.unread.append(request)
        if not broken:
            return None
        return Problem(tuple(broken), request, response, tuple(details), planned, before,
                       tuple(event.kind for event in logged), tuple(changed))

    def alive(self) -> Problem | None:
        """
        The service still answers the versions document and a list, and nothing was logged
        since the last request (``Unhandled error in Deferred`` is logged when the Deferred
        is garbage collected: the young generations are collected here).
        """
        gc.collect(1)
        for request in LIVENESS:
            problem = self.run(request)
            response = self.last_response
            if problem is None and (response is None or response.code != 200):
                problem = Problem(("not 200",), request, response, (), request,
                                  tuple(self.changes))
            if problem is not None:
                return attrs.evolve(problem, broken=("dead", *problem.broken))
        return None


class Worlds:
    """
    Seeded worlds over one metadata store: the seed is made once through HTTP, and each new
    world starts from a ``Snapshot`` of it (a new service over the same database, restored).
    """

    def __init__(self, store: SQLMetadataStore, clock: Clock, multi_store: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.multi_store = multi_store
        first = World(store, clock, multi_store=multi_store)
        seed(first)
        self.seed = Snapshot.take(first.engine, first.blobs)
        self.made = 0

    def __call__(self) -> World:
        blobs = self.seed.restore(store_engine(self.store))
        self.made += 1
        return World(self.store, self.clock, blobs, self.multi_store)


# -- what a run found -------------------------------------------------------------------------

#: Replays a minimization may spend on one problem.
MINIMIZE_BUDGET = 120


def _json_variants(body: bytes) -> list[bytes]:
    """The body with one member or element less (a JSON object or array body), else none."""
    try:
        document = json.loads(body)
        variants: list[Any] = []
        if isinstance(document, dict):
            variants = [{k: v for k, v in document.items() if k != key} for key in document]
        elif isinstance(document, list):
            variants = [document[:i] + document[i + 1 :] for i in range(len(document))]
        return [json.dumps(v).encode() for v in variants]
    except (ValueError, RecursionError):  # not JSON, or too deep for Python's parser
        return []


_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _run_variants(data: bytes) -> list[bytes]:
    """
    ``data`` with one run of a repeated unit (``%ff%ff...``, ``aaa...``) cut to one unit;
    not inside image ids (``5eed0000-...-000000000002`` must keep naming its image).
    """
    ids = [m.span() for m in _UUID.finditer(data)]
    return [data[: m.start()] + m.group(1) + data[m.end() :]
            for m in re.finditer(rb"(.{1,9}?)\1{7,}", data, re.S)
            if not any(start < m.end() and m.start() < end for start, end in ids)]


def simpler(request: Request) -> list[Request]:
    """Requests like ``request`` with one thing fewer or plainer, simplest changes first."""
    candidates = [
        attrs.evolve(request, headers=request.headers[:i] + request.headers[i + 1 :])
        for i in range(len(request.headers))
    ]
    if request.body:
        candidates.append(attrs.evolve(request, body=b""))
        candidates += [attrs.evolve(request, body=b) for b in _json_variants(request.body)]
        candidates += [attrs.evolve(request, body=b) for b in _run_variants(request.body)]
    for name, plain in (("chunked", False), ("length", None), ("version", b"HTTP/1.1"),
                        ("pieces", 1)):
        if getattr(request, name) != plain:
            candidates.append(attrs.evolve(request, **{name: plain}))
    path, _, query = request.target.partition(b"?")
    if query:
        candidates.append(attrs.evolve(request, target=path))
        pairs = query.split(b"&")
        candidates += [attrs.evolve(request, target=path + b"?" + b"&".join(
            pairs[:i] + pairs[i + 1 :])) for i in range(len(pairs)) if len(pairs) > 1]
    if path.startswith(b"http://"):
        candidates.append(attrs.evolve(request, target=b"/" + request.target.split(b"/", 3)[-1]))
    candidates += [attrs.evolve(request, target=t) for t in _run_variants(request.target)]
    return candidates


def names_seed(data: bytes) -> bool:
    """Whether ``data`` (a target or body) names one of the seed's images or namespaces."""
    return any(i.encode() in data for i in SEED_IDS.values()) or any(
        name.encode() in data or quote(name, safe="").encode() in data.replace(b"%3a", b"%3A")
        for name in SEED_NAMESPACES.values())


class Findings:
    """
    The problems of a fuzzing run, by kind (``Problem.kind``): how often each was seen and
    the first of each, which ``report`` minimizes and turns into curl lines.
    """

    def __init__(self, worlds: Worlds, watch: LogWatch) -> None:
        self.worlds = worlds
        self.watch = watch
        self.counts: collections.Counter[str] = collections.Counter()
        self.first: dict[str, Problem] = {}

    def __bool__(self) -> bool:
        return bool(self.counts)

    def add(self, problem: Problem | None) -> None:
        if problem is not None:
            kind = problem.kind()
            self.counts[kind] += 1
            self.first.setdefault(kind, problem)

    def replay(self, before: Sequence[Request], planned: Request) -> tuple[Problem | None,
                                                                           World]:
        """``before`` then ``planned`` in a fresh world: what ``planned`` broke there."""
        world = self.worlds()
        checker = Checker(world, self.watch)
        for request in before:
            checker.run(request)
        return checker.run(planned), world

    def minimize(self, problem: Problem) -> Problem:
        """
        A smaller request sequence showing the same kind of problem: fewer earlier requests,
        then fewer headers, query parameters, body members and repeats, one at a time.
        """
        kind = problem.kind()
        budget = MINIMIZE_BUDGET

        def shows(before: Sequence[Request], planned: Request) -> Problem | None:
            nonlocal budget
            budget -= 1
            found, _ = self.replay(before, planned)
            return found if found is not None and found.kind() == kind else None

        best = problem
        if best.before and (found := shows((), best.planned)) is not None:
            best = attrs.evolve(found, before=())
        for i in reversed(range(len(best.before))):
            fewer = best.before[:i] + best.before[i + 1 :]
            if budget > 0 and (found := shows(fewer, best.planned)) is not None:
                best = attrs.evolve(found, before=fewer)
        improved = True
        while improved and budget > 0:
            improved = False
            for candidate in simpler(best.planned):
                if budget <= 0:
                    break
                if (found := shows(best.before, candidate)) is not None:
                    best = attrs.evolve(found, planned=candidate, before=best.before)
                    improved = True
                    break
        return best

    def curl_lines(self, problem: Problem) -> list[str]:
        """
        Shell lines replaying ``problem`` on a fresh ``./dev run``: the seed's requests when
        the replay names a seed image or namespace, the earlier requests (an image they create
        is kept in ``$NEWn``), then the failing one.
        """
        world = self.worlds()
        checker = Checker(world, self.watch)
        sent: list[tuple[Request, Response | None]] = []
        for planned in (*problem.before, problem.planned):
            request = world.resolve(planned)
            checker.run(planned)
            sent.append((request, checker.last_response))
        names = {created: f"NEW{n}" for n, created in enumerate(world.created)}
        seeded = any(names_seed(r.target + r.body) for r, _ in sent)
        lines = ["# after the seed's requests (above)"] if seeded else []
        for request, response in sent:
            line = request.curl(names)
            created = response is not None and response.code == 201 and request.method == b"POST"
            new = (response.header(b"location") or b"").rsplit(b"/", 1)[-1].decode() if (
                created and response is not None) else ""
            if new in names:
                line = (f"{names[new]}=$({line.replace(' -i ', ' ')} | python3 -c "
                        "'import json, sys; print(json.load(sys.stdin)[\"id\"])')")
            lines.append(line)
        return lines

    def report(self) -> str:
        """Each kind of problem: how often, a minimal reproduction, and what it showed."""
        sections = [f"the fuzzer found {len(self.counts)} kind(s) of problem in "
                    f"{sum(self.counts.values())} request(s):",
                    *(f"  {count:5d} x {kind}" for kind, count in self.counts.most_common()),
                    "", "Reproductions run against a fresh `./dev run`; those naming the seed's"
                    " images (5eed0000-...) or namespaces (Seed::...) need the seed's requests"
                    " first:",
                    *("  " + r.curl() for r in seed_requests())]
        for kind, count in self.counts.most_common():
            problem = self.minimize(self.first[kind])
            sections += [
                "", "=" * 100, f"{count} x {kind}", "-" * 100, problem.describe(),
                "reproduce:", *("  " + line for line in self.curl_lines(problem)),
            ]
        return "\n".join(sections)


__all__ = [
    "CLOSED",
    "LIMITS",
    "METADEF_GRAMMAR",
    "METADEF_ROUTES",
    "SEED_IDS",
    "SEED_NAMESPACES",
    "Checker",
    "Findings",
    "LogWatch",
    "NoAnswer",
    "Problem",
    "Request",
    "Response",
    "World",
    "Worlds",
    "error_format_problems",
    "event_kind",
    "image_requests",
    "is_metadef",
    "metadef_requests",
    "metadef_seed_requests",
    "requests",
    "seed_requests",
]
