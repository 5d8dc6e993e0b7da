"""documents.source_map: pages and word boxes of an OCR transcription (images, scanned PDFs).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

NULL for documents read as text; see kg/sourcemap.py for the JSON's format.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: a plain ALTER TABLE ADD COLUMN on both databases, no table rebuild.
    op.add_column("documents", sa.Column("source_map", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("source_map")
