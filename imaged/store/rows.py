"""
Image and member records as database rows and back, and the raw-cursor path for hot reads.

Showing an image and filling in a page's tags and properties are most of imaged's queries.
Their statements are written once, in SQLAlchemy Core, but compiled once per dialect and run
straight on the DB-API cursor (``DriverStatements``): SQLAlchemy's per-execution machinery
costs ~100 us a query, several times the query itself, in the database thread where it competes
with the reactor for the GIL.  Rows then come back as the driver returns them, which
``image_from_row`` normalises (SQLite gives timestamps as text and booleans as integers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, false, insert, null, select, union_all
from sqlalchemy.engine import Connection, Dialect, Row
from sqlalchemy.sql.expression import CompoundSelect

from ..model import (
    ContainerFormat,
    DiskFormat,
    Image,
    Location,
    Member,
    MemberStatus,
    Status,
    Visibility,
)
from .tables import image_members, image_properties, image_tags, images

#: Image columns, in the order every image row is selected (``image_from_row`` relies on it).
IMAGE_COLUMNS = (
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
    "locations",
    "upload_node",
    "created_at",
    "updated_at",
)

ENUM_COLUMNS: Mapping[str, Any] = {
    "status": Status,
    "visibility": Visibility,
    "disk_format": DiskFormat,
    "container_format": ContainerFormat,
}

#: Enum members by stored value (a dict lookup; calling the Enum is far slower per row).
_ENUM_MEMBERS: Mapping[str, Mapping[str, Any]] = {
    name: {member.value: member for member in kind} for name, kind in ENUM_COLUMNS.items()
}

IMAGE_SELECT: Select[Any] = select(*(images.c[name] for name in IMAGE_COLUMNS))


def locations_text(locations: Sequence[Location]) -> str | None:
    """The ``locations`` column's JSON for an image's copies (``None`` for none)."""
    if not locations:
        return None
    return json.dumps([{"url": loc.url, "store": loc.store} for loc in locations])


def locations_from_text(text: str | None) -> tuple[Location, ...]:
    if not text:
        return ()
    return tuple(Location(url=item["url"], store=item.get("store") or "")
                 for item in json.loads(text))


def image_row(image: Image) -> dict[str, Any]:
    """The ``images`` row of ``image`` (tags and properties live in their own tables)."""
    values: dict[str, Any] = {}
    for name in IMAGE_COLUMNS:
        value = getattr(image, name)
        if name in ENUM_COLUMNS and value is not None:
            value = value.value
        values[name] = value
    values["locations"] = locations_text(image.locations)
    values["deleted"] = image.status is Status.DELETED
    return values


def image_from_row(
    row: Sequence[Any], tags: Iterable[str], properties: Mapping[str, str]
) -> Image:
    fields: dict[str, Any] = dict(zip(IMAGE_COLUMNS, row, strict=True))
    for name in ("created_at", "updated_at"):
        value = fields[name]
        if isinstance(value, str):  # SQLite's driver returns the stored text
            fields[name] = datetime.fromisoformat(value)
    fields["locations"] = locations_from_text(fields["locations"])
    fields["protected"] = bool(fields["protected"])
    fields["os_hidden"] = bool(fields["os_hidden"])
    for name, members in _ENUM_MEMBERS.items():
        value = fields[name]
        if value is not None:
            fields[name] = members[value]
    return Image(tags=frozenset(tags), properties=dict(properties), **fields)


def member_from_row(row: Row[Any]) -> Member:
    mapping = row._mapping
    return Member(
        image_id=mapping["image_id"],
        member_id=mapping["member"],
        status=MemberStatus(mapping["status"]),
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
    )


def member_values(member: Member) -> dict[str, Any]:
    return {
        "image_id": member.image_id,
        "member": member.member_id,
        "status": member.status.value,
        "created_at": member.created_at,
        "updated_at": member.updated_at,
    }


def by_id_statement() -> Select[Any]:
    return IMAGE_SELECT.where(images.c.id == bindparam("id0"), images.c.deleted == false())


def by_id_for_update_statement() -> Select[Any]:
    return by_id_statement().with_for_update()


def tags_and_properties_statement(count: int) -> CompoundSelect[Any]:
    """Tags (value ``NULL``) and properties of ``count`` images, in one query."""
    placeholders: list[Any] = [bindparam(f"id{n}") for n in range(count)]
    return union_all(
        select(image_tags.c.image_id, image_tags.c.value, null()).where(
            image_tags.c.image_id.in_(placeholders)
        ),
        select(
            image_properties.c.image_id, image_properties.c.name, image_properties.c.value
        ).where(image_properties.c.image_id.in_(placeholders)),
    )


class DriverStatements:
    """Core statements compiled once for one dialect, executed on the DB-API cursor."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[tuple[str, int], tuple[str, tuple[str, ...] | None]] = {}

    def _compile(
        self, key: tuple[str, int], build: Callable[[], Any]
    ) -> tuple[str, tuple[str, ...] | None]:
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
        """Run statement ``key`` (built by ``build`` the first time) over ``ids``."""
        sql, order = self._compile(key, build)
        params: dict[str, str] = {f"id{n}": value for n, value in enumerate(ids)}
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, [params[name] for name in order] if order else params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def hydrate(self, connection: Connection, rows: Sequence[Any]) -> list[Image]:
        """Attach tags and properties to image rows: one query for a whole page."""
        if not rows:
            return []
        ids = [row[0] for row in rows]  # id is the first of IMAGE_COLUMNS
        tags: dict[str, list[str]] = {i: [] for i in ids}
        properties: dict[str, dict[str, str]] = {i: {} for i in ids}
        extras = self.fetch(
            connection,
            ("tags_and_properties", len(ids)),
            lambda: tags_and_properties_statement(len(ids)),
            ids,
        )
        for image_id, name, value in extras:
            if value is None:
                tags[image_id].append(name)
            else:
                properties[image_id][name] = value
        return [image_from_row(row, tags[row[0]], properties[row[0]]) for row in rows]

    def load(self, connection: Connection, image_id: str, for_update: bool = False) -> Image | None:
        """
        The image, or ``None``.  ``for_update`` locks its row until the transaction ends, so
        that read-check-write on one image is atomic across connections and nodes: a second
        writer waits, then reads what the first wrote (``queued -> saving`` can only be won
        once).  SQLite's ``BEGIN IMMEDIATE`` already serialises writers; there the clause
        compiles to nothing.
        """
        if for_update:
            key, build = ("by_id_for_update", 1), by_id_for_update_statement
        else:
            key, build = ("by_id", 1), by_id_statement
        rows = self.fetch(connection, key, build, [image_id])
        return self.hydrate(connection, rows)[0] if rows else None


def write_tags(
    connection: Connection, image_id: str, new: Iterable[str], old: Iterable[str]
) -> None:
    """Make ``image_id``'s tag rows ``new`` where they were ``old``: only the difference."""
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


def write_properties(
    connection: Connection, image_id: str, new: Mapping[str, str], old: Mapping[str, str]
) -> None:
    """Make ``image_id``'s property rows ``new`` where they were ``old``: only the difference."""
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


def member_where(image_id: str, member_id: str) -> tuple[Any, Any]:
    """The ``WHERE`` of one membership."""
    return image_members.c.image_id == image_id, image_members.c.member == member_id


__all__ = [
    "ENUM_COLUMNS",
    "IMAGE_COLUMNS",
    "IMAGE_SELECT",
    "DriverStatements",
    "image_from_row",
    "image_row",
    "member_from_row",
    "member_values",
    "member_where",
    "write_properties",
    "write_tags",
]
