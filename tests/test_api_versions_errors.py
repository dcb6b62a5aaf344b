"""In-memory API tests: discovery, request ids, routing errors and error body negotiation."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from imaged.api import APIConfig, routes

from .conftest import PROJECT_A, Client


def test_root_is_300_with_versions(client: Client) -> None:
    reply = client.get("/")
    assert reply.code == 300
    versions = reply.json()["versions"]
    assert versions[0] == {"id": "v2.17", "status": "CURRENT",
                           "links": [{"rel": "self", "href": "http://imaged.test:9292/v2/"}]}
    listed = {v["id"]: v["status"] for v in versions}
    for minor in (0, 1, 2, 3, 4, 5, 6, 7, 9, 15):
        assert listed[f"v2.{minor}"] == "SUPPORTED"
    assert all(v["links"][0]["href"] == "http://imaged.test:9292/v2/" for v in versions)


def test_versions_is_200(client: Client) -> None:
    reply = client.get("/versions")
    assert reply.code == 200 and reply.json() == client.get("/").json()
    assert client.get("/versions/anything").code == 200


@pytest.mark.parametrize("path", ["/v1/images", "/v3/", "/foo", "/v2.99/images"])
def test_unknown_version_prefix_is_300(client: Client, path: str) -> None:
    reply = client.get(path)
    assert reply.code == 300 and "versions" in reply.json()


def test_minor_version_prefix_is_v2(client: Client) -> None:
    image = client.create(name="x")
    assert client.get(f"/v2.1/images/{image['id']}").json()["id"] == image["id"]
    assert client.get("/v2.17/images").json()["images"][0]["id"] == image["id"]


def test_v2_document(client: Client) -> None:
    assert client.get("/v2").json()["version"]["id"] == "v2.17"
    assert client.get("/v2/").code == 200


def test_public_base_url(services: Any) -> None:
    config = APIConfig(image_service=services(),
                       public_base_url="https://images.example.org/")
    client = Client(routes(config).resource())
    assert client.get("/").json()["versions"][0]["links"][0]["href"] == (
        "https://images.example.org/v2/")
    reply = client.post("/v2/images", json={})
    assert reply.header("Location").startswith("https://images.example.org/v2/images/")


def test_request_id_on_every_response(client: Client) -> None:
    missing = f"/v2/images/{uuid.uuid4()}"
    for reply in (client.get("/"), client.get("/v2/images"), client.get(missing),
                  client.request("PUT", "/v2/images")):
        assert reply.header("x-openstack-request-id").startswith("req-")
    assert client.get("/v2/images").header("x-openstack-request-id") != client.get(
        "/v2/images").header("x-openstack-request-id")
    rid = f"req-{uuid.uuid4()}"
    assert client.get("/v2/images", headers={"X-Openstack-Request-ID": rid}).header(
        "x-openstack-request-id") == rid
    reply = client.get("/v2/images", headers={"X-Openstack-Request-ID": "x" * 65})
    assert reply.header("x-openstack-request-id") != "x" * 65


def test_405_with_allow(client: Client) -> None:
    reply = client.request("PUT", "/v2/images")
    assert reply.code == 405
    allow = {m.strip() for m in reply.header("Allow").split(",")}
    assert {"GET", "POST"} <= allow
    image = client.create()
    reply = client.request("POST", f"/v2/images/{image['id']}")
    assert reply.code == 405
    assert {"GET", "PATCH", "DELETE"} <= {m.strip() for m in reply.header("Allow").split(",")}


def test_unknown_v2_path_is_404(client: Client) -> None:
    assert client.get("/v2/nothing-here").code == 404
    assert client.get("/v2/images/x/y/z").code == 404


def test_error_default_is_html(client: Client) -> None:
    reply = client.get(f"/v2/images/{uuid.uuid4()}")
    assert reply.code == 404
    assert reply.header("Content-Type") == "text/html; charset=UTF-8"
    assert b"<title>404 Not Found</title>" in reply.body
    assert b"No image found with ID" in reply.body


def test_error_json_when_asked(client: Client) -> None:
    missing = uuid.uuid4()
    reply = client.get(f"/v2/images/{missing}", headers={"Accept": "application/json"})
    assert reply.header("Content-Type") == "application/json"
    body = reply.json()
    assert body["code"] == "404 Not Found" and body["title"] == "Not Found"
    assert body["message"].startswith(f"No image found with ID {missing}")


@pytest.mark.parametrize(
    "accept, kind",
    [
        ("", "text/html"),
        ("*/*", "text/html"),
        ("text/plain", "text/plain"),
        ("application/json;q=0.9, text/html;q=0.5", "application/json"),
        ("text/html, application/json", "text/html"),
        ("garbage", "text/html"),
    ],
)
def test_error_negotiation(client: Client, accept: str, kind: str) -> None:
    reply = client.get(f"/v2/images/{uuid.uuid4()}", headers={"Accept": accept})
    assert reply.header("Content-Type").startswith(kind)


def test_glanceclient_can_parse_json_errors(client: Client) -> None:
    """Flat JSON goes only to clients that ask for it; HTML is what glanceclient parses."""
    reply = client.get(f"/v2/images/{uuid.uuid4()}", headers={"Accept": "application/json"})
    assert isinstance(json.loads(reply.body)["message"], str)
    plain = client.get(f"/v2/images/{uuid.uuid4()}", headers={"Content-Type":
                                                               "application/octet-stream"})
    assert plain.header("Content-Type").startswith("text/html")


def test_unexpected_errors_are_500_without_details(client: Client, service) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    service.metadata.list = boom
    reply = client.get("/v2/images")
    assert reply.code == 500 and b"secret" not in reply.body


def test_healthcheck(tmp_path: Any, services: Any) -> None:
    flag = tmp_path / "healthcheck_disable"
    config = APIConfig(image_service=services(), healthcheck_disable_file=str(flag))
    client = Client(routes(config).resource())
    reply = client.get("/healthcheck")
    assert reply.code == 200 and reply.body == b"OK"
    assert reply.header("Content-Type").startswith("text/plain")
    assert client.request("HEAD", "/healthcheck").code == 204
    assert client.get("/healthcheck", headers={"Accept": "application/json"}).json() == {
        "detailed": False, "reasons": ["OK"]}
    flag.write_text("maintenance")
    reply = client.get("/healthcheck")
    assert reply.code == 503 and reply.body == b"DISABLED BY FILE"
    assert client.request("HEAD", "/healthcheck").code == 503
    assert client.post("/healthcheck").code == 405


def test_healthcheck_is_503_while_the_database_does_not_answer(services: Any) -> None:
    from twisted.internet.defer import fail

    service = services()
    client = Client(routes(APIConfig(image_service=service)).resource())
    assert client.get("/healthcheck").code == 200
    service.metadata.ping = lambda: fail(ConnectionError("database gone"))
    reply = client.get("/healthcheck")
    assert reply.code == 503 and reply.body == b"DATABASE UNREACHABLE"
    assert client.request("HEAD", "/healthcheck").code == 503
    detailed = client.get("/healthcheck", headers={"Accept": "application/json"})
    assert detailed.json() == {"detailed": False, "reasons": ["DATABASE UNREACHABLE"]}


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST", "PATCH"])
def test_the_image_collection_with_a_trailing_slash_is_no_route(client: Client,
                                                                method: str) -> None:
    # Glance: 404 (tempest's interop test_get_image_null_id, test_delete_image_null_id).
    before = client.get("/v2/images", headers=PROJECT_A).json()["images"]
    reply = client.request(method, "/v2/images/", json={} if method == "POST" else None,
                           headers=PROJECT_A)
    assert reply.code == 404, reply.body
    assert client.get("/v2/images", headers=PROJECT_A).json()["images"] == before
