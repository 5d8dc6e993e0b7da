"""Stored evaluations against gold annotations, so that two can be compared.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("gold_dir", sa.String(1024), nullable=False),
        sa.Column("profile", sa.JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("overall", sa.JSON, nullable=False),
        sa.Column("by_category", sa.JSON, nullable=False),
    )
    op.create_table(
        "evaluation_documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "evaluation_id",
            sa.Integer,
            sa.ForeignKey("evaluations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("document", sa.String(1024), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
        sa.Column("predicted", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluation_documents")
    op.drop_table("evaluations")
