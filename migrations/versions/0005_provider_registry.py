"""Provider names are checked by the provider registry, not by a frozen CHECK.

A provider registered at run time (a plug-in module, a test double) must be storable, so the
`ck_profile_provider` CHECK goes; every other CHECK of `extraction_profiles` stays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ONE_ACTIVE = "uq_extraction_profiles_one_active"


def _drop_one_active_index() -> None:
    # SQLite's batch "move and copy" would rebuild this partial index without its WHERE clause.
    op.drop_index(_ONE_ACTIVE, table_name="extraction_profiles")


def _create_one_active_index() -> None:
    op.create_index(
        _ONE_ACTIVE,
        "extraction_profiles",
        ["active"],
        unique=True,
        sqlite_where=sa.text("active = 1"),
        postgresql_where=sa.text("active"),
    )


def upgrade() -> None:
    _drop_one_active_index()
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.drop_constraint("ck_profile_provider", type_="check")
    _create_one_active_index()


def downgrade() -> None:
    _drop_one_active_index()
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.create_check_constraint(
            "ck_profile_provider", "provider IN ('ollama', 'vllm', 'openai', 'llamacpp')"
        )
    _create_one_active_index()
