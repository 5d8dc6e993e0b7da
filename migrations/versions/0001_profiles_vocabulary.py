"""Extraction profiles, their audit trail, and the baseline relationship vocabulary.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# name, category, direction, description: frozen here so that this migration always seeds the
# same rows, whatever later code does with the vocabulary.
BASELINE_VOCABULARY = [
    ("implies", "logical", "directed", "if the source holds, the target holds"),
    ("contradicts", "logical", "symmetric", "the two cannot both hold"),
    ("equivalent_to", "logical", "symmetric", "the same thing under another description"),
    ("instance_of", "logical", "directed", "the source is one case of the target class"),
    ("causes", "causal", "directed", "the source brings about the target"),
    ("enables", "causal", "directed", "the source makes the target possible"),
    ("prevents", "causal", "directed", "the source stops the target from happening"),
    ("influences", "causal", "directed", "the source affects the target"),
    ("part_of", "structural", "directed", "the source is a component of the target"),
    ("has_part", "structural", "directed", "the target is a component of the source"),
    ("is_a", "structural", "directed", "the source is a subtype of the target"),
    ("contains", "structural", "directed", "the source holds the target inside it"),
    ("member_of", "structural", "directed", "the source belongs to the target group"),
    ("supports", "evidential", "directed", "the source is evidence for the target"),
    ("refutes", "evidential", "directed", "the source is evidence against the target"),
    ("cites", "evidential", "directed", "the source refers to the target"),
    ("measured_by", "evidential", "directed", "the target quantifies the source"),
    ("similar_to", "similarity", "symmetric", "the two resemble each other"),
    ("contrasts_with", "similarity", "symmetric", "the two differ in a notable way"),
    ("analogous_to", "similarity", "symmetric", "the two play parallel roles"),
    ("precedes", "temporal", "directed", "the source comes before the target"),
    ("follows", "temporal", "directed", "the source comes after the target"),
    ("during", "temporal", "directed", "the source happens within the target period"),
    ("replaced_by", "temporal", "directed", "the target superseded the source"),
    ("uses", "functional", "directed", "the source employs the target"),
    ("produces", "functional", "directed", "the source creates or outputs the target"),
    ("depends_on", "functional", "directed", "the source needs the target"),
    ("implements", "functional", "directed", "the source realises the target"),
    ("regulates", "functional", "directed", "the source controls the target"),
    ("describes", "meta", "directed", "the source is about the target"),
    ("created_by", "meta", "directed", "the target made the source"),
    ("located_in", "meta", "directed", "the source is situated in the target"),
    ("related_to", "meta", "symmetric", "a link that no other type fits"),
]


def upgrade() -> None:
    profiles = op.create_table(
        "extraction_profiles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("base_url", sa.String(512)),
        sa.Column("api_key_env", sa.String(128)),
        sa.Column("temperature", sa.Float, nullable=False),
        sa.Column("top_p", sa.Float, nullable=False),
        sa.Column("thinking_mode", sa.String(8), nullable=False),
        sa.Column("gpu_layers", sa.Integer, nullable=False),
        sa.Column("num_threads", sa.Integer),
        sa.Column("context_window", sa.Integer, nullable=False),
        sa.Column("max_output_tokens", sa.Integer, nullable=False),
        sa.Column("max_parallel", sa.Integer, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("keep_alive", sa.String(32)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.CheckConstraint(
            "provider IN ('ollama', 'vllm', 'openai', 'llamacpp')", name="ck_profile_provider"
        ),
        sa.CheckConstraint(
            "thinking_mode IN ('off', 'low', 'medium', 'high')", name="ck_profile_thinking_mode"
        ),
        sa.CheckConstraint("temperature >= 0 AND temperature <= 2", name="ck_profile_temperature"),
        sa.CheckConstraint("top_p > 0 AND top_p <= 1", name="ck_profile_top_p"),
        sa.CheckConstraint("gpu_layers >= -1", name="ck_profile_gpu_layers"),
        sa.CheckConstraint(
            "num_threads IS NULL OR (num_threads >= 1 AND num_threads <= 1024)",
            name="ck_profile_num_threads",
        ),
        sa.CheckConstraint(
            "context_window >= 512 AND context_window <= 2097152", name="ck_profile_context_window"
        ),
        sa.CheckConstraint(
            "max_output_tokens >= 64 AND max_output_tokens < context_window",
            name="ck_profile_max_output_tokens",
        ),
        sa.CheckConstraint(
            "max_parallel >= 1 AND max_parallel <= 64", name="ck_profile_max_parallel"
        ),
        sa.CheckConstraint("max_retries >= 0 AND max_retries <= 10", name="ck_profile_max_retries"),
        sa.CheckConstraint("timeout_s > 0 AND timeout_s <= 86400", name="ck_profile_timeout"),
        sa.CheckConstraint("length(name) >= 1 AND length(name) <= 64", name="ck_profile_name"),
        sa.CheckConstraint("length(model) >= 1", name="ck_profile_model"),
        sa.CheckConstraint("revision >= 1", name="ck_profile_revision"),
    )
    # At most one active profile, enforced by the database itself; code keeps it at least one.
    op.create_index(
        "uq_extraction_profiles_one_active",
        "extraction_profiles",
        ["active"],
        unique=True,
        sqlite_where=sa.text("active = 1"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "profile_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("profile_name", sa.String(64), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("old_value", sa.Text),
        sa.Column("new_value", sa.Text),
        sa.Column("changed_by", sa.String(128), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    types = op.create_table(
        "relationship_types",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("curated", sa.Boolean, nullable=False),
        sa.CheckConstraint("direction IN ('directed', 'symmetric')", name="ck_reltype_direction"),
    )
    op.create_table(
        "relationship_type_proposals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("example", sa.String(300), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(
        types,
        [
            {"name": n, "category": c, "direction": d, "description": desc, "curated": True}
            for n, c, d, desc in BASELINE_VOCABULARY
        ],
    )
    op.bulk_insert(
        profiles,
        [
            {
                "name": "default",
                "provider": "llamacpp",
                "model": "smollm2",
                "base_url": None,
                "api_key_env": None,
                "temperature": 0.1,
                "top_p": 0.9,
                "thinking_mode": "off",
                "gpu_layers": -1,
                "num_threads": None,
                "context_window": 4096,
                "max_output_tokens": 1024,
                "max_parallel": 1,
                "max_retries": 2,
                "timeout_s": 600.0,
                "keep_alive": None,
                "active": True,
                "revision": 1,
                "updated_at": datetime.now(UTC),
                "updated_by": "kg db upgrade",
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("relationship_type_proposals")
    op.drop_table("relationship_types")
    op.drop_table("profile_changes")
    op.drop_index("uq_extraction_profiles_one_active", table_name="extraction_profiles")
    op.drop_table("extraction_profiles")
