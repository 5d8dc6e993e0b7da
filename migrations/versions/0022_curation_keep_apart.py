"""Keep-apart decisions: a pair a person rejected is never merged (issue #24).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03

Only the CHECK on `curation_decisions.action` widens; a downgrade first deletes the
keep-apart rows, which the narrower CHECK would refuse.
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

BEFORE = ("merge", "rename", "delete_concept", "delete_relationship")
AFTER = (*BEFORE, "keep_apart")


def _check(actions: tuple[str, ...]) -> str:
    return "action IN (" + ", ".join(f"'{a}'" for a in actions) + ")"


def upgrade() -> None:
    with op.batch_alter_table("curation_decisions") as batch:
        batch.drop_constraint("ck_curation_action", type_="check")
        batch.create_check_constraint("ck_curation_action", _check(AFTER))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM curation_decisions WHERE action = 'keep_apart'"))
    with op.batch_alter_table("curation_decisions") as batch:
        batch.drop_constraint("ck_curation_action", type_="check")
        batch.create_check_constraint("ck_curation_action", _check(BEFORE))
