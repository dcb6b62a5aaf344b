"""The authentication strategies of the HTTP layer."""

from __future__ import annotations

from typing import Any

import pytest

from imaged.api import APIConfig, routes
from imaged.web.auth import HeaderIdentity, NoAuth, TrustedHeaders

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
