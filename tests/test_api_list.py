"""In-memory API tests: listing, filters, sorting, keyset pages and visibility."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlparse

import pytest
from twisted.internet.task import Clock

from .conftest import ADMIN, PROJECT_A, PROJECT_B, Client


def ids(reply) -> list[str]:
    return [i["id"] for i in reply.json()["images"]]


def test_envelope_and_default_order(client: Client) -> None:
    made = [client.create(name=f"img{i}")["id"] for i in range(3)]
    reply = client.get("/v2/images")
    body = reply.json()
    assert reply.code == 200
    assert set(body) == {"images", "schema", "first"}
    assert body["schema"] == "/v2/schemas/images" and body["first"] == "/v2/images"
    assert ids(reply) == list(reversed(made))  # created_at desc


def test_pages_follow_next_to_the_end(client: Client) -> None:
    made = {client.create(name=f"n{i % 3}")["id"] for i in range(11)}
    seen: list[str] = []
    path = "/v2/images?limit=4&sort=name:asc"
    pages = 0
    while path:
        body = client.get(path).json()
        seen.extend(i["id"] for i in body["images"])
        assert body["first"] == "/v2/images?limit=4&sort=name%3Aasc"
        path = body.get("next")
        if path:
            assert path.startswith("/v2/images?") and "marker=" in path
        pages += 1
    assert pages == 3 and len(seen) == 11 and set(seen) == made
    names = [client.get(f"/v2/images/{i}").json()["name"] for i in seen]
    assert names == sorted(names)


def test_next_keeps_repeated_filters(client: Client) -> None:
    for _ in range(3):
        client.create(tags=["a", "b"])
    client.create(tags=["a"])
    body = client.get("/v2/images?tag=a&tag=b&limit=2").json()
    assert len(body["images"]) == 2
    query = parse_qs(urlparse(body["next"]).query)
    assert query["tag"] == ["a", "b"]
    rest = client.get(body["next"]).json()
    assert len(rest["images"]) == 1 and "next" not in rest


@pytest.mark.parametrize(
    "query",
    [
        "sort_key=name&sort_dir=asc",
        "sort_key=size&sort_dir=desc",
        "sort=disk_format:asc,name:desc",
        "sort=status,updated_at:asc",
        "sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc",
    ],
)
def test_keyset_paging_matches_one_big_page(client: Client, query: str) -> None:
    for i in range(13):
        attributes = {"name": None if i % 4 == 0 else f"n{i % 5}"}
        if i % 3:
            attributes["disk_format"] = "raw"
            attributes["container_format"] = "bare"
        image = client.create(**attributes)
        if i % 2:
            client.upload(image["id"], b"x" * (i % 4))
    whole = ids(client.get(f"/v2/images?{query}&limit=100"))
    assert len(whole) == 13
    paged: list[str] = []
    path = f"/v2/images?{query}&limit=3"
    while path:
        body = client.get(path).json()
        paged.extend(i["id"] for i in body["images"])
        path = body.get("next")
    assert paged == whole


def test_limits(client: Client) -> None:
    for _ in range(3):
        client.create()
    assert len(ids(client.get("/v2/images?limit=2"))) == 2
    assert client.get("/v2/images?limit=0").json()["images"] == []
    assert client.get("/v2/images?limit=-1").code == 400
    assert client.get("/v2/images?limit=x").code == 400


def test_marker_errors(client: Client) -> None:
    assert client.get(f"/v2/images?marker={uuid.uuid4()}").code == 400
    private = client.create(visibility="private", _headers=PROJECT_A)
    assert client.get(f"/v2/images?marker={private['id']}", headers=PROJECT_B).code == 400
    assert client.get(f"/v2/images?marker={private['id']}", headers=PROJECT_A).code == 200


def test_sort_errors(client: Client) -> None:
    assert client.get("/v2/images?sort_key=owner").code == 400
    assert client.get("/v2/images?sort_dir=up").code == 400
    assert client.get("/v2/images?sort=name:sideways").code == 400
    assert client.get("/v2/images?sort=name&sort_key=name").code == 400
    assert client.get("/v2/images?sort_key=name&sort_key=size&sort_dir=asc&sort_dir=desc"
                      "&sort_dir=asc").code == 400


def test_filters(client: Client) -> None:
    a = client.create(name="alpha", disk_format="raw", container_format="bare",
                      os_distro="debian", tags=["x", "y"], min_ram=512, protected=True)
    b = client.create(name="beta", disk_format="qcow2", container_format="bare",
                      os_distro="ubuntu", tags=["x"])
    c = client.create(name="gam,ma", os_hidden=True)
    d = client.create(name="de:lta")
    client.upload(a["id"], b"12345")

    def q(query: str) -> set[str]:
        reply = client.get(f"/v2/images?{query}")
        assert reply.code == 200, reply.body
        return set(ids(reply))

    assert q("name=alpha") == {a["id"]}
    assert q("name=eq:alpha") == {a["id"]}
    assert q('name=in:alpha,beta') == {a["id"], b["id"]}
    assert q('name=in:"gam,ma",beta&os_hidden=true') == {c["id"]}
    assert q("name=eq:de:lta") == {d["id"]}
    assert client.get("/v2/images?name=de:lta").code == 400
    assert q("disk_format=qcow2") == {b["id"]}
    assert q("disk_format=in:raw,qcow2") == {a["id"], b["id"]}
    assert q("container_format=bare") == {a["id"], b["id"]}
    assert q("status=active") == {a["id"]}
    assert q("status=in:active,queued") == {a["id"], b["id"], d["id"]}
    assert q(f"id={b['id']}") == {b["id"]}
    assert q("os_distro=ubuntu") == {b["id"]}
    assert q("tag=x") == {a["id"], b["id"]}
    assert q("tag=x&tag=y") == {a["id"]}
    assert q("size_min=5&size_max=5") == {a["id"]}
    assert q("size=5") == {a["id"]}  # the size column, not an extra property "size"
    assert q("size=6") == set()
    assert q("size_min=6") == set()
    assert q("protected=true") == {a["id"]}
    assert q("protected=false") == {b["id"], d["id"]}
    assert q("os_hidden=true") == {c["id"]}
    assert q("min_ram=512") == {a["id"]}
    assert q(f"checksum={client.get('/v2/images/' + a['id']).json()['checksum']}") == {a["id"]}
    assert q("owner=nobody") == set()
    assert q("member_status=all") == {a["id"], b["id"], d["id"]}


@pytest.mark.parametrize(
    "query",
    [
        "name=like:alpha",
        "changes-since=2020-01-01T00:00:00Z",
        "size_min=big",
        "size=big",
        "size=-1",
        "size=9223372036854775808",
        "protected=True",
        "os_hidden=maybe",
        "visibility=everyone",
        "member_status=maybe",
        "created_at=gt:yesterday",
        "min_ram=lots",
    ],
)
def test_filter_errors(client: Client, query: str) -> None:
    assert client.get(f"/v2/images?{query}").code == 400


def test_time_filters(client: Client, clock: Clock) -> None:
    first = client.create(name="first")
    clock.advance(1.5)  # shown timestamps are whole seconds: the two differ
    second = client.create(name="second")
    t1, t2 = first["created_at"], second["created_at"]
    assert set(ids(client.get(f"/v2/images?created_at=gte:{t2}"))) == {second["id"]}
    assert set(ids(client.get(f"/v2/images?created_at=lt:{t2}"))) == {first["id"]}
    assert set(ids(client.get(f"/v2/images?created_at=lte:{t1}"))) == {first["id"]}
    assert set(ids(client.get(f"/v2/images?created_at=gt:{t1}"))) == {second["id"]}
    assert set(ids(client.get(f"/v2/images?created_at={t1}"))) == {first["id"]}
    assert set(ids(client.get(f"/v2/images?created_at=neq:{t1}"))) == {second["id"]}
    assert set(ids(client.get(f"/v2/images?updated_at=gte:{t1}"))) == {first["id"], second["id"]}


def test_visibility_rules(client: Client) -> None:
    a_private = client.create(visibility="private", _headers=PROJECT_A)["id"]
    a_shared = client.create(_headers=PROJECT_A)["id"]
    a_community = client.create(visibility="community", _headers=PROJECT_A)["id"]
    b_private = client.create(visibility="private", _headers=PROJECT_B)["id"]
    public = client.create(visibility="public", _headers=ADMIN)["id"]

    def q(headers, query="") -> set[str]:
        return set(ids(client.get(f"/v2/images?{query}", headers=headers)))

    assert q(PROJECT_A) == {a_private, a_shared, a_community, public}
    assert q(PROJECT_B) == {b_private, public}
    assert q(PROJECT_B, "visibility=community") == {a_community}
    assert q(PROJECT_B, "visibility=all") == {b_private, public, a_community}
    assert q(PROJECT_B, "visibility=private") == {b_private}
    assert q(PROJECT_A, "visibility=shared") == {a_shared}
    assert q(PROJECT_A, "visibility=public") == {public}
    assert q(ADMIN) == {a_private, a_shared, b_private, public}
    assert q(ADMIN, "visibility=all") == {a_private, a_shared, a_community, b_private, public}
    assert q(ADMIN, "visibility=private") == {a_private, b_private}


def test_deleted_images_vanish(client: Client) -> None:
    keep = client.create()["id"]
    gone = client.create()["id"]
    client.delete(f"/v2/images/{gone}")
    assert ids(client.get("/v2/images")) == [keep]
    assert client.get(f"/v2/images?marker={gone}").code == 400


@pytest.mark.parametrize("spelling", ["true", "True", "1", "yes"])
def test_os_hidden_accepts_oslo_spellings(client: Client, spelling: str) -> None:
    hidden = client.create(os_hidden=True)["id"]
    client.create()
    assert ids(client.get(f"/v2/images?os_hidden={spelling}")) == [hidden]
