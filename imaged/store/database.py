"""
The metadata database itself: engines tuned per dialect, Alembic migrations, URLs fit for logs.

SQLite gets one writing connection, WAL, a short busy timeout and ``BEGIN IMMEDIATE`` for
writes, so that concurrent creates never fail with "database is locked", and separate reading
connections that WAL lets go on while another process holds the write lock.  PostgreSQL goes
through psycopg 3 with a small pool.  An embedded SQLite database is migrated by the node that
owns it; a server database only by ``imaged-manage db upgrade`` (``schema_revision`` tells
whether it was).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

_MIGRATIONS = "imaged.store:migrations"

#: Threads (and so connections) a server database gets per imaged process.
POOL_SIZE = 4

#: Reading connections (and threads) a SQLite file gets besides its one writer.
SQLITE_READERS = 2

#: How long a SQLite statement waits for another process's lock before the request answers
#: 503: long enough for any transaction of ours (milliseconds), short enough that a client
#: hears "try again" in seconds rather than hanging behind an outside ``.backup``.
SQLITE_BUSY_TIMEOUT = 5.0

#: libpq settings that turn a database that vanished into an error (503) in seconds, not a
#: thread stuck for minutes: a connect gives up after 5 s (not the kernel's SYN retries), and
#: TCP keepalives find a half-open connection in about a minute (not two hours).
POSTGRESQL_CONNECT = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

#: The execution option that makes a SQLite transaction ``BEGIN IMMEDIATE``: ``True``, or
#: the ``time.monotonic()`` at which the write was queued (its busy timeout counts from then).
WRITE = "imaged_write"


class SchemaOutOfDate(RuntimeError):
    """The database's schema is older (or newer) than this imaged's migrations."""


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


def check_schema(engine: Engine, url: str) -> None:
    """Refuse a schema that is not at this code's head, saying how to upgrade it."""
    current, head = schema_revision(engine)
    if current != head:
        raise SchemaOutOfDate(
            f"database schema of {describe(url)} is at revision {current or 'none'}, "
            f"this imaged needs {head}: run "
            f"'imaged-manage --database <url> db upgrade' first"
        )


def is_memory(url: str) -> bool:
    """Whether ``url`` is a SQLite database in this process's memory."""
    return url in ("sqlite://", "sqlite:///:memory:")


def make_engine(
    url: str, readers: int = 0, busy_timeout: float = SQLITE_BUSY_TIMEOUT
) -> Engine:
    """
    An engine for ``url``, tuned for imaged's use of it.

    SQLite: a single shared connection (one writer thread uses it), WAL so readers are not
    blocked, a short busy timeout, foreign keys on, and transactions that we begin ourselves
    so that writes can ``BEGIN IMMEDIATE``; with ``readers``, a pool of that many read-only
    connections to the same file instead.
    """
    if url.startswith("sqlite"):
        return _sqlite_engine(url, readers, busy_timeout)
    # PostgreSQL through psycopg 3 (SQLAlchemy's default driver for the scheme is psycopg2).
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(
        url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=0,
        connect_args=dict(POSTGRESQL_CONNECT),
    )


def _sqlite_engine(url: str, readers: int, busy_timeout: float) -> Engine:
    connect_args = {"check_same_thread": False, "timeout": busy_timeout}
    if readers:
        engine = create_engine(
            url, pool_size=readers, max_overflow=0, connect_args=connect_args
        )
    else:
        engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
    memory = is_memory(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not memory and not readers:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if readers:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Straight to the driver: a full SQLAlchemy execution per BEGIN costs more than
        # the queries of a typical read.
        driver = connection.connection.driver_connection
        assert driver is not None
        queued = connection.get_execution_options().get(WRITE)
        if not queued:
            driver.execute("BEGIN")
            return
        if queued is not True:
            # Writes queue for the one writer thread: each gets what is left of the busy
            # timeout since it was queued, so that behind an outside lock the hundredth write
            # answers 503 after 5 s too, not after a hundred times 5 s.
            left = busy_timeout - (time.monotonic() - float(queued))
            if left <= 0:
                raise sqlite3.OperationalError(
                    "database is locked: the write waited longer than the busy timeout"
                )
            driver.execute(f"PRAGMA busy_timeout={max(1, int(left * 1000))}")
        driver.execute("BEGIN IMMEDIATE")

    return engine


def describe(engine_url: str) -> str:
    """A URL fit for logs: no password."""
    return make_url(engine_url).render_as_string(hide_password=True)


__all__ = [
    "POOL_SIZE",
    "SQLITE_BUSY_TIMEOUT",
    "SQLITE_READERS",
    "WRITE",
    "SchemaOutOfDate",
    "check_schema",
    "describe",
    "is_memory",
    "make_engine",
    "schema_revision",
    "upgrade_schema",
]
