"""The authentication strategies of the HTTP layer, and who may use the header-believing ones."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from imaged.api import APIConfig, routes
from imaged.web.auth import FromNetworks, HeaderIdentity, NoAuth, TrustedHeaders

from .conftest import Client

CONFIRMED = {"X-Identity-Status": "Confirmed", "X-Project-Id": "p1", "X-User-Id": "u1",
             "X-Roles": "member"}


@pytest.fixture
def client_with(services: Any) -> Any:
    def make(auth: object) -> Client:
        return Client(routes(APIConfig(image_service=services(), auth=auth)).resource())

    return make


def test_trusted_headers_needs_a_confirmed_identity(client_with: Any) -> None:
    client = client_with(TrustedHeaders())
    for headers in ({}, {"X-Project-Id": "p1", "X-Roles": "admin"},
                    {**CONFIRMED, "X-Identity-Status": "Invalid"}):
        reply = client.post("/v2/images", json={"name": "x"}, headers=headers)
        assert reply.code == 401, headers
        assert client.get("/v2/images", headers=headers).code == 401
    image = client.create(name="mine", _headers=CONFIRMED)
    assert image["owner"] == "p1"
    assert client.get("/v2/images", headers=CONFIRMED).json()["images"][0]["id"] == image["id"]
    # Discovery stays open, as Glance's version negotiation runs before authentication.
    assert client.get("/versions").code == 200


def test_trusted_headers_refuses_uploads_before_storing(client_with: Any) -> None:
    client = client_with(TrustedHeaders())
    image = client.create(disk_format="raw", container_format="bare", _headers=CONFIRMED)
    assert client.upload(image["id"], b"data").code == 401
    assert client.get(f"/v2/images/{image['id']}", headers=CONFIRMED).json()["status"] == "queued"


@pytest.mark.parametrize("headers, owner", [({}, "admin"), ({"X-Tenant-Id": "t9"}, "t9")])
def test_no_auth_is_an_admin_of_the_default_project(
    headers: dict[str, str], owner: str, client_with: Any
) -> None:
    client = client_with(NoAuth())
    image = client.create(visibility="public", _headers=headers)
    assert image["owner"] == owner


def test_header_identity_without_headers_is_glance_no_auth_admin(client_with: Any) -> None:
    client = client_with(HeaderIdentity())
    image = client.create(visibility="public")
    assert image["owner"] is None


# -- who may send identity headers at all ------------------------------------------------------

ADMIN_HEADERS = {"X-Project-Id": "p1", "X-User-Id": "u1", "X-Roles": "admin,member,reader"}


def over_the_wire(site: Any, peer: Any, method: str, path: str,
                  headers: dict[str, str], body: bytes = b"") -> tuple[int, Any]:
    """One request to the real site from ``peer`` (a ``StringTransport``'s peer address)."""
    from twisted.internet.testing import StringTransport

    transport = StringTransport(peerAddress=peer)
    protocol = site.buildProtocol(peer)
    protocol.makeConnection(transport)
    lines = [f"{method} {path} HTTP/1.1", "Host: imaged.test", "Connection: close",
             "Accept: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        upload = path.endswith("/file")
        lines.append(f"Content-Type: application/{'octet-stream' if upload else 'json'}")
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head, _, payload = transport.value().partition(b"\r\n\r\n")
    code = int(head.split(b" ")[1])
    return code, json.loads(payload) if payload.startswith(b"{") else payload


@pytest.fixture
def site_with(services: Any) -> Any:
    from imaged.web.site import make_site

    def make(auth: Any = None) -> tuple[Any, Any]:
        service = services()
        config = APIConfig(image_service=service) if auth is None else APIConfig(
            image_service=service, auth=auth)
        api = routes(config)
        return make_site(api.resource(), body_router=api.bodies), service

    return make


REMOTE = IPv4Address("TCP", "192.0.2.10", 40000)
LOOPBACKS = [IPv4Address("TCP", "127.0.0.1", 40000), IPv4Address("TCP", "127.8.9.10", 40000),
             IPv6Address("TCP", "::1", 40000), IPv6Address("TCP", "::ffff:127.0.0.1", 40000),
             UNIXAddress(b"/run/imaged.sock")]


@pytest.mark.parametrize("peer", LOOPBACKS, ids=str)
def test_the_default_believes_headers_from_this_host(site_with: Any, peer: Any) -> None:
    site, _ = site_with()
    code, image = over_the_wire(site, peer, "POST", "/v2/images", ADMIN_HEADERS, b'{"name": "x"}')
    assert code == 201 and image["owner"] == "p1"


@pytest.mark.parametrize("auth", [None, FromNetworks(HeaderIdentity()),
                                  FromNetworks(TrustedHeaders()), FromNetworks(NoAuth())],
                         ids=["default", "headers", "trusted-headers", "none"])
def test_headers_from_the_network_are_refused_and_change_nothing(
    site_with: Any, auth: Any
) -> None:
    site, _ = site_with(auth)
    local = LOOPBACKS[0]
    headers = {**ADMIN_HEADERS, "X-Identity-Status": "Confirmed"}
    code, image = over_the_wire(site, local, "POST", "/v2/images", headers,
                                b'{"name": "mine", "disk_format": "raw", '
                                b'"container_format": "bare"}')
    assert code == 201
    before = over_the_wire(site, local, "GET", f"/v2/images/{image['id']}", headers)
    attempts = [
        ("POST", "/v2/images", b'{"name": "intruder"}'),
        ("GET", "/v2/images", b""),
        ("GET", f"/v2/images/{image['id']}", b""),
        ("PUT", f"/v2/images/{image['id']}/file", b"data"),
        ("DELETE", f"/v2/images/{image['id']}", b""),
        ("GET", "/v2/schemas/image", b""),
    ]
    for method, path, body in attempts:
        for sent in (headers, {}):  # with a forged admin, and with nothing (no-auth admin)
            code, error = over_the_wire(site, REMOTE, method, path, sent, body)
            assert code == 401, (method, path, error)
            assert error["title"] == "Unauthorized" and error["code"] == "401 Unauthorized"
            assert "trusted networks" in error["message"]
    # Nothing changed, and discovery and health stay open to everyone, as in Glance.
    assert over_the_wire(site, local, "GET", f"/v2/images/{image['id']}", headers) == before
    listed = over_the_wire(site, local, "GET", "/v2/images", headers)[1]["images"]
    assert [i["name"] for i in listed] == ["mine"]
    assert over_the_wire(site, REMOTE, "GET", "/versions", {})[0] == 200
    assert over_the_wire(site, REMOTE, "GET", "/healthcheck", {})[0] == 200


def test_trusted_networks_let_a_proxy_in(site_with: Any) -> None:
    import ipaddress

    site, _ = site_with(FromNetworks(HeaderIdentity(), (ipaddress.ip_network("192.0.2.0/28"),)))
    code, image = over_the_wire(site, REMOTE, "POST", "/v2/images", ADMIN_HEADERS,
                                b'{"name": "via-proxy"}')
    assert code == 201 and image["owner"] == "p1"
    outside = IPv4Address("TCP", "192.0.2.99", 1)
    assert over_the_wire(site, outside, "GET", "/v2/images", ADMIN_HEADERS)[0] == 401
    # loopback is no longer trusted when the operator names other networks
    assert over_the_wire(site, LOOPBACKS[0], "GET", "/v2/images", ADMIN_HEADERS)[0] == 401


def test_each_mode_says_what_it_trusts() -> None:
    assert "believes X-Project-Id, X-User-Id and X-Roles as sent; a request without them acts " \
        "as an administrator; served to 127.0.0.0/8, ::1/128 only, others get 401" in (
            FromNetworks(HeaderIdentity()).describe())
    assert "X-Identity-Status: Confirmed" in TrustedHeaders().describe()
    assert "administrator of project 'admin'" in NoAuth().describe()
    assert FromNetworks(NoAuth()).health() is None
