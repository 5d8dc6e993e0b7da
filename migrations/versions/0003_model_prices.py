"""Prices per million tokens, for cost and savings in analytics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_prices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(512), nullable=False, unique=True),
        sa.Column("prompt_per_million", sa.Numeric(14, 6), nullable=False),
        sa.Column("completion_per_million", sa.Numeric(14, 6), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("note", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "prompt_per_million >= 0 AND completion_per_million >= 0", name="ck_price_positive"
        ),
    )


def downgrade() -> None:
    op.drop_table("model_prices")
