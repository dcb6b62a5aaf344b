"""
The metadata schema, as SQLAlchemy Core tables: one definition for SQLite and PostgreSQL.

Alembic migrations in ``imaged/store/migrations`` create exactly this; a test compares them.
Deleted images keep their rows (``deleted``) so that an id is never reused, as in Glance.
The indexes lead with ``deleted`` and end with the ``created_at, id`` tie-breakers so that a list
page in the usual sort orders is an index range scan of ``limit`` rows, whatever the table size.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("status", String(30), nullable=False),
    Column("visibility", String(20), nullable=False),
    Column("protected", Boolean, nullable=False, default=False),
    Column("os_hidden", Boolean, nullable=False, default=False),
    Column("owner", String(255), nullable=True),
    Column("disk_format", String(20), nullable=True),
    Column("container_format", String(20), nullable=True),
    Column("min_disk", Integer, nullable=False, default=0),
    Column("min_ram", Integer, nullable=False, default=0),
    Column("size", BigInteger, nullable=True),
    Column("virtual_size", BigInteger, nullable=True),
    Column("checksum", String(32), nullable=True),
    Column("os_hash_algo", String(64), nullable=True),
    Column("os_hash_value", String(128), nullable=True),
    #: The copies of the image's data, JSON: ``[{"url": ..., "store": ...}]`` (``rows``).
    Column("locations", Text, nullable=True),
    Column("upload_node", String(64), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("deleted_at", DateTime, nullable=True),
    Index("ix_images_deleted_created_at", "deleted", "created_at", "id"),
    Index("ix_images_deleted_updated_at", "deleted", "updated_at", "id"),
    Index("ix_images_deleted_name", "deleted", "name", "created_at", "id"),
    Index("ix_images_owner", "owner"),
    Index("ix_images_checksum", "checksum"),
    Index("ix_images_os_hash_value", "os_hash_value"),
    Index("ix_images_status", "status"),
)

image_tags = Table(
    "image_tags",
    metadata,
    Column(
        "image_id",
        String(36),
        ForeignKey("images.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("value", String(255), primary_key=True),
    Index("ix_image_tags_value", "value"),
)

image_properties = Table(
    "image_properties",
    metadata,
    Column(
        "image_id",
        String(36),
        ForeignKey("images.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_image_properties_name", "name"),
)

image_members = Table(
    "image_members",
    metadata,
    Column(
        "image_id",
        String(36),
        ForeignKey("images.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("member", String(255), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_image_members_member_status", "member", "status"),
)

#: Every imaged process that shares the database, with its last heartbeat: an upload whose
#: node has not been heard from for a while is dead, and recovery queues its image again.
nodes = Table(
    "imaged_nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("heartbeat_at", DateTime, nullable=False),
)

#: Asynchronous work on images (imports), as Glance's ``tasks`` table, plus the claim of the
#: node running each and its progress.  ``input`` and ``result`` are JSON text.
tasks = Table(
    "tasks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("type", String(30), nullable=False),
    Column("status", String(30), nullable=False),
    Column("owner", String(255), nullable=True),
    Column("image_id", String(36), nullable=True),
    Column("input", Text, nullable=False),
    Column("result", Text, nullable=True),
    Column("message", Text, nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("user_id", String(255), nullable=True),
    Column("node", String(64), nullable=True),
    Column("done", BigInteger, nullable=False, default=0),
    Column("total", BigInteger, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=True),
    Column("deleted", Boolean, nullable=False, default=False),
    Index("ix_tasks_image_id", "image_id"),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_owner_created_at", "owner", "created_at", "id"),
)

# -- the metadata definitions catalog (imaged.metadefs) ------------------------------------

#: Glance's ``metadef_namespaces``.  ``id`` is internal: the API names namespaces.
metadef_namespaces = Table(
    "metadef_namespaces",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(80), nullable=False, unique=True),
    Column("display_name", String(80), nullable=True),
    Column("description", Text, nullable=True),
    Column("visibility", String(32), nullable=False),
    Column("protected", Boolean, nullable=False, default=False),
    Column("owner", String(255), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_metadef_namespaces_owner", "owner"),
    Index("ix_metadef_namespaces_created_at", "created_at", "id"),
)

#: A namespace's objects, properties and tags, one row each (Glance keeps three tables of
#: the same shape): ``kind`` says which, ``body`` is the kind's JSON (``imaged.metadefs.model``).
metadef_definitions = Table(
    "metadef_definitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "namespace_id",
        Integer,
        ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(16), nullable=False),
    Column("name", String(80), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ux_metadef_definitions_name", "namespace_id", "kind", "name", unique=True),
    Index("ix_metadef_definitions_created_at", "namespace_id", "kind", "created_at", "id"),
)

#: Glance's ``metadef_resource_types``: ``protected`` ones came from definition files.
metadef_resource_types = Table(
    "metadef_resource_types",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(80), nullable=False, unique=True),
    Column("protected", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

#: Glance's ``metadef_namespace_resource_types``: which namespace applies to which resource
#: type, with the prefix its properties take there.
metadef_associations = Table(
    "metadef_associations",
    metadata,
    Column(
        "namespace_id",
        Integer,
        ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "resource_type_id",
        Integer,
        ForeignKey("metadef_resource_types.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("prefix", String(80), nullable=True),
    Column("properties_target", String(80), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_metadef_associations_resource_type_id", "resource_type_id"),
)
