"""
``IMetadataStore`` over SQLAlchemy Core: image records in SQLite or PostgreSQL, named transactions.

Every operation is one named transaction (``create_image``, ``list_images``, ``modify_image``,
...) run by a ``Runner``: a private thread pool for a real database, inline for in-memory tests.
The name labels ``imaged_db_transaction_seconds`` and the warning a slow transaction logs, so
"which query is slow" has an answer.  The database (engines, migrations) is
``imaged.store.database``; rows are ``imaged.store.rows``; list SQL is ``imaged.store.queries``.
"""

from __future__ import annotations

import builtins
import functools
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import case, delete, false, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from .. import metrics
from ..errors import (
    BadRequest,
    Duplicate,
    ImageNotFound,
    ImageServiceError,
    MetadataUnavailable,
    NotFound,
    TooLarge,
)
from ..interfaces import IMetadataStore, IMetadefStore, ITaskStore
from ..logcontext import Logger
from ..model import (
    Image,
    ImageChange,
    ImageQuery,
    Member,
    MemberStatus,
    Mutation,
    Page,
    ProjectUsage,
    SavingUpload,
    Scope,
    Status,
    Visibility,
    claim_node,
)
from ..threads import InlineRunner, Runner, ThreadRunner
from .database import (
    POOL_SIZE,
    SQLITE_READERS,
    WRITE,
    check_schema,
    is_memory,
    make_engine,
    upgrade_schema,
)
from .metadefs import SQLMetadefs
from .queries import ListQuery
from .rows import (
    DriverStatements,
    image_row,
    locations_from_text,
    member_from_row,
    member_values,
    member_where,
    write_properties,
    write_tags,
)
from .tables import image_members, images, nodes
from .tasks import SQLTasks

T = TypeVar("T")

#: A transaction slower than this, queueing included, is logged with its name.
SLOW_TRANSACTION = 1.0


#: What ``image_count_uploading`` counts, as Glance: data arriving, staged, or importing.
_UPLOADING = (Status.SAVING.value, Status.UPLOADING.value, Status.IMPORTING.value)


