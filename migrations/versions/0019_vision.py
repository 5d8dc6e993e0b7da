"""The vision profile: a profile setting naming the profile that describes images (issue #25).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.add_column(sa.Column("vision_profile", sa.String(64), nullable=True))
        batch.create_check_constraint(
            "ck_profile_vision_profile",
            "vision_profile IS NULL OR (length(vision_profile) >= 1 "
            "AND length(vision_profile) <= 64)")


def downgrade() -> None:
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.drop_constraint("ck_profile_vision_profile", type_="check")
        batch.drop_column("vision_profile")
