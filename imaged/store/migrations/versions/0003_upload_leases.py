"""Upload leases: which node's upload holds an image ``saving``, and each node's heartbeat.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("upload_node", sa.String(64), nullable=True))
    op.create_table(
        "imaged_nodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("imaged_nodes")
    # A plain ALTER TABLE, not batch mode: on SQLite that copies and drops ``images``, and
    # with foreign keys on the drop cascades into tags, properties and members.
    op.execute("ALTER TABLE images DROP COLUMN upload_node")