def _when(value: datetime | str) -> datetime:
    """A stored timestamp (SQLite's driver returns the text it stored)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@functools.cache
def _migrated_template() -> sqlite3.Connection:
    """
    An in-memory database the migrations ran on, once per process: in-memory stores start
    as copies of it (SQLite's backup API), which takes a fraction of a millisecond where
    running the migrations again takes tens.
    """
    engine = make_engine("sqlite://")
    upgrade_schema(engine)
    template = sqlite3.connect(":memory:", check_same_thread=False)
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.backup(template)
    engine.dispose()
    return template


def _unavailable_kinds() -> tuple[type[BaseException], ...]:
    """The drivers' own "the database cannot serve now" errors (statements run on raw
    connections raise them unwrapped)."""
    kinds: list[type[BaseException]] = [sqlite3.OperationalError]
    psycopg = sys.modules.get("psycopg")  # only loaded when a PostgreSQL store is open
    if psycopg is not None:
        kinds.append(psycopg.OperationalError)
    return tuple(kinds)


def _data_kinds() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [sqlite3.DataError]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        kinds.append(psycopg.DataError)
    return tuple(kinds)


def database_trouble(error: BaseException, write: bool) -> ImageServiceError | None:
    """
    What a driver error means to a client, or ``None`` for errors that are not the database's
    being unavailable or refusing a value: those (a bad statement, a bug) stay 500s with
    their traceback in the log, never dressed up as an outage.

    A full disk is a 413 for writes, as a full image store is; values the database cannot
    hold (the wire layer refuses them first; this is the net under it) are a 400; the
    database unreachable, restarting, locked too long, or the pool exhausted is 503 with
    ``Retry-After``.
    """
    original: BaseException = error
    if isinstance(error, DBAPIError) and isinstance(error.orig, BaseException):
        original = error.orig
    text = str(original)
    if isinstance(error, DataError) or isinstance(original, _data_kinds()) or (
        # The drivers refuse these while binding, as plain Python errors.
        isinstance(original, OverflowError) and "SQLite" in text
    ) or (isinstance(original, UnicodeEncodeError) and "surrogates" in text) or (
        isinstance(original, ValueError) and "NUL (0x00)" in text
    ):
        return BadRequest("The request contains a value the image metadata database cannot store.")
    unavailable = (
        isinstance(error, (OperationalError, PoolTimeout))
        or isinstance(original, _unavailable_kinds())
        or (isinstance(error, DBAPIError) and error.connection_invalidated)
    )
    if not unavailable:
        return None
    lowered = text.lower()
    if write and ("disk is full" in lowered or "no space left" in lowered):
        return TooLarge("The image metadata database is full.")
    return MetadataUnavailable(text.splitlines()[0] if text else type(original).__name__)


@implementer(IMetadataStore, ITaskStore, IMetadefStore)
class SQLMetadataStore(SQLTasks, SQLMetadefs):
    """
    ``IMetadataStore`` (and ``ITaskStore``, ``imaged.store.tasks``, and ``IMetadefStore``,
    ``imaged.store.metadefs``) over a SQLAlchemy engine.

    Use ``open(url)`` for a real database (its own threads) and ``in_memory()`` for tests and
    embedding (SQLite in memory, run inline: no threads, deterministic).
    """

    log = Logger()

    def __init__(
        self,
        engine: Engine,
        runner: Runner,
        read_engine: Engine | None = None,
        read_runner: Runner | None = None,
    ) -> None:
        self._engine = engine
        self._runner = runner
        #: Where reads go: the same as writes, except for a SQLite file, whose readers have
        #: connections and threads of their own so that they never queue behind a writer that
        #: waits for another process's lock (WAL lets them read meanwhile).
        self._read_engine = read_engine if read_engine is not None else engine
        self._read_runner = read_runner if read_runner is not None else runner
        self._rows = DriverStatements(engine.dialect)
        self.dialect: str = engine.dialect.name

    @classmethod
    def open(cls, url: str, reactor: IReactorFromThreads, migrate: bool = True) -> SQLMetadataStore:
        """
        Connect to ``url``; bring its schema up to date if ``migrate``, else refuse an
        out-of-date schema with a message saying how to upgrade it.
        """
        engine = make_engine(url)
        try:
            upgrade_schema(engine) if migrate else check_schema(engine, url)
        except Exception:
            engine.dispose()
            raise
        if engine.dialect.name != "sqlite":
            return cls(engine, ThreadRunner(reactor, POOL_SIZE, "imaged-db"))
        # SQLite takes one writer at a time: one thread keeps it free of lock contention.
        writer = ThreadRunner(reactor, 1, "imaged-db")
        if is_memory(url):
            return cls(engine, writer)
        readers = make_engine(url, readers=SQLITE_READERS)
        return cls(
            engine, writer, readers, ThreadRunner(reactor, SQLITE_READERS, "imaged-db-read")
        )

    @classmethod
    def in_memory(cls, copy_of: SQLMetadataStore | None = None) -> SQLMetadataStore:
        """
        A migrated SQLite database in memory, its calls run inline; with ``copy_of`` (another
        in-memory store), a copy of that one's records, to try things on a snapshot.
        """
        engine = make_engine("sqlite://")
        with engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            if copy_of is None:
                _migrated_template().backup(driver)
            else:
                with copy_of._engine.connect() as source:
                    original = source.connection.driver_connection
                    assert isinstance(original, sqlite3.Connection), "not a SQLite store"
                    original.backup(driver)
        return cls(engine, InlineRunner())

    # -- transactions --------------------------------------------------------------------

    def _transaction(
        self, name: str, fn: Callable[[Connection], T], write: bool = False
    ) -> Deferred[T]:
        """Run ``fn`` in one transaction in the database thread, timed under ``name``."""

        engine = self._engine if write else self._read_engine
        queued = time.monotonic()

        def txn() -> T:
            try:
                with engine.connect() as connection:
                    if write:
                        connection = connection.execution_options(**{WRITE: queued})
                    with connection.begin():
                        return fn(connection)
            except ImageServiceError:
                raise
            except Exception as e:
                meaning = database_trouble(e, write)
                if meaning is None:
                    raise
                if not isinstance(meaning, BadRequest):
                    self.log.warn(
                        "database transaction {transaction} failed: {detail}",
                        transaction=name, detail=str(e).splitlines()[0] if str(e) else repr(e),
                    )
                raise meaning from e

        done = (self._runner if write else self._read_runner).run(txn)
        if done.called:  # run inline (in-memory store): nothing worth measuring
            return done
        began = time.monotonic()  # just queued: the queueing is measured too

        def record(result: T) -> T:
            elapsed = time.monotonic() - began
            metrics.DB_LATENCY.labels(name).observe(elapsed)
            if elapsed > SLOW_TRANSACTION:
                self.log.warn(
                    "slow database transaction {transaction}: {seconds:.3f} s",
                    transaction=name,
                    seconds=elapsed,
                )
            return result

        return done.addBoth(record)

    # -- images ---------------------------------------------------------------------------

    def insert(self, image: Image) -> Deferred[Image]:
        def txn(connection: Connection) -> Image:
            try:
                connection.execute(insert(images).values(**image_row(image)))
            except IntegrityError:
                raise Duplicate(f"An image with identifier {image.id} already exists") from None
            write_tags(connection, image.id, image.tags, ())
            write_properties(connection, image.id, image.properties, {})
            return image

        return self._transaction("create_image", txn, write=True)

    def get(self, image_id: str) -> Deferred[Image | None]:
        return self._transaction("get_image", lambda c: self._rows.load(c, image_id))

    def list(self, scope: Scope, query: ImageQuery) -> Deferred[Page]:
        def txn(connection: Connection) -> Page:
            statements = ListQuery(scope, query)
            marker = None
            if query.marker is not None:
                row = connection.execute(statements.marker(), statements.params).first()
                if row is None:
                    raise BadRequest(f"Invalid marker. Image {query.marker} could not be found.")
                marker = row._mapping
            if query.limit <= 0:
                return Page(images=[], full=False)
            rows = connection.execute(statements.page(marker), statements.params).all()
            return Page(images=self._rows.hydrate(connection, rows), full=len(rows) == query.limit)

        return self._transaction("list_images", txn)

    def modify(
        self,
        image_id: str,
        mutate: Mutation,
        member_of: str | None = None,
        name: str = "modify_image",
    ) -> Deferred[ImageChange]:
        def txn(connection: Connection) -> ImageChange:
            old = self._rows.load(connection, image_id, for_update=True)
            if old is None:
                raise ImageNotFound(image_id)
            member = None
            if member_of is not None and old.visibility is Visibility.SHARED and (
                old.owner != member_of
            ):
                member = self._member(connection, image_id, member_of)
            new = mutate(old, member)
            old_values, new_values = image_row(old), image_row(new)
            changed = {k: v for k, v in new_values.items() if old_values[k] != v}
            if new.status is Status.DELETED and old.status is not Status.DELETED:
                changed["deleted_at"] = new.updated_at
            if changed:
                connection.execute(update(images).where(images.c.id == image_id).values(**changed))
            write_tags(connection, image_id, new.tags, old.tags)
            write_properties(connection, image_id, new.properties, old.properties)
            return ImageChange(before=old, after=new)

        return self._transaction(name, txn, write=True)

    # -- members ------------------------------------------------------------------------------

    @staticmethod
    def _member(connection: Connection, image_id: str, member_id: str) -> Member | None:
        statement = select(image_members).where(*member_where(image_id, member_id))
        row = connection.execute(statement).first()
        return member_from_row(row) if row is not None else None

    def add_member(self, member: Member) -> Deferred[Member]:
        def txn(connection: Connection) -> Member:
            try:
                connection.execute(insert(image_members).values(**member_values(member)))
            except IntegrityError:
                raise Duplicate(
                    f"Member {member.member_id} already associated with image {member.image_id}."
                ) from None
            return member

        return self._transaction("add_member", txn, write=True)

    def get_member(self, image_id: str, member_id: str) -> Deferred[Member | None]:
        return self._transaction("get_member", lambda c: self._member(c, image_id, member_id))

    def list_members(self, image_id: str) -> Deferred[builtins.list[Member]]:
        def txn(connection: Connection) -> builtins.list[Member]:
            rows = connection.execute(
                select(image_members)
                .where(image_members.c.image_id == image_id)
                .order_by(image_members.c.created_at, image_members.c.member)
            )
            return [member_from_row(row) for row in rows]

        return self._transaction("list_members", txn)

    def update_member(
        self, image_id: str, member_id: str, status: MemberStatus, updated_at: datetime
    ) -> Deferred[Member]:
        def txn(connection: Connection) -> Member:
            connection.execute(
                update(image_members)
                .where(*member_where(image_id, member_id))
                .values(status=status.value, updated_at=updated_at)
            )
            member = self._member(connection, image_id, member_id)
            if member is None:
                raise NotFound(f"Member {member_id} not found for image {image_id}.")
            return member

        return self._transaction("update_member", txn, write=True)

    def delete_member(self, image_id: str, member_id: str) -> Deferred[bool]:
        def txn(connection: Connection) -> bool:
            statement = delete(image_members).where(*member_where(image_id, member_id))
            return bool(connection.execute(statement).rowcount)

        return self._transaction("delete_member", txn, write=True)

    # -- accounting and maintenance ---------------------------------------------------------

    def usage(self, owner: str) -> Deferred[ProjectUsage]:
        def txn(connection: Connection) -> ProjectUsage:
            statement = select(
                func.coalesce(func.sum(images.c.size), 0),
                func.count(),
                func.coalesce(
                    func.sum(case((images.c.status.in_(_UPLOADING), 1), else_=0)), 0
                ),
            ).where(images.c.owner == owner, images.c.deleted == false())
            size, count, uploading = connection.execute(statement).one()
            return ProjectUsage(int(size), int(count), int(uploading))

        return self._transaction("project_usage", txn)

    def ids_with_status(self, status: Status) -> Deferred[builtins.list[str]]:
        def txn(connection: Connection) -> builtins.list[str]:
            statement = select(images.c.id).where(
                images.c.status == status.value, images.c.deleted == false()
            )
            return [row[0] for row in connection.execute(statement)]

        return self._transaction("ids_with_status", txn)

    def locations(self) -> Deferred[set[str]]:
        def txn(connection: Connection) -> set[str]:
            statement = select(images.c.locations).where(
                images.c.locations.is_not(None), images.c.deleted == false()
            )
            return {
                location.url
                for row in connection.execute(statement)
                for location in locations_from_text(row[0])
            }

        return self._transaction("image_locations", txn)

    def heartbeat(self, node: str, at: datetime) -> Deferred[None]:
        def txn(connection: Connection) -> None:
            updated = connection.execute(
                update(nodes).where(nodes.c.id == node).values(heartbeat_at=at)
            )
            if not updated.rowcount:
                connection.execute(insert(nodes).values(id=node, heartbeat_at=at))

        return self._transaction("heartbeat", txn, write=True)

    @staticmethod
    def _saving(connection: Connection) -> builtins.list[tuple[str, str | None, datetime]]:
        statement = (
            select(images.c.id, images.c.upload_node, images.c.updated_at)
            .where(
                (images.c.status == Status.SAVING.value) | images.c.upload_node.is_not(None),
                images.c.deleted == false(),
            )
            .order_by(images.c.id)
        )
        return [(row[0], row[1], _when(row[2])) for row in connection.execute(statement)]

    def saving_uploads(self) -> Deferred[builtins.list[SavingUpload]]:
        def txn(connection: Connection) -> builtins.list[SavingUpload]:
            # Few nodes, few uploads: joined here (a claim is its node plus a nonce).
            seen = {
                row[0]: _when(row[1])
                for row in connection.execute(select(nodes.c.id, nodes.c.heartbeat_at))
            }
            return [
                SavingUpload(
                    image_id=image_id, claim=claim, updated_at=updated_at,
                    node_seen=seen.get(claim_node(claim)) if claim is not None else None,
                )
                for image_id, claim, updated_at in self._saving(connection)
            ]

        return self._transaction("saving_uploads", txn)

    def forget_nodes(self, before: datetime) -> Deferred[int]:
        def txn(connection: Connection) -> int:
            holding = {
                claim_node(claim) for _, claim, _ in self._saving(connection) if claim is not None
            }
            silent = [
                row[0] for row in connection.execute(
                    select(nodes.c.id).where(nodes.c.heartbeat_at < before))
                if row[0] not in holding
            ]
            if silent:
                connection.execute(delete(nodes).where(nodes.c.id.in_(silent)))
            return len(silent)

        return self._transaction("forget_nodes", txn, write=True)

    def ping(self) -> Deferred[None]:
        def txn(connection: Connection) -> None:
            connection.exec_driver_sql("SELECT 1").scalar()

        return self._transaction("ping", txn)

    def close(self) -> Deferred[None]:
        self._runner.stop()
        self._engine.dispose()
        if self._read_engine is not self._engine:
            self._read_runner.stop()
            self._read_engine.dispose()
        return succeed(None)




__all__ = ["SQLMetadataStore"]
