"""Images, their tags and their extra properties.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("visibility", sa.String(20), nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("os_hidden", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("disk_format", sa.String(20), nullable=True),
        sa.Column("container_format", sa.String(20), nullable=True),
        sa.Column("min_disk", sa.Integer, nullable=False),
        sa.Column("min_ram", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("virtual_size", sa.BigInteger, nullable=True),
        sa.Column("checksum", sa.String(32), nullable=True),
        sa.Column("os_hash_algo", sa.String(64), nullable=True),
        sa.Column("os_hash_value", sa.String(128), nullable=True),
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("deleted_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_images_deleted_created_at", "images", ["deleted", "created_at", "id"])
    op.create_index("ix_images_deleted_updated_at", "images", ["deleted", "updated_at", "id"])
    op.create_index("ix_images_deleted_name", "images", ["deleted", "name", "created_at", "id"])
    op.create_index("ix_images_owner", "images", ["owner"])
    op.create_index("ix_images_checksum", "images", ["checksum"])
    op.create_index("ix_images_os_hash_value", "images", ["os_hash_value"])
    op.create_index("ix_images_status", "images", ["status"])

    op.create_table(
        "image_tags",
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("value", sa.String(255), primary_key=True),
    )
    op.create_index("ix_image_tags_value", "image_tags", ["value"])

    op.create_table(
        "image_properties",
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("images.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_image_properties_name", "image_properties", ["name"])


def downgrade() -> None:
    op.drop_table("image_properties")
    op.drop_table("image_tags")
    op.drop_table("images")
