"""
Shared fixtures: in-memory imaged services on each metadata database, a clock, and a
synchronous HTTP client for the API.

The API suites (``SQL_SUITES``) run twice: on SQLite in memory and on PostgreSQL (marked
``servers``: it starts a real PostgreSQL).  Their services come from the ``services`` factory,
which builds the real ``ImageService`` over ``metadata_stores()`` (SQLite in memory, or one
migrated PostgreSQL database run inline and emptied the first time a test asks) and the test's
``clock``: time moves only when the test moves it.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imaged.api import APIConfig, ImageService, Limits, routes
from imaged.store import database as db
from imaged.store.sql import SQLMetadataStore
from imaged.testing import memory_image_service
from imaged.threads import InlineRunner

#: Test modules that run on each metadata database.
SQL_SUITES = {
    "test_api_data", "test_api_images", "test_api_import", "test_api_list", "test_api_members",
    "test_api_quotas", "test_api_versions_errors", "test_isolation_matrix",
    "test_contract_image_service", "test_auth", "test_hops", "test_fuzz", "test_hostile",
    "test_api_stores", "test_api_metadefs",
}
DATABASES = (
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.servers),
)

#: Where test clocks start: 2027-01-15T08:00:00Z.
EPOCH = 1_800_000_000.0


#: Fixtures that start a real server: a test asking for one is marked ``servers``.
SERVER_FIXTURES = frozenset({"postgres", "postgres_url", "swift", "ceph"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-count", type=int, default=None,
        help="requests per database sent by tests/test_fuzz.py (default 3000, or "
        "$IMAGED_FUZZ_COUNT)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


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
def ceph() -> Any:
    """A one-node Ceph with an RBD pool on 127.0.0.1 (see ``tests/ceph_server.py``)."""
    from .ceph_server import Ceph

    server = Ceph()
    cluster = server.start()
    yield cluster
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: Any) -> str:
    """A migrated PostgreSQL database shared by the tests that empty it as they go."""
    url: str = postgres.database("imaged_tests")
    engine = db.make_engine(url)
    db.upgrade_schema(engine)
    engine.dispose()
    return url


class _PostgresStores:
    """Metadata stores over the shared PostgreSQL test database, emptied once per test."""

    generation = 0  # bumped on every emptying: worlds cached by tests compare it

    def __init__(self, url: str) -> None:
        self.engine = db.make_engine(url)
        self.fresh = False

    def __call__(self) -> SQLMetadataStore:
        if not self.fresh:
            with self.engine.begin() as connection:
                connection.exec_driver_sql(
                    "TRUNCATE image_tags, image_properties, image_members, images, tasks, "
                    "imaged_nodes, metadef_definitions, metadef_associations, "
                    "metadef_namespaces, metadef_resource_types CASCADE"
                )
            self.fresh = True
            _PostgresStores.generation += 1
        return SQLMetadataStore(self.engine, InlineRunner())


_POSTGRES_STORES: list[_PostgresStores] = []


#: Where a store contract suite runs: in memory (inline), a SQLite file with its own threads
#: (as twistd runs it), and PostgreSQL.
STORE_KINDS = ["memory", "sqlite-file", pytest.param("postgresql", marks=pytest.mark.servers)]


def contract_store(request: pytest.FixtureRequest, tmp_path: Any, emptied: str) -> Any:
    """A store of ``request.param``'s kind (``STORE_KINDS``) for a contract suite; on
    PostgreSQL, the shared test database with the tables ``emptied`` (a ``TRUNCATE`` list)
    emptied first, and the store's own threads over it."""
    from twisted.internet import reactor

    kind = request.param  # type: ignore[attr-defined]
    if kind == "memory":
        yield SQLMetadataStore.in_memory()
        return
    if kind == "postgresql":
        url = request.getfixturevalue("postgres_url")
        engine = db.make_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {emptied} CASCADE")
        engine.dispose()
        opened = SQLMetadataStore.open(url, reactor)
    else:
        opened = SQLMetadataStore.open(f"sqlite:///{tmp_path}/m.sqlite", reactor)
    yield opened
    opened.close()


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """Which database this test's metadata stores use (``sqlite`` unless parametrized)."""
    name: str = getattr(request, "param", "sqlite")
    return name


@pytest.fixture
def metadata_stores(
    request: pytest.FixtureRequest, database: str
) -> Callable[[], SQLMetadataStore]:
    """Makes metadata stores on this test's database (see the module docstring)."""
    if database != "postgresql":
        return SQLMetadataStore.in_memory
    if not _POSTGRES_STORES:
        _POSTGRES_STORES.append(_PostgresStores(request.getfixturevalue("postgres_url")))
    stores = _POSTGRES_STORES[0]
    stores.fresh = False
    return stores


class TestClock(Clock):
    """
    A ``Clock`` whose every reading is 10 us after the one before, as a real clock moves
    between two requests: things made one after the other are ordered by time, and nothing
    else moves unless the test advances the clock (no scheduled call runs on a reading).
    """

    __test__ = False  # not a test class, whatever its name says

    def seconds(self) -> float:
        self.rightNow += 1e-5
        return self.rightNow


@pytest.fixture
def clock() -> Clock:
    """The time of this test's services (see ``TestClock``)."""
    clock = TestClock()
    clock.advance(EPOCH)
    return clock


@pytest.fixture
def services(
    metadata_stores: Callable[[], SQLMetadataStore], clock: Clock
) -> Callable[..., ImageService]:
    """``services(limits=..., ...)``: the real service over in-memory stores on this test's
    database and clock (``imaged.testing.memory_image_service``'s other arguments pass)."""

    def make(**kwargs: Any) -> ImageService:
        if kwargs.get("metadata") is None:
            kwargs["metadata"] = metadata_stores()
        return memory_image_service(clock=clock, **kwargs)

    return make


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
def service(services: Callable[..., ImageService]) -> ImageService:
    return services(limits=Limits(image_size_cap=10 * 1024 * 1024))


@pytest.fixture
def client(service: Any) -> Client:
    return Client(routes(APIConfig(image_service=service, limits=service.limits)).resource())
