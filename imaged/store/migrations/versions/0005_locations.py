"""Several copies of an image's data (multi-store): ``images.location`` becomes ``locations``.

The JSON list ``[{"url": ..., "store": ...}]`` keeps every copy with the name of its store.  A
copy carried over from ``location`` has no store name yet: imaged finds its store by the
address (``IBlobStore.owns``), as Glance does for locations made before ``enabled_backends``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_images = sa.table(
    "images",
    sa.column("id", sa.String),
    sa.column("location", sa.Text),
    sa.column("locations", sa.Text),
)


def _drop_column(column: str) -> None:
    # A plain ALTER TABLE on both databases (SQLite >= 3.35 has DROP COLUMN), never Alembic's
    # batch mode on SQLite: it copies and drops the table, and with foreign keys on, dropping
    # ``images`` cascades into tags, properties and members.
    op.execute(f"ALTER TABLE images DROP COLUMN {column}")


def upgrade() -> None:
    op.add_column("images", sa.Column("locations", sa.Text, nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_images.c.id, _images.c.location).where(_images.c.location.is_not(None))
    ).all()
    for image_id, location in rows:
        bind.execute(
            _images.update()
            .where(_images.c.id == image_id)
            .values(locations=json.dumps([{"url": location, "store": ""}]))
        )
    _drop_column("location")


def downgrade() -> None:
    op.add_column("images", sa.Column("location", sa.Text, nullable=True))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_images.c.id, _images.c.locations).where(_images.c.locations.is_not(None))
    ).all()
    for image_id, text in rows:
        copies = json.loads(text)
        bind.execute(
            _images.update()
            .where(_images.c.id == image_id)
            .values(location=copies[0]["url"] if copies else None)
        )
    _drop_column("locations")
