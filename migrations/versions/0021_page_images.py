"""Descriptions of the images on pages that also have text (issue #25): the profile setting
`page_images`, off (a text page gives its text only) or read (its pictures too).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_ONE_ACTIVE = "uq_extraction_profiles_one_active"


def _one_active(create: bool) -> None:
    # SQLite's batch "move and copy" would rebuild this partial index without its WHERE clause.
    if create:
        op.create_index(_ONE_ACTIVE, "extraction_profiles", ["active"], unique=True,
                        sqlite_where=sa.text("active = 1"), postgresql_where=sa.text("active"))
    else:
        op.drop_index(_ONE_ACTIVE, table_name="extraction_profiles")


def upgrade() -> None:
    _one_active(create=False)
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.add_column(sa.Column("page_images", sa.String(8), nullable=False,
                                   server_default="off"))
        batch.create_check_constraint("ck_profile_page_images", "page_images IN ('off', 'read')")
    _one_active(create=True)


def downgrade() -> None:
    _one_active(create=False)
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.drop_constraint("ck_profile_page_images", type_="check")
        batch.drop_column("page_images")
    _one_active(create=True)
