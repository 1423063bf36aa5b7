"""Work items can run twice near a job's end (backup tasks) and carry a lease rank (the
largest are leased first); finding a job's open items uses an index.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("work_items") as batch:
        batch.add_column(sa.Column("backup_lease_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("backup_node", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("backup_deadline", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("lease_rank", sa.Integer(), nullable=False,
                                   server_default="0"))
    op.create_index("ix_work_items_open", "work_items", ["job_id", "status"])
    op.create_index("ix_work_items_lease", "work_items",
                    ["job_id", "model", "status", "lease_rank", "id"])


def downgrade() -> None:
    op.drop_index("ix_work_items_lease", table_name="work_items")
    op.drop_index("ix_work_items_open", table_name="work_items")
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("lease_rank")
        batch.drop_column("backup_deadline")
        batch.drop_column("backup_node")
        batch.drop_column("backup_lease_id")
