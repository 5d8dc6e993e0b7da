"""Collections: several separate graphs in one database; everything so far goes to `default`.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

Every graph table gets `collection_id` (server default 1, so existing rows land in `default`
without a rewrite on PostgreSQL), concept labels and document contents become unique per
collection, and API tokens may be limited to some collections.

On PostgreSQL the isolation is also the database's: the tables get row-level security
policies for the role `kg_scoped`, which the server takes for each request (SET LOCAL ROLE)
together with the setting `kg.collections` (the ids the request may see). Sessions of the
owner (the CLI, workers) are not affected: they filter by themselves. A role needs the
CREATEROLE privilege to make; without it the policies are skipped and `kg serve` says so.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SCOPED = ("documents", "chunks", "concepts", "concept_aliases", "relationships", "evidence",
          "runs", "chunk_extractions", "calls", "curation_decisions", "evaluations")
ROLE = "kg_scoped"
SEEN = ("collection_id = ANY (string_to_array(NULLIF(current_setting('kg.collections', true), "
        "''), ',')::int[])")


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("ontology", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.current_timestamp()),
        sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
        sa.CheckConstraint("length(name) >= 1 AND length(name) <= 64", name="ck_collection_name"),
    )
    op.execute("INSERT INTO collections (id, name, description, created_by) "
               "VALUES (1, 'default', 'everything not filed elsewhere', 'migration')")
    if op.get_bind().dialect.name == "postgresql":
        # The next id after the explicit 1.
        op.execute("SELECT setval(pg_get_serial_sequence('collections', 'id'), 1)")
    for table in SCOPED:
        # SQLite cannot add a REFERENCES column with a default in place: batch rebuilds the
        # table; PostgreSQL adds it without a rewrite (a constant default).
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(
                "collection_id", sa.Integer(),
                sa.ForeignKey("collections.id", ondelete="CASCADE",
                              name=f"fk_{table}_collection"),
                nullable=False, server_default=sa.text("1")))
    # The label's old constraint: unnamed where 0002 made it on SQLite (the convention below
    # names it for batch mode), `concepts_norm_label_key` elsewhere (PostgreSQL, a downgrade).
    old = next((uq["name"] for uq in sa.inspect(op.get_bind()).get_unique_constraints("concepts")
                if uq["column_names"] == ["norm_label"]), None) or "uq_concepts_norm_label"
    with op.batch_alter_table(
            "concepts", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}) as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint("uq_concept_norm_label", ["collection_id", "norm_label"])
    with op.batch_alter_table("documents") as batch:
        batch.drop_constraint("uq_document_path_sha", type_="unique")
        batch.create_unique_constraint("uq_document_path_sha",
                                       ["collection_id", "path", "sha256"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("collections", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _row_level_security()


def _row_level_security() -> None:
    bind = op.get_bind()
    may = bind.execute(sa.text(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")).scalar()
    exists = bind.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                          {"r": ROLE}).scalar()
    if not exists:
        if not may:
            return
        # Roles are the cluster's, not the database's: another kg database may have made it.
        op.execute(f"DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; "
                   "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    op.execute(f"GRANT {ROLE} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
    # Tables later migrations (and the job queue) create are the role's to use as well.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, "
               f"DELETE ON TABLES TO {ROLE}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES "
               f"TO {ROLE}")
    for table in SCOPED:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY kg_collection ON {table} TO {ROLE} "
                   f"USING ({SEEN}) WITH CHECK ({SEEN})")
    # The owner's own sessions bypass the policies (they filter by themselves); the scoped
    # role sees every other table (profiles, ontologies, vocabulary) as before.


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        has_role = op.get_bind().execute(sa.text(
            "SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ROLE}).scalar()
        for table in SCOPED:
            op.execute(f"DROP POLICY IF EXISTS kg_collection ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        if has_role:
            op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES "
                       f"FROM {ROLE}")
            op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES "
                       f"FROM {ROLE}")
            op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE}")
            op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ROLE}")
            op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
    # Rows of other collections would clash with `default`'s once the keys are global again.
    op.execute("DELETE FROM collections WHERE id <> 1")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("collections")
    with op.batch_alter_table("documents") as batch:
        batch.drop_constraint("uq_document_path_sha", type_="unique")
        batch.create_unique_constraint("uq_document_path_sha", ["path", "sha256"])
    with op.batch_alter_table("concepts") as batch:
        batch.drop_constraint("uq_concept_norm_label", type_="unique")
        batch.create_unique_constraint("concepts_norm_label_key", ["norm_label"])
    for table in reversed(SCOPED):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_collection", type_="foreignkey")
            batch.drop_column("collection_id")
    op.drop_table("collections")
