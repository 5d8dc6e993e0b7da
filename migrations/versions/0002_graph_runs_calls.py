"""Documents, chunks, the concept graph with provenance, runs and LLM calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.String(1024), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("path", "sha256", name="uq_document_path_sha"),
        sa.CheckConstraint(
            "status IN ('pending', 'ingested', 'partial', 'failed')", name="ck_document_status"
        ),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "document_id",
            sa.Integer,
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.Column("token_estimate", sa.Integer, nullable=False),
        sa.UniqueConstraint("document_id", "ordinal", name="uq_chunk_ordinal"),
    )
    op.create_table(
        "concepts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("norm_label", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("search_terms", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "concept_aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "concept_id",
            sa.Integer,
            sa.ForeignKey("concepts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("norm_alias", sa.String(200), nullable=False, index=True),
        sa.UniqueConstraint("concept_id", "alias", name="uq_concept_alias"),
    )
    op.create_table(
        "relationships",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "source_id",
            sa.Integer,
            sa.ForeignKey("concepts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "type_id", sa.Integer, sa.ForeignKey("relationship_types.id"), nullable=False
        ),
        sa.Column(
            "target_id",
            sa.Integer,
            sa.ForeignKey("concepts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.UniqueConstraint("source_id", "type_id", "target_id", name="uq_relationship_edge"),
        sa.CheckConstraint(
            "confidence >= 0 AND confidence <= 1", name="ck_relationship_confidence"
        ),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("heartbeat_at", TZ, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("profile_name", sa.String(64), nullable=False),
        sa.Column("profiles_used", sa.JSON, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("chunks_total", sa.Integer, nullable=False),
        sa.Column("chunks_ok", sa.Integer, nullable=False),
        sa.Column("chunks_failed", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'partial', 'failed', 'interrupted')",
            name="ck_run_status",
        ),
    )
    op.create_table(
        "run_documents",
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "document_id",
            sa.Integer,
            sa.ForeignKey("documents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "run_id",
            sa.Integer,
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "chunk_id",
            sa.Integer,
            sa.ForeignKey("chunks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "concept_id",
            sa.Integer,
            sa.ForeignKey("concepts.id", ondelete="CASCADE"),
            index=True,
        ),
        sa.Column(
            "relationship_id",
            sa.Integer,
            sa.ForeignKey("relationships.id", ondelete="CASCADE"),
            index=True,
        ),
        sa.Column("quote", sa.Text, nullable=False),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.CheckConstraint(
            "(concept_id IS NULL) <> (relationship_id IS NULL)", name="ck_evidence_one_subject"
        ),
    )
    op.create_table(
        "chunk_extractions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "run_id",
            sa.Integer,
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "chunk_id",
            sa.Integer,
            sa.ForeignKey("chunks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("profile_revision", sa.Integer, nullable=False),
        sa.Column("concepts", sa.Integer, nullable=False),
        sa.Column("relationships", sa.Integer, nullable=False),
        sa.Column("dropped", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("finished_at", TZ, nullable=False),
        sa.UniqueConstraint("run_id", "chunk_id", name="uq_chunk_extraction"),
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_chunk_extraction_status"),
    )
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True
        ),
        sa.Column("chunk_id", sa.Integer, sa.ForeignKey("chunks.id", ondelete="SET NULL")),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("profile_name", sa.String(64), nullable=False),
        sa.Column("profile_revision", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_kind", sa.String(32)),
        sa.Column("finish_reason", sa.String(16)),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("thinking_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("load_ms", sa.Float),
        sa.Column("prompt_eval_ms", sa.Float),
        sa.Column("eval_ms", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("response", sa.Text),
        sa.Column("started_at", TZ, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in (
        "calls",
        "chunk_extractions",
        "evidence",
        "run_documents",
        "runs",
        "relationships",
        "concept_aliases",
        "concepts",
        "chunks",
        "documents",
    ):
        op.drop_table(table)
