"""Backends at scale: learnt structured-output styles, fallback profiles, routing rules,
the call cache, and which endpoint, fallback, rule or cache served each call.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22
"""

import itertools

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
FALLBACK_KINDS = ("unreachable", "timeout", "invalid", "error")


def fallback_on_values() -> list[str]:
    """Every allowed fallback_on: a comma-separated subset of the kinds in their fixed order."""
    return [",".join(c) for n in range(1, len(FALLBACK_KINDS) + 1)
            for c in itertools.combinations(FALLBACK_KINDS, n)]


def upgrade() -> None:
    op.create_table(
        "endpoint_styles",
        sa.Column("base_url", sa.String(512), primary_key=True),
        sa.Column("model", sa.String(512), primary_key=True),
        sa.Column("style", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("probed_at", TZ, nullable=False),
        sa.CheckConstraint("style IN ('json_schema', 'json_object+schema', 'plain')",
                           name="ck_endpoint_style"),
    )
    allowed = ", ".join(f"'{v}'" for v in fallback_on_values())
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.add_column(sa.Column("fallback_profile", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fallback_on", sa.String(64), nullable=False,
                                   server_default="unreachable,timeout,error"))
        batch.create_check_constraint(
            "ck_profile_fallback_profile",
            "fallback_profile IS NULL OR (length(fallback_profile) >= 1 "
            "AND length(fallback_profile) <= 64)")
        batch.create_check_constraint("ck_profile_fallback_on", f"fallback_on IN ({allowed})")
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("endpoint", sa.String(512), nullable=True))
        batch.add_column(sa.Column("fallback", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("rule_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("cached", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_table(
        "call_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "routing_rules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("expr", sa.Text, nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.CheckConstraint("priority >= 0 AND priority <= 1000000", name="ck_routing_priority"),
        sa.CheckConstraint("length(expr) >= 1", name="ck_routing_expr"),
    )


def downgrade() -> None:
    op.drop_table("call_cache")
    op.drop_table("routing_rules")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("cached")
        batch.drop_column("rule_id")
        batch.drop_column("fallback")
        batch.drop_column("endpoint")
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.drop_constraint("ck_profile_fallback_on", type_="check")
        batch.drop_constraint("ck_profile_fallback_profile", type_="check")
        batch.drop_column("fallback_on")
        batch.drop_column("fallback_profile")
    op.drop_table("endpoint_styles")
