"""
Image records in a SQL database through SQLAlchemy Core: SQLite now, PostgreSQL with the same code.

Every operation is one transaction run by a ``Runner`` (a private thread; inline for in-memory
tests).  SQLite gets one connection, WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writes, so
that concurrent creates never fail with "database is locked".  Pages are fetched by keyset
(``WHERE (sort keys) after (marker's keys)``), never by offset.
"""

from __future__ import annotations

import builtins
import functools
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from .. import metrics
from ..errors import BadRequest, Duplicate, ImageNotFound, NotFound
from ..interfaces import IMetadataStore
from ..model import (
    Compare,
    Condition,
    ContainerFormat,
    DiskFormat,
    Image,
    ImageQuery,
    Member,
    MemberStatus,
    Page,
    ProjectUsage,
    Scope,
    SortDir,
    SortKey,
    Status,
    Visibility,
    VisibilityFilter,
)
from ..threads import InlineRunner, ThreadRunner
from .tables import image_members, image_properties, image_tags, images, metadata

T = TypeVar("T")

_IMAGE_COLUMNS = (
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "owner",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "location",
    "created_at",
    "updated_at",
)

#: Columns a list may filter on (``Condition.field``).
FILTER_COLUMNS = frozenset(_IMAGE_COLUMNS) - {"location"}

_NULLABLE_SORT_KEYS = frozenset({"name", "container_format", "disk_format", "size"})

_ENUM_COLUMNS: Mapping[str, Any] = {
    "status": Status,
    "visibility": Visibility,
    "disk_format": DiskFormat,
    "container_format": ContainerFormat,
}

#: Enum members by stored value (a dict lookup; calling the Enum is far slower per row).
_ENUM_MEMBERS: Mapping[str, Mapping[str, Any]] = {
    name: {member.value: member for member in kind} for name, kind in _ENUM_COLUMNS.items()
}

_MIGRATIONS = "imaged.store:migrations"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """The database's migration revision and the newest one this code knows."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    assert head is not None
    return current, head


def upgrade_schema(engine: Engine) -> None:
    """Apply every Alembic migration the database lacks."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")


