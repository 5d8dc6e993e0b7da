"""Curation decisions: merges, renames and deletions that later runs apply, with undo data.

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "curation_decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("concept_id", sa.Integer, nullable=True),
        sa.Column("norms", sa.JSON, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False, index=True),
        sa.Column("undone_at", TZ, nullable=True),
        sa.Column("undone_by", sa.String(128), nullable=True),
        sa.CheckConstraint(
            "action IN ('merge', 'rename', 'delete_concept', 'delete_relationship')",
            name="ck_curation_action",
        ),
    )


def downgrade() -> None:
    op.drop_table("curation_decisions")
