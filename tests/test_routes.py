"""
One route table: the streaming pre-router, Klein and the metrics agree on where a request goes.

Every request below is sent twice over the wire: to the real site and protocol over a
``StringTransport`` (in memory), and to ``twistd imaged`` with curl over a real socket.  Each
answers what Glance answers, and only a real upload stores anything: an upload to a path no
route serves used to be applied while the client got 404 or 405.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from imaged.api import APIConfig, Limits, routes
from imaged.testing import LOCAL_PEER, MemoryBlobStore, TwistdDaemon, memory_image_service
from imaged.web.routing import VERSIONS, negotiate, segments_of
from imaged.web.site import make_site

OWNER = {"X-Project-Id": "p1", "X-Roles": "member,reader"}
DATA = b"0123456789" * 1000

#: What each request answers and whether it stores the data: (method, path, code, stored).
#: ``{id}`` is a queued raw image of project p1; ``{ID}`` the same id in upper case; ``{pct}``
#: it percent-encoded throughout; ``{slash}`` it with one character replaced by ``%2F``.
CASES: list[tuple[str, str, int, bool]] = [
    ("PUT", "/v2/images/{id}/file", 204, True),
    ("PUT", "/v2/images/{id}/file?unused=1", 204, True),
    ("PUT", "/v2/images/{pct}/file", 204, True),
    ("PUT", "/v2/images/{id}/file/", 404, False),
    ("PUT", "/v2/images/{id}//file", 404, False),
    ("PUT", "/v2//images/{id}/file", 404, False),
    ("PUT", "/v2/images/{ID}/file", 404, False),
    ("PUT", "/v2/images/{slash}/file", 404, False),
    ("PUT", "/v2/images/{id}/file/extra", 404, False),
    ("PUT", "/v2.99/images/{id}/file", 300, False),
    ("PUT", "/v2.8/images/{id}/file", 300, False),  # multi-store only: not advertised
    ("PUT", "/v3/images/{id}/file", 300, False),
    ("PUT", "/images/{id}/file", 300, False),
    ("POST", "/v2/images/{id}/file", 405, False),
    ("PATCH", "/v2/images/{id}/file", 405, False),
    ("HEAD", "/v2/images/{id}/file", 405, False),
    ("GET", "/v2/images/{id}/file", 204, False),
] + [("PUT", f"/{version}/images/{{id}}/file", 204, True) for version, _ in VERSIONS]

IDS = [f"{method} {path}" for method, path, _, _ in CASES]


def fill(path: str, image_id: str) -> str:
    pct = "".join(f"%{b:02X}" for b in image_id.encode())
    slash = image_id[:8] + "%2F" + image_id[9:]
    return path.format(id=image_id, ID=image_id.upper(), pct=pct, slash=slash)


class Wire:
    """The real site over a ``StringTransport``: raw HTTP in, raw HTTP out."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=LOCAL_PEER)
        protocol.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1", "Host: imaged.test", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("PUT", "POST", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return transport.value()


