"""The metadata definitions catalog: namespaces, their definitions, resource types.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metadef_namespaces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(80), nullable=False, unique=True),
        sa.Column("display_name", sa.String(80), nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("visibility", sa.String(32), nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_metadef_namespaces_owner", "metadef_namespaces", ["owner"])
    op.create_index(
        "ix_metadef_namespaces_created_at", "metadef_namespaces", ["created_at", "id"]
    )
    op.create_table(
        "metadef_definitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "namespace_id",
            sa.Integer,
            sa.ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "ux_metadef_definitions_name",
        "metadef_definitions",
        ["namespace_id", "kind", "name"],
        unique=True,
    )
    op.create_index(
        "ix_metadef_definitions_created_at",
        "metadef_definitions",
        ["namespace_id", "kind", "created_at", "id"],
    )
    op.create_table(
        "metadef_resource_types",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "metadef_associations",
        sa.Column(
            "namespace_id",
            sa.Integer,
            sa.ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "resource_type_id",
            sa.Integer,
            sa.ForeignKey("metadef_resource_types.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("prefix", sa.String(80), nullable=True),
        sa.Column("properties_target", sa.String(80), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index(
        "ix_metadef_associations_resource_type_id",
        "metadef_associations",
        ["resource_type_id"],
    )


def downgrade() -> None:
    op.drop_table("metadef_associations")
    op.drop_table("metadef_resource_types")
    op.drop_table("metadef_definitions")
    op.drop_table("metadef_namespaces")
