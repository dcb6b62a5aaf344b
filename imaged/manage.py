"""
``imaged-manage``: operator commands that run beside (not inside) the daemon.

``db upgrade`` applies the Alembic migrations a database lacks and ``db current`` says where it
stands.  imaged migrates an embedded SQLite database itself when it starts (one node owns it);
a server database shared by several nodes is migrated only by this command, once, by the
operator, and every node refuses to start until it has been (``SQLMetadataStore.open``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .store.sql import describe, make_engine, schema_revision, upgrade_schema


def _database_url(args: argparse.Namespace) -> str:
    if args.database:
        return str(args.database)
    return "sqlite:///" + os.path.join(os.path.abspath(args.data_dir), "imaged.sqlite")


def _db_upgrade(url: str) -> int:
    engine = make_engine(url)
    try:
        before, _ = schema_revision(engine)
        upgrade_schema(engine)
        after, _ = schema_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        print(f"{describe(url)}: already at revision {after} (head)")
    else:
        print(f"{describe(url)}: upgraded from {before or 'an empty database'} to {after}")
    return 0


def _db_current(url: str) -> int:
    engine = make_engine(url)
    try:
        current, head = schema_revision(engine)
    finally:
        engine.dispose()
    state = "up to date" if current == head else f"needs upgrade to {head}"
    print(f"{describe(url)}: revision {current or 'none'} ({state})")
    return 0 if current == head else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="imaged-manage", description=__doc__.split("\n\n")[0])
    where = top.add_mutually_exclusive_group()
    where.add_argument("--database", help="SQLAlchemy URL of imaged's database")
    where.add_argument(
        "--data-dir",
        default="imaged-data",
        help="data directory of an embedded (SQLite) imaged (default ./imaged-data)",
    )
    commands = top.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="the metadata database's schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply the migrations the database lacks")
    db_commands.add_parser(
        "current", help="print the schema revision; exit 1 if it needs an upgrade"
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = _database_url(args)
    try:
        if args.command == "db" and args.db_command == "upgrade":
            return _db_upgrade(url)
        if args.command == "db" and args.db_command == "current":
            return _db_current(url)
    except Exception as e:  # an operator command: one clear line, not a traceback
        print(f"imaged-manage: {describe(url)}: {e}", file=sys.stderr)
        return 2
    raise AssertionError("unreachable: argparse requires a command")


if __name__ == "__main__":
    sys.exit(main())