def make_engine(url: str) -> Engine:
    """
    An engine for ``url``, tuned for imaged's use of it.

    SQLite: a single shared connection (one writer thread uses it), WAL so readers in other
    processes are not blocked, a 30 s busy timeout, foreign keys on, and transactions that we
    begin ourselves so that writes can ``BEGIN IMMEDIATE``.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        memory = url in ("sqlite://", "sqlite:///:memory:")

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            # Straight to the driver: a full SQLAlchemy execution per BEGIN costs more than
            # the queries of a typical read.
            driver = connection.connection.driver_connection
            assert driver is not None
            if connection.get_execution_options().get("imaged_write"):
                driver.execute("BEGIN IMMEDIATE")
            else:
                driver.execute("BEGIN")

        return engine
    # PostgreSQL through psycopg 3 (SQLAlchemy's default driver for the scheme is psycopg2).
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url, pool_pre_ping=True, pool_size=_POOL_SIZE, max_overflow=0)


#: Threads (and so connections) a server database gets per imaged process.
_POOL_SIZE = 4


def image_row(image: Image) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _IMAGE_COLUMNS:
        value = getattr(image, name)
        if name in _ENUM_COLUMNS and value is not None:
            value = value.value
        values[name] = value
    values["deleted"] = image.status is Status.DELETED
    return values


def _image_from_row(row: Row[Any], tags: Iterable[str], properties: Mapping[str, str]) -> Image:
    fields: dict[str, Any] = dict(zip(_IMAGE_COLUMNS, row, strict=True))
    for name in ("created_at", "updated_at"):
        value = fields[name]
        if isinstance(value, str):  # SQLite's driver returns the stored text
            fields[name] = datetime.fromisoformat(value)
    fields["protected"] = bool(fields["protected"])
    fields["os_hidden"] = bool(fields["os_hidden"])
    for name, members in _ENUM_MEMBERS.items():
        value = fields[name]
        if value is not None:
            fields[name] = members[value]
    return Image(tags=frozenset(tags), properties=dict(properties), **fields)


def _member_from_row(row: Any) -> Member:
    mapping = row._mapping
    return Member(
        image_id=mapping["image_id"],
        member_id=mapping["member"],
        status=MemberStatus(mapping["status"]),
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
    )


def _column(name: str) -> Column[Any]:
    return images.c[name]


def _whole_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _condition_clause(condition: Condition) -> ColumnElement[bool]:
    """
    One filter as SQL.  Timestamps compare at whole seconds, as they are shown: ``eq:T``
    matches anything shown as ``T``, ``gt:T`` anything shown later than ``T``.
    """
    if condition.field not in FILTER_COLUMNS:
        raise BadRequest(f"Unable to filter on {condition.field!r}")
    column = _column(condition.field)
    value = condition.value
    op = condition.op
    if op is Compare.IN:
        assert isinstance(value, tuple)
        return column.in_([_sql_value(condition.field, v) for v in value])
    if isinstance(value, datetime):
        start = _whole_second(value)
        end = start + timedelta(seconds=1)
        return {
            Compare.EQ: and_(column >= start, column < end),
            Compare.NEQ: or_(column < start, column >= end),
            Compare.GT: column >= end,
            Compare.GTE: column >= start,
            Compare.LT: column < start,
            Compare.LTE: column < end,
        }[op]
    value = _sql_value(condition.field, value)
    if value is None or isinstance(value, bool):
        if op is Compare.EQ:
            return column.is_(value)
        if op is Compare.NEQ:
            return column.is_not(value)
        raise BadRequest(f"Unable to compare {condition.field} with {op.value}")
    compare = {
        Compare.EQ: operator.eq,
        Compare.NEQ: operator.ne,
        Compare.GT: operator.gt,
        Compare.GTE: operator.ge,
        Compare.LT: operator.lt,
        Compare.LTE: operator.le,
    }[op]
    return compare(column, value)  # type: ignore[no-any-return,arg-type]


def _sql_value(field: str, value: object) -> object:
    if field in _ENUM_COLUMNS and hasattr(value, "value"):
        return value.value  # type: ignore[attr-defined]
    return value


def _visibility_clause(scope: Scope, wanted: VisibilityFilter | None) -> ColumnElement[bool]:
    """
    The visibility rules for ``scope`` (see ``_visibility_rules``), with the caller's project
    as the bound parameter ``viewer_project``: supply it when executing.
    """
    return _visibility_rules(
        scope.everything, scope.project is not None, scope.member_status, wanted
    )


@functools.lru_cache(maxsize=256)
def _visibility_rules(
    everything: bool,
    has_project: bool,
    member_status: MemberStatus | None,
    wanted: VisibilityFilter | None,
) -> ColumnElement[bool]:
    """
    Glance's list visibility rules.

    Without a ``visibility`` filter a caller sees public images and its own; admins see
    everything except other projects' community images.  ``community`` lists every community
    image; ``private``/``shared`` are restricted to the caller's own unless admin; ``all`` is
    everything the caller may see.
    """
    # Built once per shape and cached: building SQLAlchemy expressions costs more than
    # running a typical page query.
    vis = images.c.visibility
    viewer: Any = bindparam("viewer_project")
    owned: ColumnElement[bool] = images.c.owner == viewer if has_project else false()
    shared_with: ColumnElement[bool] = false()
    if has_project:
        membership = [image_members.c.image_id == images.c.id, image_members.c.member == viewer]
        if member_status is not None:
            membership.append(image_members.c.status == member_status.value)
        shared_with = and_(vis == Visibility.SHARED.value, exists().where(*membership))
    if wanted is None:
        if everything:
            return or_(vis != Visibility.COMMUNITY.value, owned)
        return or_(vis == Visibility.PUBLIC.value, owned, shared_with)
    if wanted is VisibilityFilter.ALL:
        if everything:
            return true()
        return or_(
            vis.in_([Visibility.PUBLIC.value, Visibility.COMMUNITY.value]), owned, shared_with
        )
    if wanted in (VisibilityFilter.PUBLIC, VisibilityFilter.COMMUNITY):
        return vis == wanted.value
    if everything:
        return vis == wanted.value
    if wanted is VisibilityFilter.SHARED:
        return or_(and_(vis == wanted.value, owned), shared_with)
    return and_(vis == wanted.value, owned)


#: What every list starts from: live images, hidden ones only when asked for.
_LISTED = and_(
    images.c.deleted == false(),
    images.c.status != Status.KILLED.value,
    images.c.os_hidden == false(),
)
_HIDDEN = and_(
    images.c.deleted == false(),
    images.c.status != Status.KILLED.value,
    images.c.os_hidden == true(),
)


def _order_by(sort: Sequence[SortKey]) -> list[Any]:
    """Sort clauses with NULL as the smallest value on every database."""
    clauses = []
    for key in sort:
        column = _column(key.key)
        if key.direction is SortDir.ASC:
            clause = column.asc()
            if key.key in _NULLABLE_SORT_KEYS:
                clause = clause.nulls_first()
        else:
            clause = column.desc()
            if key.key in _NULLABLE_SORT_KEYS:
                clause = clause.nulls_last()
        clauses.append(clause)
    return clauses


def _after_marker(sort: Sequence[SortKey], marker: Any) -> ColumnElement[bool]:
    """
    Rows strictly after the marker row in ``sort`` order (NULL sorts lowest).

    A uniform direction over non-NULL values is a row-value comparison, which SQLite and
    PostgreSQL answer with one index range; otherwise the general OR-of-prefixes form.
    """
    values = [marker[k.key] for k in sort]
    directions = {k.direction for k in sort}
    if len(directions) == 1 and all(v is not None for v in values):
        nullable = any(k.key in _NULLABLE_SORT_KEYS for k in sort)
        direction = directions.pop()
        if direction is SortDir.ASC or not nullable:
            left = tuple_(*(_column(k.key) for k in sort))
            right = tuple_(*values)
            return left > right if direction is SortDir.ASC else left < right
    alternatives = []
    for i, key in enumerate(sort):
        prefix = [
            _column(k.key).is_(None) if v is None else _column(k.key) == v
            for k, v in zip(sort[:i], values[:i], strict=False)
        ]
        column, value = _column(key.key), values[i]
        if key.direction is SortDir.ASC:
            step = column.is_not(None) if value is None else column > value
        elif value is None:
            step = false()
        elif key.key in _NULLABLE_SORT_KEYS:
            step = or_(column < value, column.is_(None))
        else:
            step = column < value
        alternatives.append(and_(*prefix, step))
    return or_(*alternatives)


# -- the hot read paths ----------------------------------------------------------------------
#
# Showing an image and filling in a page's tags and properties are most of imaged's queries.
# Their statements are still written once, in SQLAlchemy Core, but compiled once per database
# dialect and run straight on the DB-API cursor: SQLAlchemy's per-execution machinery costs
# ~100 us a query, several times the query itself, and it runs in the database thread where it
# competes with the reactor for the GIL.  Rows then come back as the driver returns them, which
# ``_image_from_row`` normalises (SQLite gives timestamps as text and booleans as integers).


#: Image rows are always selected in ``_IMAGE_COLUMNS`` order (``_image_from_row`` relies on it).
_IMAGE_SELECT = select(*(images.c[name] for name in _IMAGE_COLUMNS))


def _by_id_statement() -> Any:
    return _IMAGE_SELECT.where(images.c.id == bindparam("id0"), images.c.deleted == false())


def _by_id_for_update_statement() -> Any:
    return _by_id_statement().with_for_update()


def _tags_and_properties_statement(count: int) -> Any:
    placeholders: list[Any] = [bindparam(f"id{n}") for n in range(count)]
    return union_all(
        select(image_tags.c.image_id, image_tags.c.value, null()).where(
            image_tags.c.image_id.in_(placeholders)
        ),
        select(
            image_properties.c.image_id, image_properties.c.name, image_properties.c.value
        ).where(image_properties.c.image_id.in_(placeholders)),
    )


class _DriverStatements:
    """Core statements compiled once for one dialect, executed on the DB-API cursor."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect
        self._compiled: dict[tuple[str, int], tuple[str, tuple[str, ...] | None]] = {}

    def _compile(self, key: tuple[str, int], build: Callable[[], Any]) -> tuple[str, Any]:
        found = self._compiled.get(key)
        if found is None:
            compiled = build().compile(dialect=self._dialect)
            order = tuple(compiled.positiontup) if self._dialect.positional else None
            found = self._compiled[key] = (compiled.string, order)
        return found

    def fetch(
        self,
        connection: Connection,
        key: tuple[str, int],
        build: Callable[[], Any],
        ids: Sequence[str],
    ) -> list[Any]:
        sql, order = self._compile(key, build)
        params: dict[str, str] = {f"id{n}": value for n, value in enumerate(ids)}
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, [params[name] for name in order] if order else params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


