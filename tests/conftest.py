"""
Shared fixtures: an in-memory imaged API and a synchronous HTTP client for it.

The API suites (``SQL_SUITES``) run twice: on SQLite in memory and on PostgreSQL.  For the
PostgreSQL run, ``SQLMetadataStore.in_memory()`` (which every in-memory service is built on)
returns a store over one migrated PostgreSQL database, run inline like SQLite's, emptied the
first time a test asks for a store.
"""

from __future__ import annotations

import json as jsonlib
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imaged.api import APIConfig, Limits, routes
from imaged.store import sql
from imaged.testing import memory_image_service
from imaged.threads import InlineRunner

#: Test modules that run on each metadata database.
SQL_SUITES = {
    "test_api_data", "test_api_images", "test_api_list", "test_api_members",
    "test_api_quotas", "test_api_versions_errors", "test_isolation_matrix",
    "test_contract_image_service", "test_auth",
}
DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "database" in metafunc.fixturenames and module in SQL_SUITES:
        metafunc.parametrize("database", DATABASES, indirect=True, scope="function")


@pytest.fixture(scope="session")
def postgres() -> Any:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see ``tests/postgres_server.py``)."""
    from .postgres_server import PostgreSQL

    cluster = PostgreSQL().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def swift() -> Any:
    """A Swift cluster with tempauth and s3api on 127.0.0.1 (see ``tests/swift_server.py``)."""
    from .swift_server import Swift

    cluster = Swift().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: Any) -> str:
    """A migrated PostgreSQL database shared by the tests that empty it as they go."""
    url: str = postgres.database("imaged_tests")
    engine = sql.make_engine(url)
    sql.upgrade_schema(engine)
    engine.dispose()
    return url


class _PostgresStores:
    """Stands in for ``SQLMetadataStore.in_memory`` during a PostgreSQL test."""

    generation = 0  # bumped on every emptying: worlds cached by tests compare it

    def __init__(self, url: str) -> None:
        self.engine = sql.make_engine(url)
        self.fresh = False

    def __call__(self) -> sql.SQLMetadataStore:
        if not self.fresh:
            with self.engine.begin() as connection:
                connection.exec_driver_sql(
                    "TRUNCATE image_tags, image_properties, image_members, images CASCADE"
                )
            self.fresh = True
            _PostgresStores.generation += 1
        return sql.SQLMetadataStore(self.engine, InlineRunner())


_POSTGRES_STORES: list[_PostgresStores] = []


@pytest.fixture(autouse=True)
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which database this test's in-memory stores use (``sqlite`` unless parametrized)."""
    name: str = getattr(request, "param", "sqlite")
    if name == "postgresql":
        if not _POSTGRES_STORES:
            _POSTGRES_STORES.append(_PostgresStores(request.getfixturevalue("postgres_url")))
        stores = _POSTGRES_STORES[0]
        stores.fresh = False
        monkeypatch.setattr(sql.SQLMetadataStore, "in_memory", stores)
    return name


def store_generation(database: str) -> tuple[str, int]:
    """Changes whenever the test database was emptied (for worlds shared between tests)."""
    return database, _PostgresStores.generation if database == "postgresql" else 0


def fired(d: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (raising its failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@attrs.frozen
class Reply:
    code: int
    headers: Any
    body: bytes
    length: Any = None  # Twisted's client moves Content-Length out of the headers

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[-1] if values else None

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class Client:
    """Drives a resource in memory with treq's StubTreq; every call returns a ``Reply``."""

    def __init__(self, resource: Any) -> None:
        self.stub = StubTreq(resource)

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if json is not None:
            data = jsonlib.dumps(json).encode()
        d = self.stub.request(
            method, "http://imaged.test:9292" + path, data=data, headers=hdrs
        )
        self.stub.flush()
        response = fired(d)
        body_d = self.stub.content(response)
        self.stub.flush()
        return Reply(response.code, response.headers, fired(body_d), response.length)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Reply:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def patch(self, path: str, ops: Any, media: str = "v2.1", **kw: Any) -> Reply:
        headers = {"Content-Type": f"application/openstack-images-{media}-json-patch"}
        headers.update(kw.pop("headers", {}))
        return self.request("PATCH", path, json=ops, headers=headers, **kw)

    # conveniences

    def create(self, **attributes: Any) -> dict[str, Any]:
        reply = self.post("/v2/images", json=attributes, headers=attributes.pop("_headers", {}))
        assert reply.code == 201, reply.body
        return reply.json()

    def upload(self, image_id: str, data: bytes, **headers: str) -> Reply:
        hdrs = {"Content-Type": "application/octet-stream", **headers}
        return self.put(f"/v2/images/{image_id}/file", data=data, headers=hdrs)


PROJECT_A = {"X-Project-Id": "project-a", "X-User-Id": "alice", "X-Roles": "member,reader"}
PROJECT_B = {"X-Project-Id": "project-b", "X-User-Id": "bob", "X-Roles": "member"}
ADMIN = {"X-Project-Id": "admin-project", "X-User-Id": "root", "X-Roles": "admin"}


@pytest.fixture
def service() -> Any:
    return memory_image_service(limits=Limits(image_size_cap=10 * 1024 * 1024))


@pytest.fixture
def client(service: Any) -> Client:
    return Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
