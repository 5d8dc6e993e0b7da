"""Document versions: content versions per document, valid_from/valid_to on graph rows (#22).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03

A document row is one version of a path (`version` counts them); a row is live while its
`valid_to` is NULL, and a row of a version not yet cut over has `valid_from` NULL. Concepts,
relationships and evidence get the same interval. Existing rows become live since they were
made (concepts: created_at; evidence: its run's start; relationships: their first evidence).
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TABLES = ("documents", "concepts", "relationships", "evidence")


def upgrade() -> None:
    for table in TABLES:
        # SQLite adds no column with a non-constant default in place: batch rebuilds it.
        with op.batch_alter_table(table, recreate="always"
                                  if op.get_bind().dialect.name == "sqlite" else "auto") as batch:
            if table == "documents":
                batch.add_column(sa.Column("version", sa.Integer(), nullable=False,
                                           server_default=sa.text("1")))
            # Live unless said otherwise: rows written outside kg's inserts (COPY) included.
            batch.add_column(sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True,
                                       server_default=sa.text("CURRENT_TIMESTAMP")))
            batch.add_column(sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE documents SET valid_from = created_at, version = (SELECT count(*) FROM "
               "documents d WHERE d.collection_id = documents.collection_id AND "
               "d.path = documents.path AND d.id <= documents.id)")
    op.execute("UPDATE concepts SET valid_from = created_at")
    op.execute("UPDATE evidence SET valid_from = (SELECT started_at FROM runs "
               "WHERE runs.id = evidence.run_id)")
    op.execute("UPDATE relationships SET valid_from = COALESCE((SELECT min(e.valid_from) FROM "
               "evidence e WHERE e.relationship_id = relationships.id), CURRENT_TIMESTAMP)")
    op.create_index("ix_documents_valid_to", "documents", ["valid_to"])


def downgrade() -> None:
    op.drop_index("ix_documents_valid_to", "documents")
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("valid_to")
            batch.drop_column("valid_from")
            if table == "documents":
                batch.drop_column("version")
