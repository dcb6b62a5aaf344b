"""
``imaged-manage``: operator commands that run beside (not inside) the daemon.

``db upgrade`` applies the Alembic migrations a database lacks and ``db current`` says where it
stands.  imaged migrates an embedded SQLite database itself when it starts (one node owns it);
a server database shared by several nodes is migrated only by this command, once, by the
operator, and every node refuses to start until it has been (``SQLMetadataStore.open``).

``scrub`` repairs what crashes leave on a shared deployment: images stuck in ``saving`` with no
upload for a long time go back to ``queued``, and blobs no image refers to are deleted.
(imaged deletes image data at once, so there are no delayed deletes to finish.)  ``verify``
reads stored images back and compares size, md5 and the multihash with their records.  Both
read the daemon's configuration (``--config``, the same TOML file), so they reach the same
database and store.

``metadefs load|unload|export`` manage the metadata definitions catalog from Glance's JSON
definition files (``imaged.metadefs.files``): by default, the definitions Glance ships.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.usage import UsageError

from .assembly import assemble, metadata_store
from .clock import utc
from .config import Options
from .errors import NotFound
from .hashing import Digests
from .interfaces import IBlobStore
from .metadefs.files import SHIPPED, DefinitionFileError, read_definitions, write_definitions
from .metadefs.model import LoadMode
from .model import Image, Status
from .store.database import describe, make_engine, schema_revision, upgrade_schema
from .streams import consume


def _options(args: argparse.Namespace) -> Options:
    """The daemon's options: its configuration file, with --database/--data-dir over it."""
    argv: list[str] = []
    if args.config:
        argv += ["--config", args.config]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.database:
        argv += ["--database", args.database]
    options = Options()
    options.parseOptions(argv)
    return options


def _database_url(args: argparse.Namespace) -> str:
    return str(_options(args)["database"])


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
    top.add_argument("--config", help="imaged's TOML configuration file (as the daemon's)")
    where = top.add_mutually_exclusive_group()
    where.add_argument("--database", help="SQLAlchemy URL of imaged's database")
    where.add_argument(
        "--data-dir",
        help="data directory of an embedded (SQLite) imaged (default ./imaged-data)",
    )
    commands = top.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="the metadata database's schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="apply the migrations the database lacks")
    db_commands.add_parser(
        "current", help="print the schema revision; exit 1 if it needs an upgrade"
    )
    scrub = commands.add_parser("scrub", help="repair what interrupted uploads left")
    scrub.add_argument(
        "--saving-older-than",
        type=float,
        default=6 * 3600,
        metavar="SECONDS",
        help="reset images saving with no change for this long (default 6 hours)",
    )
    scrub.add_argument(
        "--orphans-older-than",
        type=float,
        default=3600,
        metavar="SECONDS",
        help="delete unreferenced blobs stored this long ago (default 1 hour)",
    )
    verify = commands.add_parser("verify", help="re-hash stored images against their records")
    verify.add_argument("image_ids", nargs="*", help="images to check (default: all active)")
    catalog = commands.add_parser("metadefs", help="the metadata definitions catalog")
    catalog_commands = catalog.add_subparsers(dest="metadefs_command", required=True)
    load = catalog_commands.add_parser(
        "load", help="load definition files (Glance's db_load_metadefs)"
    )
    load.add_argument(
        "path", nargs="?", default=SHIPPED,
        help="a directory of .json definition files, or one file (default: Glance's)",
    )
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--merge", action="store_true",
                      help="add what a file has to its namespace where that exists")
    mode.add_argument("--prefer-new", action="store_true",
                      help="as --merge, and replace what both have with the file's")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace existing namespaces with the files' whole")
    unload = catalog_commands.add_parser(
        "unload", help="remove the catalog (Glance's db_unload_metadefs)"
    )
    unload.add_argument("--namespace", action="append", metavar="NAME",
                        help="remove only this namespace (repeatable)")
    export = catalog_commands.add_parser(
        "export", help="write each namespace to a .json file (Glance's db_export_metadefs)"
    )
    export.add_argument("directory", help="where to write the files")
    return top


async def _scrub(reactor: Any, options: Options, args: argparse.Namespace) -> int:
    parts = assemble(options.settings, reactor)
    try:
        stuck_before = utc(reactor) - timedelta(seconds=args.saving_older_than)
        scrubbed = await parts.service.scrub(
            stuck_before, time.time() - args.orphans_older_than
        )
    finally:
        await parts.blobs.close()
        await parts.metadata.close()
    for image_id in scrubbed.reset:
        print(f"reset to queued: {image_id}")
    for location in scrubbed.removed:
        print(f"deleted unreferenced data: {location}")
    print(
        f"scrub: {len(scrubbed.reset)} image(s) reset, {len(scrubbed.removed)} blob(s) deleted"
    )
    return 0


