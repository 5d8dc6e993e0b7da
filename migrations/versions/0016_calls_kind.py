"""calls.kind: what a call was for (extract, describe, ocr, ask, resolve).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03

Every call so far extracted a chunk: the server default makes them `extract`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

KINDS = ("extract", "describe", "ocr", "ask", "resolve")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="extract"))
        batch.create_check_constraint(
            "ck_call_kind", "kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")")


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_constraint("ck_call_kind", type_="check")
        batch.drop_column("kind")
