"""The graph epoch: one counter that tells graph writers their caches are out of date.

Ingestion writers keep an in-memory index of concepts, aliases and relationships and bring it up
to date from new rows at each commit. A change that rewrites or removes existing rows (curation:
merge, rename, delete, undo) bumps this counter under the graph lock, and every writer then
reloads its index before it resolves anything else.

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "graph_epoch",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_graph_epoch_one_row"),
    )
    op.bulk_insert(table, [{"id": 1, "epoch": 0}])


def downgrade() -> None:
    op.drop_table("graph_epoch")
