"""
``imaged-manage db upgrade|current`` and the daemon's refusal of an out-of-date server schema,
run as operators run them (the installed console script, ``twistd imaged``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from imaged.testing import TWISTD, TwistdDaemon

pytestmark = pytest.mark.servers  # starts twistd, imaged-manage and PostgreSQL

MANAGE = os.path.join(os.path.dirname(sys.executable), "imaged-manage")


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MANAGE, *args], capture_output=True, text=True, timeout=120)


def test_db_upgrade_and_current_on_postgresql(postgres: Any, tmp_path: Path) -> None:
    url = postgres.database("manage_" + uuid.uuid4().hex[:8])
    before = manage("--database", url, "db", "current")
    assert before.returncode == 1 and "revision none (needs upgrade to" in before.stdout

    # The daemon will not start on it, and says what to do.
    refused = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "imaged", "--listen", "tcp:0:interface=127.0.0.1",
         "--database", url, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode != 0
    assert "imaged-manage --database <url> db upgrade" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr

    upgraded = manage("--database", url, "db", "upgrade")
    assert upgraded.returncode == 0 and "upgraded from an empty database to" in upgraded.stdout
    again = manage("--database", url, "db", "upgrade")
    assert again.returncode == 0 and "already at revision" in again.stdout
    assert manage("--database", url, "db", "current").returncode == 0

    daemon = TwistdDaemon(str(tmp_path), args=["--database", url, "--data-dir",
                                               str(tmp_path)]).start()
    try:
        assert "postgresql+psycopg://postgres@127.0.0.1" in daemon.log()
    finally:
        daemon.stop()


def test_db_commands_on_an_embedded_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert manage("--data-dir", str(data), "db", "current").returncode == 1
    assert manage("--data-dir", str(data), "db", "upgrade").returncode == 0
    assert (data / "imaged.sqlite").exists()
    assert manage("--data-dir", str(data), "db", "current").returncode == 0


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    result = manage("--database", url, "db", "upgrade")
    assert result.returncode == 2
    assert result.stderr.startswith("imaged-manage: postgresql+psycopg://nobody:***@")
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    refused = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "imaged", "--database", url, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert "imaged: cannot use the database" in out and "secret" not in out


def _image_with_data(url: str, data: bytes) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/v2/images", method="POST", data=b'{"disk_format": "raw", '
        b'"container_format": "bare"}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as reply:
        image_id = str(json.loads(reply.read())["id"])
    if data:
        upload = urllib.request.Request(
            f"{url}/v2/images/{image_id}/file", method="PUT", data=data,
            headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(upload).close()
    return image_id


def test_verify_finds_corrupt_and_missing_data(tmp_path: Path) -> None:
    daemon = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path)]).start()
    try:
        good, corrupt, missing = (_image_with_data(daemon.url, os.urandom(70_000))
                                  for _ in range(3))
    finally:
        daemon.stop()
    assert manage("--data-dir", str(tmp_path), "verify").returncode == 0
    blob = tmp_path / "images" / corrupt
    data = bytearray(blob.read_bytes())
    data[1234] ^= 0xFF
    blob.write_bytes(bytes(data))
    (tmp_path / "images" / missing).unlink()
    result = manage("--data-dir", str(tmp_path), "verify")
    assert result.returncode == 1
    assert f"ok {good}" in result.stdout
    assert f"MISMATCH {corrupt}: checksum" in result.stdout and "os_hash_value" in result.stdout
    assert f"MISMATCH {missing}: its data is missing" in result.stdout
    assert "verify: 3 image(s) read, 2 problem(s)" in result.stdout
    only = manage("--data-dir", str(tmp_path), "verify", good)
    assert only.returncode == 0 and "1 image(s) read, 0 problem(s)" in only.stdout


def test_scrub_resets_stuck_uploads_and_deletes_orphans(tmp_path: Path) -> None:
    import sqlite3

    daemon = TwistdDaemon(str(tmp_path), args=["--data-dir", str(tmp_path)]).start()
    try:
        stuck, recent, kept = (_image_with_data(daemon.url, b"") for _ in range(3))
        active = _image_with_data(daemon.url, b"data")
    finally:
        daemon.stop()
    database = sqlite3.connect(tmp_path / "imaged.sqlite")
    database.execute("UPDATE images SET status = 'saving', updated_at = '2020-01-01 00:00:00' "
                     "WHERE id = ?", (stuck,))
    database.execute("UPDATE images SET status = 'saving' WHERE id = ?", (recent,))
    database.commit()
    database.close()
    old_orphan, new_orphan = tmp_path / "images" / "old-orphan", tmp_path / "images" / "new"
    old_orphan.write_bytes(b"left by a crash")
    os.utime(old_orphan, (time.time() - 7200, time.time() - 7200))
    new_orphan.write_bytes(b"maybe an upload finishing now")

    result = manage("--data-dir", str(tmp_path), "scrub")
    assert result.returncode == 0, result.stderr
    assert f"reset to queued: {stuck}" in result.stdout
    assert recent not in result.stdout and kept not in result.stdout
    assert "old-orphan" in result.stdout and not old_orphan.exists()
    assert new_orphan.exists()
    assert (tmp_path / "images" / active).exists()
    assert "scrub: 1 image(s) reset, 1 blob(s) deleted" in result.stdout
    statuses = dict(sqlite3.connect(tmp_path / "imaged.sqlite").execute(
        "SELECT id, status FROM images").fetchall())
    assert (statuses[stuck], statuses[recent], statuses[active]) == ("queued", "saving",
                                                                     "active")


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)]
)
def test_migrations_keep_every_record(database: str, tmp_path: Path, request: Any) -> None:
    """An image with data, a tag, a property and a member, made at revision 0004 (one
    location), comes through 0005 (several copies) and back whole: nothing cascades away."""
    from alembic import command
    from sqlalchemy import text

    from imaged.store import database as db

    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").database("migrate_" + uuid.uuid4().hex[:8])
    engine = db.make_engine(url)
    image_id = str(uuid.uuid4())
    with engine.begin() as connection:
        command.upgrade(db._alembic_config(connection), "0004")
        connection.execute(text(
            "INSERT INTO images (id, status, visibility, protected, os_hidden, min_disk, "
            "min_ram, location, created_at, updated_at, deleted) VALUES (:id, 'active', "
            "'shared', false, false, 0, 0, 'file:///data/x', :now, :now, false)"),
            {"id": image_id, "now": datetime(2026, 1, 1)})
        connection.execute(text("INSERT INTO image_tags (image_id, value) VALUES (:id, 't')"),
                           {"id": image_id})
        connection.execute(text(
            "INSERT INTO image_properties (image_id, name, value) VALUES (:id, 'k', 'v')"),
            {"id": image_id})
        connection.execute(text(
            "INSERT INTO image_members (image_id, member, status, created_at, updated_at) "
            "VALUES (:id, 'project-b', 'pending', :now, :now)"),
            {"id": image_id, "now": datetime(2026, 1, 1)})

    def counts() -> tuple[int, int, int]:
        with engine.connect() as connection:
            return tuple(  # type: ignore[return-value]
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("image_tags", "image_properties", "image_members")
            )

    db.upgrade_schema(engine)
    assert counts() == (1, 1, 1)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT locations FROM images")).scalar()
    assert json.loads(stored) == [{"url": "file:///data/x", "store": ""}]
    with engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), "0002")
    assert counts() == (1, 1, 1)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT location FROM images")).scalar() == \
            "file:///data/x"
    engine.dispose()


def test_metadefs_load_unload_export(tmp_path: Path) -> None:
    """Glance's shipped definitions into an embedded database (made and migrated on the way),
    loaded once however often the command runs, exported and loaded back, unloaded."""
    data = str(tmp_path / "data")
    loaded = manage("--data-dir", data, "metadefs", "load")
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded: OS::Compute::Libvirt" in loaded.stdout
    assert loaded.stdout.strip().endswith("33 loaded, 0 merged, 0 skipped")
    again = manage("--data-dir", data, "metadefs", "load")
    assert again.stdout.strip().endswith("0 loaded, 0 merged, 33 skipped")

    exported = manage("--data-dir", data, "metadefs", "export", str(tmp_path / "out"))
    assert exported.returncode == 0 and "33 namespace(s)" in exported.stdout
    watchdog = json.loads((tmp_path / "out" / "WatchdogBehavior.json").read_text())
    assert watchdog["namespace"] == "OS::Compute::Watchdog"
    assert list(watchdog["properties"]) == ["watchdog_action"]
    assert {"name": "OS::Glance::Image", "prefix": "hw_"} in watchdog[
        "resource_type_associations"]

    # An operator's edit, merged in and then preferred.
    watchdog["description"] = "Edited by the operator."
    watchdog["properties"]["watchdog_timeout"] = {"title": "Timeout", "type": "integer"}
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(watchdog))
    merged = manage("--data-dir", data, "metadefs", "load", "--merge", str(edited))
    assert "merged: OS::Compute::Watchdog" in merged.stdout
    manage("--data-dir", data, "metadefs", "load", "--prefer-new", str(edited))
    manage("--data-dir", data, "metadefs", "export", str(tmp_path / "out2"))
    after = json.loads((tmp_path / "out2" / "WatchdogBehavior.json").read_text())
    assert after["description"] == "Edited by the operator."
    assert sorted(after["properties"]) == ["watchdog_action", "watchdog_timeout"]

    one = manage("--data-dir", data, "metadefs", "unload", "--namespace",
                 "OS::Compute::Watchdog")
    assert "1 namespace(s) removed" in one.stdout
    rest = manage("--data-dir", data, "metadefs", "unload")
    assert "32 namespace(s) removed" in rest.stdout
    reload = manage("--data-dir", data, "metadefs", "load", str(tmp_path / "out"))
    assert reload.stdout.strip().endswith("33 loaded, 0 merged, 0 skipped")


def test_metadefs_load_refuses_a_bad_file_and_loads_nothing(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    files = tmp_path / "defs"
    files.mkdir()
    (files / "a.json").write_text(json.dumps({"namespace": "Good::One"}))
    (files / "b.json").write_text(json.dumps({"namespace": "Bad", "visibility": "shared"}))
    refused = manage("--data-dir", data, "metadefs", "load", str(files))
    assert refused.returncode == 2
    assert "b.json: Provided object does not match schema 'namespace'" in refused.stderr
    assert "Traceback" not in refused.stderr
    (files / "b.json").write_text("{not json")
    assert "b.json: not JSON" in manage("--data-dir", data, "metadefs", "load",
                                        str(files)).stderr
    (files / "b.json").write_text(json.dumps({"namespace": "Good::One"}))
    assert "also in" in manage("--data-dir", data, "metadefs", "load", str(files)).stderr
    (files / "b.json").unlink()
    exported = manage("--data-dir", data, "metadefs", "export", str(tmp_path / "out"))
    assert "0 namespace(s)" in exported.stdout  # nothing was loaded by the refused runs
    missing = manage("--data-dir", data, "metadefs", "load", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "No such file or directory" in missing.stderr
