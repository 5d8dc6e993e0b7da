"""Job queue: procrastinate's schema (PostgreSQL only) and the worker of each chunk.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-22

`kg ingest --queue` and `kg worker` use procrastinate, whose tables and functions are its own
schema SQL, applied here so that `kg db upgrade` is the one command. On SQLite only the column
is added (queued ingestion needs PostgreSQL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Everything procrastinate's schema creates is named procrastinate_*: drop by that prefix, so
# the downgrade matches whatever version of the schema was applied.
DROP_PROCRASTINATE = """
DO $$
DECLARE item record;
BEGIN
    FOR item IN SELECT tablename FROM pg_tables
                WHERE schemaname = current_schema() AND tablename LIKE 'procrastinate\\_%' LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', item.tablename);
    END LOOP;
    FOR item IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%' LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', item.signature);
    END LOOP;
    FOR item IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate\\_%'
                  AND t.typtype IN ('e', 'c') LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', item.typname);
    END LOOP;
END $$;
"""


def _raw_execute(sql: str) -> None:
    # The driver's own execute, without parameters: the schema's '%' and ':' stay literal, and
    # it runs in the migration's transaction.
    op.get_bind().connection.driver_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    with op.batch_alter_table("chunk_extractions") as batch:
        batch.add_column(sa.Column("worker", sa.String(255), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        from procrastinate.schema import SchemaManager  # the queue's own schema, its version

        _raw_execute(SchemaManager.get_schema())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _raw_execute(DROP_PROCRASTINATE)
    with op.batch_alter_table("chunk_extractions") as batch:
        batch.drop_column("worker")