def status_and_headers(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


@pytest.fixture
def wire(clock: Any) -> Iterator[tuple[Wire, Any, MemoryBlobStore]]:
    blobs = MemoryBlobStore()
    service = memory_image_service(limits=Limits(), blobs=blobs, clock=clock)
    api = routes(APIConfig(image_service=service))
    yield Wire(make_site(api.resource(), body_router=api.bodies)), service, blobs


def create(send: Callable[..., tuple[int, dict[str, str], bytes]]) -> str:
    body = json.dumps({"disk_format": "raw", "container_format": "bare"}).encode()
    code, _, answer = send("POST", "/v2/images", {**OWNER}, body)
    assert code == 201, answer
    return str(json.loads(answer)["id"])


@pytest.mark.parametrize("method, path, code, stored", CASES, ids=IDS)
def test_over_a_string_transport(
    wire: tuple[Wire, Any, MemoryBlobStore], method: str, path: str, code: int, stored: bool
) -> None:
    site, _, blobs = wire

    def send(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return status_and_headers(site.send(method, path, headers, body))

    image_id = create(send)
    headers = {**OWNER, "Content-Type": "application/octet-stream"}
    body = DATA if method in ("PUT", "POST", "PATCH") else b""
    answered, answer_headers, answer = send(method, fill(path, image_id), headers, body)
    assert answered == code, answer
    if code == 405:
        assert answer_headers["allow"].replace(" ", "").split(",") in (["GET", "PUT"],
                                                                       ["PUT", "GET"])
    if code == 300:
        assert "versions" in json.loads(answer)
    _, _, shown = send("GET", f"/v2/images/{image_id}", OWNER, b"")
    image = json.loads(shown)
    assert image["status"] == ("active" if stored else "queued")
    assert list(blobs.blobs.values()) == ([DATA] if stored else [])
    if stored:
        assert image["size"] == len(DATA)


@pytest.mark.parametrize(
    "uri",
    [b"/", b"/v2/images", b"/v2/images/", b"//v2", b"/v2/images/a%2Fb/file?x=%2F",
     b"/v2.1/images/%61%62/file", b"/v2/images/%ff/file", b"/a/../b", b"/v2/im%20ages?"],
)
def test_segments_are_what_twisted_gives_the_resource(uri: bytes) -> None:
    """The pre-router splits a request line as twisted.web does before routing."""
    seen: list[list[bytes]] = []

    class Record(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            seen.append(list(request.postpath))
            return b""

    Wire(Site(Record())).send("GET", uri.decode("latin-1"), {}, b"")
    assert seen == [segments_of(uri)]


def test_negotiation_follows_the_versions_table() -> None:
    for version, _ in VERSIONS:
        assert negotiate([version.encode(), b"images"]) == [b"v2", b"images"]
    assert negotiate([b"v2", b"images"]) == [b"v2", b"images"]
    for unknown in (b"v2.8", b"v2.99", b"v1", b"v3", b"images", b"v2.1.1"):
        assert negotiate([unknown, b"images"]) == [b""]
    for kept in ([b""], [b"versions"], [b"healthcheck"], []):
        assert negotiate(list(kept)) == kept


def test_metrics_label_requests_with_the_rule_klein_matched(
    wire: tuple[Wire, Any, MemoryBlobStore],
) -> None:
    from twisted.web.server import Request

    site, _, _ = wire
    labels: list[str] = []
    site.site.log = lambda request: labels.append(  # type: ignore[method-assign]
        getattr(request, "imaged_route", "unmatched")
    )
    assert isinstance(site.site.requestFactory, type) and issubclass(
        site.site.requestFactory, Request
    )
    image_id = create(lambda *a: status_and_headers(site.send(*a)))
    for method, path in [
        ("GET", f"/v2.1/images/{image_id}"),
        ("GET", f"/v2/images/{image_id}/file"),
        ("PUT", f"/v2/images/{image_id}/file/"),
        ("POST", f"/v2/images/{image_id}/actions/deactivate"),
        ("GET", "/v2/images/x/members/y"),
        ("GET", "/versions/anything"),
        ("GET", "/versions"),
    ]:
        site.send(method, path, OWNER, b"")
    assert labels == [
        "/v2/images",
        "/v2/images/{image_id}",
        "/v2/images/{image_id}/file",
        "unmatched",
        "/v2/images/{image_id}/actions/{action}",
        "/v2/images/{image_id}/members/{member_id}",
        "/versions/{_rest}",
        "/versions",
    ]


# -- the same over a real socket, against twistd imaged ------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdDaemon]:
    workdir = tmp_path_factory.mktemp("routes")
    started = TwistdDaemon(str(workdir), args=["--data-dir", str(workdir)]).start()
    yield started
    started.stop()


def curl(daemon: TwistdDaemon, method: str, path: str, headers: dict[str, str],
         body: bytes) -> tuple[int, dict[str, str], bytes]:
    command = ["curl", "-sS", "-i", "--path-as-is", "--max-time", "30", "-X", method]
    if method == "HEAD":
        command = ["curl", "-sS", "-i", "--path-as-is", "--max-time", "30", "--head"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if body:
        command += ["--data-binary", "@-"]
    result = subprocess.run([*command, daemon.url + path], input=body, capture_output=True,
                            check=True)
    raw = result.stdout
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.partition(b"\r\n\r\n")[2]
    return status_and_headers(raw)


@pytest.mark.servers
@pytest.mark.skipif(os.system("command -v curl >/dev/null") != 0, reason="needs curl")
@pytest.mark.parametrize("method, path, code, stored", CASES, ids=IDS)
def test_over_a_real_socket(
    daemon: TwistdDaemon, method: str, path: str, code: int, stored: bool
) -> None:
    def send(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return curl(daemon, method, path, headers, body)

    image_id = create(send)
    headers = {**OWNER, "Content-Type": "application/octet-stream"}
    body = DATA if method in ("PUT", "POST", "PATCH") else b""
    answered, _, answer = send(method, fill(path, image_id), headers, body)
    assert answered == code, answer
    _, _, shown = send("GET", f"/v2/images/{image_id}", OWNER, b"")
    image = json.loads(shown)
    assert image["status"] == ("active" if stored else "queued")
    assert image["size"] == (len(DATA) if stored else None)
    images = os.path.join(daemon.workdir, "images")
    assert os.path.exists(os.path.join(images, image_id)) is stored
    assert [n for n in os.listdir(os.path.join(images, ".partial"))] == []


@pytest.mark.parametrize(
    "method, path, code",
    [
        ("POST", "/v2/images/{id}/actions/destroy", 404),
        ("POST", "/v2/images/{id}/actions/", 404),
        ("HEAD", "/v2/images", 405),
        ("HEAD", "/v2/images/{id}", 405),
        ("HEAD", "/v2/images/{id}/members", 405),
        ("DELETE", "/v2.99/images/{id}", 300),
        ("PATCH", "/v3/images/{id}", 300),
    ],
)
def test_other_unrouted_requests_change_nothing(
    wire: tuple[Wire, Any, MemoryBlobStore], method: str, path: str, code: int
) -> None:
    """Unknown actions, HEAD where Glance has none, unknown versions of writes: the 4xx or
    the versions document, and the image exactly as it was."""
    site, _, _ = wire

    def send(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return status_and_headers(site.send(method, path, headers, body))

    image_id = create(send)
    _, _, before = send("GET", f"/v2/images/{image_id}", OWNER, b"")
    patch = [{"op": "replace", "path": "/name", "value": "changed"}]
    body = json.dumps(patch).encode() if method == "PATCH" else b""
    headers = {**OWNER, "Content-Type": "application/openstack-images-v2.1-json-patch"}
    answered, answer_headers, _ = send(method, fill(path, image_id), headers, body)
    assert answered == code
    if code == 405:
        assert "HEAD" not in answer_headers["allow"] and "GET" in answer_headers["allow"]
    _, _, after = send("GET", f"/v2/images/{image_id}", OWNER, b"")
    assert json.loads(after) == json.loads(before)
