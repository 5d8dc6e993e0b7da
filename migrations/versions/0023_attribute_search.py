"""Full-text search over the quotes literal values were read from (issue #20's attributes).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03

`attribute_evidence.quote` becomes searchable as migration 0018 made evidence quotes: an FTS5
external-content table kept in step by triggers on SQLite, a stored generated tsvector column
with a GIN index on PostgreSQL. A search for "1996" or "students" then finds the concept that
holds `established` = 1996 or `numberOfStudents` = 5,000.
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

TABLE = "attribute_evidence"
FTS = f"{TABLE}_fts"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {TABLE} ADD COLUMN search_vector tsvector GENERATED ALWAYS "
                   "AS (to_tsvector('english', coalesce(quote, ''))) STORED")
        op.execute(f"CREATE INDEX ix_{TABLE}_search ON {TABLE} USING gin (search_vector)")
        return
    op.execute(f"CREATE VIRTUAL TABLE {FTS} USING fts5(quote, collection_id UNINDEXED, "
               f"content='{TABLE}', content_rowid='id', tokenize='porter unicode61')")
    # An external-content index must be told the OLD values to forget them (as in 0018).
    op.execute(f"CREATE TRIGGER {FTS}_ai AFTER INSERT ON {TABLE} BEGIN "
               f"INSERT INTO {FTS}(rowid, quote, collection_id) "
               "VALUES (new.id, new.quote, new.collection_id); END")
    op.execute(f"CREATE TRIGGER {FTS}_ad AFTER DELETE ON {TABLE} BEGIN "
               f"INSERT INTO {FTS}({FTS}, rowid, quote, collection_id) "
               "VALUES ('delete', old.id, old.quote, old.collection_id); END")
    op.execute(f"CREATE TRIGGER {FTS}_au AFTER UPDATE OF quote, collection_id ON {TABLE} "
               f"BEGIN INSERT INTO {FTS}({FTS}, rowid, quote, collection_id) "
               "VALUES ('delete', old.id, old.quote, old.collection_id); "
               f"INSERT INTO {FTS}(rowid, quote, collection_id) "
               "VALUES (new.id, new.quote, new.collection_id); END")
    op.execute(f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')")  # backfill existing rows


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS ix_{TABLE}_search")
        op.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS search_vector")
        return
    for suffix in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS {FTS}_{suffix}")
    op.execute(f"DROP TABLE IF EXISTS {FTS}")
