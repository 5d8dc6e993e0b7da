"""Ontologies as rows; concept types; per-profile ontology, descriptions and grounding.

The 33 baseline relationship types become the ontology `default` (plus six broad concept
types). `relationship_types` stays the graph's registry of type names: every ontology relation
type points at one row there, so relationships keep one foreign key whatever ontology made them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
_ONE_ACTIVE = "uq_extraction_profiles_one_active"
# Frozen here: this migration always seeds the same rows, whatever later code does.
DEFAULT_CONCEPT_TYPES = [
    ("person", "a named human or character"),
    ("organization", "a company, institution, team or other group"),
    ("place", "a location, region, building or body of water"),
    ("event", "something that happens at a time"),
    ("thing", "an object, substance, product or work"),
    ("idea", "a concept, theory, method or field"),
]


def _one_active(create: bool) -> None:
    # SQLite's batch "move and copy" would rebuild this partial index without its WHERE clause.
    if create:
        op.create_index(_ONE_ACTIVE, "extraction_profiles", ["active"], unique=True,
                        sqlite_where=sa.text("active = 1"), postgresql_where=sa.text("active"))
    else:
        op.drop_index(_ONE_ACTIVE, table_name="extraction_profiles")


def upgrade() -> None:
    ontologies = op.create_table(
        "ontologies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.CheckConstraint("mode IN ('strict', 'open')", name="ck_ontology_mode"),
        sa.CheckConstraint("revision >= 1", name="ck_ontology_revision"),
        sa.CheckConstraint("length(name) >= 1", name="ck_ontology_name"),
    )
    concept_types = op.create_table(
        "ontology_concept_types",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ontology_id", sa.Integer,
                  sa.ForeignKey("ontologies.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(300), nullable=False),
        sa.UniqueConstraint("ontology_id", "name", name="uq_ontology_concept_type"),
    )
    relation_types = op.create_table(
        "ontology_relation_types",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ontology_id", sa.Integer,
                  sa.ForeignKey("ontologies.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("type_id", sa.Integer, sa.ForeignKey("relationship_types.id"),
                  nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("description", sa.String(300), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("domain", sa.String(64)),
        sa.Column("range", sa.String(64)),
        sa.Column("example", sa.String(300)),
        sa.UniqueConstraint("ontology_id", "name", name="uq_ontology_relation_type"),
        sa.CheckConstraint("direction IN ('directed', 'symmetric')",
                           name="ck_ontology_relation_direction"),
    )
    op.add_column("concepts", sa.Column("type", sa.String(64)))
    for table in ("calls", "chunk_extractions"):
        op.add_column(table, sa.Column("ontology", sa.String(64)))
        op.add_column(table, sa.Column("ontology_revision", sa.Integer))
    # on: grounded schema; fallback: the server limits enums, free text validated; off.
    op.add_column("calls", sa.Column("grounding", sa.String(8)))
    op.add_column("runs", sa.Column("ontology", sa.String(64)))
    op.add_column("runs", sa.Column("ontology_revision", sa.Integer))

    _one_active(create=False)
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.add_column(sa.Column("ontology", sa.String(64), nullable=False,
                                   server_default="default"))
        batch.add_column(sa.Column("descriptions", sa.String(8), nullable=False,
                                   server_default="generate"))
        batch.add_column(sa.Column("grounding", sa.String(8), nullable=False,
                                   server_default="on"))
        batch.create_check_constraint(
            "ck_profile_ontology", "length(ontology) >= 1 AND length(ontology) <= 64")
        batch.create_check_constraint(
            "ck_profile_descriptions", "descriptions IN ('generate', 'evidence', 'off')")
        batch.create_check_constraint("ck_profile_grounding", "grounding IN ('on', 'off')")
    _one_active(create=True)

    conn = op.get_bind()
    now = datetime.now(UTC)
    conn.execute(ontologies.insert().values(
        name="default", description="The built-in general-purpose vocabulary.",
        mode="strict", revision=1, created_at=now, updated_at=now))
    default_id = conn.execute(
        sa.text("SELECT id FROM ontologies WHERE name = 'default'")).scalar_one()
    op.bulk_insert(concept_types, [{"ontology_id": default_id, "name": n, "description": d}
                                   for n, d in DEFAULT_CONCEPT_TYPES])
    rows = conn.execute(sa.text("SELECT id, name, category, direction, description "
                                "FROM relationship_types ORDER BY id")).all()
    op.bulk_insert(relation_types, [
        {"ontology_id": default_id, "type_id": r.id, "name": r.name, "category": r.category,
         "direction": r.direction, "description": r.description, "domain": None, "range": None,
         "example": None} for r in rows])
    # The embedded model invents descriptions: it quotes its evidence instead.
    conn.execute(sa.text("UPDATE extraction_profiles SET descriptions = 'evidence' "
                         "WHERE provider = 'llamacpp'"))


def downgrade() -> None:
    _one_active(create=False)
    with op.batch_alter_table("extraction_profiles") as batch:
        batch.drop_constraint("ck_profile_grounding", type_="check")
        batch.drop_constraint("ck_profile_descriptions", type_="check")
        batch.drop_constraint("ck_profile_ontology", type_="check")
        batch.drop_column("grounding")
        batch.drop_column("descriptions")
        batch.drop_column("ontology")
    _one_active(create=True)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("ontology_revision")
        batch.drop_column("ontology")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("grounding")
        batch.drop_column("ontology_revision")
        batch.drop_column("ontology")
    with op.batch_alter_table("chunk_extractions") as batch:
        batch.drop_column("ontology_revision")
        batch.drop_column("ontology")
    with op.batch_alter_table("concepts") as batch:
        batch.drop_column("type")
    op.drop_table("ontology_relation_types")
    op.drop_table("ontology_concept_types")
    op.drop_table("ontologies")