class SchemaOutOfDate(RuntimeError):
    """The database's schema is older (or newer) than this imaged's migrations."""


@implementer(IMetadataStore)
class SQLMetadataStore:
    """
    ``IMetadataStore`` over a SQLAlchemy engine.

    Use ``open(url)`` for a real database (its own thread) and ``in_memory()`` for tests and
    embedding (SQLite in memory, run inline: no threads, deterministic).
    """

    log = Logger()

    def __init__(self, engine: Engine, runner: ThreadRunner | InlineRunner) -> None:
        self._engine = engine
        self._runner = runner
        self._driver = _DriverStatements(engine.dialect)
        self.dialect: str = engine.dialect.name

    @classmethod
    def open(cls, url: str, reactor: Any, migrate: bool = True) -> SQLMetadataStore:
        """
        Connect to ``url``; bring its schema up to date if ``migrate``, else refuse an
        out-of-date schema with a message saying how to upgrade it.
        """
        engine = make_engine(url)
        if migrate:
            upgrade_schema(engine)
        else:
            current, head = schema_revision(engine)
            if current != head:
                engine.dispose()
                raise SchemaOutOfDate(
                    f"database schema of {describe(url)} is at revision {current or 'none'}, "
                    f"this imaged needs {head}: run "
                    f"'imaged-manage --database <url> db upgrade' first"
                )
        # SQLite takes one writer at a time: one thread keeps it free of lock contention.
        size = 1 if engine.dialect.name == "sqlite" else _POOL_SIZE
        return cls(engine, ThreadRunner(reactor, size, "imaged-db"))

    @classmethod
    def in_memory(cls) -> SQLMetadataStore:
        engine = make_engine("sqlite://")
        upgrade_schema(engine)
        return cls(engine, InlineRunner())

    # -- transactions --------------------------------------------------------------------

    def _read(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        def txn() -> T:
            with self._engine.connect() as connection, connection.begin():
                return fn(connection)

        return self._timed("read", self._runner.run(txn))

    def _write(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        def txn() -> T:
            with self._engine.connect() as connection:
                connection = connection.execution_options(imaged_write=True)
                with connection.begin():
                    return fn(connection)

        return self._timed("write", self._runner.run(txn))

    @staticmethod
    def _timed(kind: str, done: Deferred[T]) -> Deferred[T]:
        """Record the transaction's time, queueing included, in ``imaged_db_*``."""
        if done.called:  # run inline (in-memory store): nothing worth measuring
            return done
        began = time.monotonic()

        def record(result: Any) -> Any:
            metrics.DB_LATENCY.labels(kind).observe(time.monotonic() - began)
            return result

        return done.addBoth(record)

    # -- IMetadataStore --------------------------------------------------------------------

    def insert(self, image: Image) -> Deferred[Image]:
        def txn(connection: Connection) -> Image:
            try:
                connection.execute(insert(images).values(**image_row(image)))
            except IntegrityError:
                raise Duplicate(f"An image with identifier {image.id} already exists") from None
            self._write_tags(connection, image.id, image.tags, ())
            self._write_properties(connection, image.id, image.properties, {})
            return image

        return self._write(txn)

    def get(self, image_id: str) -> Deferred[Image | None]:
        return self._read(lambda connection: self._load(connection, image_id))

    def list(self, scope: Scope, query: ImageQuery) -> Deferred[Page]:
        return self._read(lambda connection: self._list(connection, scope, query))

    def modify(self, image_id: str, mutate: Callable[[Image], Image]) -> Deferred[Image]:
        def txn(connection: Connection) -> Image:
            old = self._load(connection, image_id, for_update=True)
            if old is None:
                raise ImageNotFound(image_id)
            new = mutate(old)
            old_values, new_values = image_row(old), image_row(new)
            changed = {k: v for k, v in new_values.items() if old_values[k] != v}
            if new.status is Status.DELETED and old.status is not Status.DELETED:
                changed["deleted_at"] = new.updated_at
            if changed:
                connection.execute(update(images).where(images.c.id == image_id).values(**changed))
            self._write_tags(connection, image_id, new.tags, old.tags)
            self._write_properties(connection, image_id, new.properties, old.properties)
            return new

        return self._write(txn)

    # -- members ------------------------------------------------------------------------------

    def add_member(self, member: Member) -> Deferred[Member]:
        def txn(connection: Connection) -> Member:
            try:
                connection.execute(
                    insert(image_members).values(
                        image_id=member.image_id,
                        member=member.member_id,
                        status=member.status.value,
                        created_at=member.created_at,
                        updated_at=member.updated_at,
                    )
                )
            except IntegrityError:
                raise Duplicate(
                    f"Member {member.member_id} already associated with image {member.image_id}."
                ) from None
            return member

        return self._write(txn)

    def get_member(self, image_id: str, member_id: str) -> Deferred[Member | None]:
        def query(connection: Connection) -> Member | None:
            row = connection.execute(
                select(image_members).where(
                    image_members.c.image_id == image_id, image_members.c.member == member_id
                )
            ).first()
            return _member_from_row(row) if row is not None else None

        return self._read(query)

    def list_members(self, image_id: str) -> Deferred[builtins.list[Member]]:
        def query(connection: Connection) -> builtins.list[Member]:
            rows = connection.execute(
                select(image_members)
                .where(image_members.c.image_id == image_id)
                .order_by(image_members.c.created_at, image_members.c.member)
            )
            return [_member_from_row(row) for row in rows]

        return self._read(query)

    def update_member(
        self, image_id: str, member_id: str, status: MemberStatus, updated_at: datetime
    ) -> Deferred[Member]:
        def txn(connection: Connection) -> Member:
            where = (image_members.c.image_id == image_id, image_members.c.member == member_id)
            connection.execute(
                update(image_members)
                .where(*where)
                .values(status=status.value, updated_at=updated_at)
            )
            row = connection.execute(select(image_members).where(*where)).first()
            if row is None:
                raise NotFound(f"Member {member_id} not found for image {image_id}.")
            return _member_from_row(row)

        return self._write(txn)

    def delete_member(self, image_id: str, member_id: str) -> Deferred[bool]:
        def txn(connection: Connection) -> bool:
            result = connection.execute(
                delete(image_members).where(
                    image_members.c.image_id == image_id, image_members.c.member == member_id
                )
            )
            return bool(result.rowcount)

        return self._write(txn)

    def ping(self) -> Deferred[None]:
        def query(connection: Connection) -> None:
            connection.exec_driver_sql("SELECT 1").scalar()

        return self._read(query)

    def usage(self, owner: str) -> Deferred[ProjectUsage]:
        def query(connection: Connection) -> ProjectUsage:
            statement = select(
                func.coalesce(func.sum(images.c.size), 0),
                func.count(),
                func.coalesce(
                    func.sum(case((images.c.status == Status.SAVING.value, 1), else_=0)), 0
                ),
            ).where(images.c.owner == owner, images.c.deleted == false())
            size, count, uploading = connection.execute(statement).one()
            return ProjectUsage(int(size), int(count), int(uploading))

        return self._read(query)

    def ids_with_status(self, status: Status) -> Deferred[builtins.list[str]]:
        def query(connection: Connection) -> builtins.list[str]:
            statement = select(images.c.id).where(
                images.c.status == status.value, images.c.deleted == false()
            )
            return [row[0] for row in connection.execute(statement)]

        return self._read(query)

    def locations(self) -> Deferred[set[str]]:
        def query(connection: Connection) -> set[str]:
            statement = select(images.c.location).where(
                images.c.location.is_not(None), images.c.deleted == false()
            )
            return {row[0] for row in connection.execute(statement)}

        return self._read(query)

    def close(self) -> Deferred[None]:
        self._runner.stop()
        self._engine.dispose()
        from twisted.internet.defer import succeed

        return succeed(None)

    # -- in the database thread ---------------------------------------------------------

    @staticmethod
    def _write_tags(
        connection: Connection, image_id: str, new: Iterable[str], old: Iterable[str]
    ) -> None:
        new_set, old_set = set(new), set(old)
        if old_set - new_set:
            connection.execute(
                delete(image_tags).where(
                    image_tags.c.image_id == image_id,
                    image_tags.c.value.in_(sorted(old_set - new_set)),
                )
            )
        if new_set - old_set:
            connection.execute(
                insert(image_tags),
                [{"image_id": image_id, "value": v} for v in sorted(new_set - old_set)],
            )

    @staticmethod
    def _write_properties(
        connection: Connection,
        image_id: str,
        new: Mapping[str, str],
        old: Mapping[str, str],
    ) -> None:
        gone = [k for k in old if k not in new]
        changed = [k for k in new if k in old and old[k] != new[k]]
        added = [k for k in new if k not in old]
        if gone or changed:
            connection.execute(
                delete(image_properties).where(
                    image_properties.c.image_id == image_id,
                    image_properties.c.name.in_(gone + changed),
                )
            )
        if changed or added:
            connection.execute(
                insert(image_properties),
                [{"image_id": image_id, "name": k, "value": new[k]} for k in changed + added],
            )

    def _load(
        self, connection: Connection, image_id: str, for_update: bool = False
    ) -> Image | None:
        """
        The image, or ``None``.  ``for_update`` locks its row until the transaction ends, so
        that read-check-write on one image is atomic across connections and nodes: a second
        writer waits, then reads what the first wrote (``queued -> saving`` can only be won
        once).  SQLite's ``BEGIN IMMEDIATE`` already serialises writers; there the clause
        compiles to nothing.
        """
        if for_update:
            rows = self._driver.fetch(
                connection, ("by_id_for_update", 1), _by_id_for_update_statement, [image_id]
            )
        else:
            rows = self._driver.fetch(connection, ("by_id", 1), _by_id_statement, [image_id])
        if not rows:
            return None
        return self._hydrate(connection, rows)[0]

    def _hydrate(self, connection: Connection, rows: Sequence[Any]) -> Sequence[Image]:
        """Attach tags and properties to image rows: one query for a whole page."""
        if not rows:
            return []
        ids = [row[0] for row in rows]  # id is the first of _IMAGE_COLUMNS
        tags: dict[str, list[str]] = {i: [] for i in ids}
        properties: dict[str, dict[str, str]] = {i: {} for i in ids}
        extras = self._driver.fetch(
            connection,
            ("tags_and_properties", len(ids)),
            lambda: _tags_and_properties_statement(len(ids)),
            ids,
        )
        for image_id, name, value in extras:
            if value is None:
                tags[image_id].append(name)
            else:
                properties[image_id][name] = value
        return [_image_from_row(row, tags[row[0]], properties[row[0]]) for row in rows]

    def _list(self, connection: Connection, scope: Scope, query: ImageQuery) -> Page:
        where: list[ColumnElement[bool]] = [
            _HIDDEN if query.os_hidden else _LISTED,
            _visibility_clause(scope, query.visibility),
        ]
        params = {"viewer_project": scope.project}
        where.extend(_condition_clause(c) for c in query.conditions)
        for tag in query.tags:
            where.append(
                exists().where(image_tags.c.image_id == images.c.id, image_tags.c.value == tag)
            )
        for name, value in query.properties.items():
            where.append(
                exists().where(
                    image_properties.c.image_id == images.c.id,
                    image_properties.c.name == name,
                    image_properties.c.value == value,
                )
            )
        if query.marker is not None:
            marker_row = connection.execute(
                select(*(images.c[k.key] for k in query.sort)).where(
                    images.c.id == query.marker,
                    images.c.deleted == false(),
                    _visibility_clause(scope, VisibilityFilter.ALL),
                ),
                params,
            ).first()
            if marker_row is None:
                raise BadRequest(f"Invalid marker. Image {query.marker} could not be found.")
            where.append(_after_marker(query.sort, marker_row._mapping))
        if query.limit <= 0:
            return Page(images=[], full=False)
        rows = connection.execute(
            _IMAGE_SELECT.where(*where).order_by(*_order_by(query.sort)).limit(query.limit),
            params,
        ).all()
        return Page(images=self._hydrate(connection, rows), full=len(rows) == query.limit)


def describe(engine_url: str) -> str:
    """A URL fit for logs: no password."""
    from sqlalchemy.engine import make_url

    return make_url(engine_url).render_as_string(hide_password=True)


__all__ = [
    "FILTER_COLUMNS",
    "SQLMetadataStore",
    "SchemaOutOfDate",
    "describe",
    "image_row",
    "make_engine",
    "metadata",
    "schema_revision",
    "upgrade_schema",
]
