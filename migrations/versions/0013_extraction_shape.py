"""Profile setting `shape`: what the model writes, graph (concepts, then relationships) or
triples (subject, relation, object or value, quote).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
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
        batch.add_column(sa.Column("shape", sa.String(8), nullable=False,
                                   server_default="graph"))
        batch.create_check_constraint("ck_profile_shape", "shape IN ('graph', 'triples')")
    _one_active(create=True)
    # The embedded model's default (kg.providers.llamacpp): it finds more facts as triples.
    op.execute("UPDATE extraction_profiles SET shape = 'triples' WHERE provider = 'llamacpp'")


def downgrade() -> None:
    _one_active(create=False)
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.drop_constraint("ck_profile_shape", type_="check")
        batch.drop_column("shape")
    _one_active(create=True)
