"""Literal values as attributes of concepts (issue #20).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03

`concept_attributes`: a concept's literal values (a year, a number, a date, a string) under the
name of the ontology relation that gave them, verbatim and normalised; `attribute_evidence`:
where each was read (chunk, quote, offsets, run). Both are collection rows with validity
intervals like evidence (#22), and on PostgreSQL get the collection policy of 0015.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

ROLE = "kg_scoped"
SEEN = ("collection_id = ANY (string_to_array(NULLIF(current_setting('kg.collections', true), "
        "''), ',')::int[])")
TABLES = ("concept_attributes", "attribute_evidence")


def _scoped() -> list[sa.Column]:
    """collection_id and the validity interval, as the graph tables have them."""
    return [
        sa.Column("collection_id", sa.Integer(), sa.ForeignKey("collections.id",
                  ondelete="CASCADE"), nullable=False, server_default=sa.text("1")),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True,
                  server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "concept_attributes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("concept_id", sa.Integer(),
                  sa.ForeignKey("concepts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("datatype", sa.String(8), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("normalised", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *_scoped(),
        sa.UniqueConstraint("concept_id", "name", "normalised", name="uq_concept_attribute"),
        sa.CheckConstraint("datatype IN ('string', 'number', 'date', 'year')",
                           name="ck_attribute_datatype"),
    )
    op.create_table(
        "attribute_evidence",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("attribute_id", sa.Integer(),
                  sa.ForeignKey("concept_attributes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("chunk_id", sa.Integer(), sa.ForeignKey("chunks.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("quote", sa.Text(), nullable=False),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.Column("value_start", sa.Integer(), nullable=False),
        sa.Column("value_end", sa.Integer(), nullable=False),
        *_scoped(),
    )
    for column in ("attribute_id", "run_id", "chunk_id"):
        op.create_index(f"ix_attribute_evidence_{column}", "attribute_evidence", [column])
    if op.get_bind().dialect.name == "postgresql":
        _row_level_security()


def _row_level_security() -> None:
    """The policy of migration 0015 on the new tables (where 0015 could make its role)."""
    if not op.get_bind().execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                 {"r": ROLE}).scalar():
        return
    for table in TABLES:
        # The default privileges of 0015 cover tables its user makes; another user may run
        # this one, so the grants are given here too.
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {ROLE}")
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {table}_id_seq TO {ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY kg_collection ON {table} TO {ROLE} "
                   f"USING ({SEEN}) WITH CHECK ({SEEN})")


def downgrade() -> None:
    # The policies and grants go with the tables.
    op.drop_table("attribute_evidence")
    op.drop_table("concept_attributes")