async def _verify(reactor: Any, options: Options, args: argparse.Namespace) -> int:
    parts = assemble(options.settings, reactor)
    metadata, blobs = parts.metadata, parts.blobs
    bad = checked = 0
    try:
        ids = args.image_ids or await metadata.ids_with_status(Status.ACTIVE)
        for image_id in ids:
            image = await metadata.get(image_id)
            if image is None or image.location is None:
                print(f"MISSING {image_id}: no such image with data")
                bad += 1
                continue
            problem = await _check(blobs, image)
            checked += 1
            if problem:
                bad += 1
                print(f"MISMATCH {image_id}: {problem}")
            else:
                print(f"ok {image_id}")
    finally:
        await blobs.close()
        await metadata.close()
    print(f"verify: {checked} image(s) read, {bad} problem(s)")
    return 1 if bad else 0


async def _check(blobs: IBlobStore, image: Image) -> str | None:
    """What is wrong with ``image``'s stored bytes, or ``None``."""
    digests = Digests(image.os_hash_algo or "sha512")
    assert image.location is not None
    try:
        producer = await blobs.read(image.location)

        def hash_chunk(data: bytes) -> Deferred[None]:
            digests.update(data)  # an operator command: hashing here blocks nobody
            return succeed(None)

        await consume(producer, hash_chunk)
    except NotFound:
        return "its data is missing from the store"
    found = {
        "size": digests.size,
        "checksum": digests.checksum,
        "os_hash_value": digests.hash_value,
    }
    wrong = [
        f"{name} {found[name]} (recorded {getattr(image, name)})"
        for name in found
        if getattr(image, name) != found[name]
    ]
    return "; ".join(wrong) or None


async def _metadefs(reactor: Any, options: Options, args: argparse.Namespace) -> int:
    metadata = metadata_store(options.settings, reactor)
    try:
        if args.metadefs_command == "load":
            try:
                contents = read_definitions(args.path, utc(reactor))
            except DefinitionFileError as e:
                print(f"imaged-manage: {e}", file=sys.stderr)
                return 2
            mode = (
                LoadMode.MERGE if args.merge else LoadMode.PREFER_NEW if args.prefer_new
                else LoadMode.OVERWRITE if args.overwrite else LoadMode.SKIP
            )
            report = await metadata.load(contents, mode)
            for name in report.loaded:
                print(f"loaded: {name}")
            for name in report.merged:
                print(f"merged: {name}")
            for name in report.skipped:
                print(f"skipped (exists; --merge, --prefer-new or --overwrite to change): {name}")
            print(f"metadefs load: {len(report.loaded)} loaded, {len(report.merged)} merged, "
                  f"{len(report.skipped)} skipped")
        elif args.metadefs_command == "unload":
            removed = await metadata.unload(args.namespace)
            print(f"metadefs unload: {removed} namespace(s) removed")
        else:
            written = write_definitions(await metadata.export(), args.directory)
            for path in written:
                print(f"wrote {path}")
            print(f"metadefs export: {len(written)} namespace(s)")
    finally:
        await metadata.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        options = _options(args)
    except UsageError as e:
        print(f"imaged-manage: {e}", file=sys.stderr)
        return 2
    url = str(options["database"])
    try:
        if args.command == "db" and args.db_command == "upgrade":
            return _db_upgrade(url)
        if args.command == "db" and args.db_command == "current":
            return _db_current(url)
        run = {"scrub": _scrub, "verify": _verify, "metadefs": _metadefs}[args.command]
        outcome: list[int] = []

        def go(reactor: Any) -> Deferred[None]:
            return Deferred.fromCoroutine(run(reactor, options, args)).addCallback(
                outcome.append
            )

        _react(go)
        return outcome[0] if outcome else 2
    except SystemExit as e:
        if isinstance(e.code, int):
            return e.code
        print(f"imaged-manage: {e.code}", file=sys.stderr)
        return 2
    except Exception as e:  # an operator command: one clear line, not a traceback
        print(f"imaged-manage: {describe(url)}: {e}", file=sys.stderr)
        return 2


def _react(go: Any) -> None:
    """Run ``go(reactor)`` to completion on the global reactor (once per process)."""
    from twisted.internet import reactor

    failures: list[Any] = []

    def start() -> None:
        d = go(reactor)
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if failures:
        failures[0].raiseException()


if __name__ == "__main__":
    sys.exit(main())
