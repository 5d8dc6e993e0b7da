"""Full-text search indexes (issue #23).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03

Concept labels, descriptions and search terms, aliases, evidence quotes and chunk text become
searchable with the database's own engine, kept current by the database itself so that
ingest, curation and document updates need no change:

- SQLite: one FTS5 external-content table per source (`<table>_fts`, rowid = the row's id,
  the text columns plus `collection_id` unindexed), kept in step by AFTER INSERT / UPDATE /
  DELETE triggers (foreign-key cascades fire them too); porter stemming.
- PostgreSQL: a stored generated `search_vector` tsvector column per source (English
  configuration) with a GIN index; the database fills it on every write and on backfill.

No new table holds graph rows of its own on PostgreSQL, so no row-level security policy is
needed; the FTS5 tables only mirror rows of their content table (with its collection_id).
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# table -> its indexed text columns (SQLite) and the tsvector expression (PostgreSQL).
SOURCES = {
    "concepts": ("label", "description", "search_terms"),
    "concept_aliases": ("alias",),
    "evidence": ("quote",),
    "chunks": ("text",),
}
PG_VECTORS = {
    "concepts": ("setweight(to_tsvector('english', coalesce(label, '')), 'A') || "
                 "setweight(to_tsvector('english', coalesce(search_terms::text, '')), 'B') || "
                 "setweight(to_tsvector('english', coalesce(description, '')), 'C')"),
    "concept_aliases": "to_tsvector('english', coalesce(alias, ''))",
    "evidence": "to_tsvector('english', coalesce(quote, ''))",
    "chunks": "to_tsvector('english', coalesce(text, ''))",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, expression in PG_VECTORS.items():
            op.execute(f"ALTER TABLE {table} ADD COLUMN search_vector tsvector "
                       f"GENERATED ALWAYS AS ({expression}) STORED")
            op.execute(f"CREATE INDEX ix_{table}_search ON {table} USING gin (search_vector)")
        return
    for table, columns in SOURCES.items():
        _sqlite_fts(table, columns)


def _sqlite_fts(table: str, columns: tuple[str, ...]) -> None:
    fts = f"{table}_fts"
    cols = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    op.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5({cols}, collection_id UNINDEXED, "
               f"content='{table}', content_rowid='id', tokenize='porter unicode61')")
    # An external-content index must be told the OLD values to forget them: the triggers
    # hand them over exactly as they were indexed.
    op.execute(f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN "
               f"INSERT INTO {fts}(rowid, {cols}, collection_id) "
               f"VALUES (new.id, {new}, new.collection_id); END")
    op.execute(f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN "
               f"INSERT INTO {fts}({fts}, rowid, {cols}, collection_id) "
               f"VALUES ('delete', old.id, {old}, old.collection_id); END")
    op.execute(f"CREATE TRIGGER {fts}_au AFTER UPDATE OF {cols}, collection_id ON {table} "
               f"BEGIN INSERT INTO {fts}({fts}, rowid, {cols}, collection_id) "
               f"VALUES ('delete', old.id, {old}, old.collection_id); "
               f"INSERT INTO {fts}(rowid, {cols}, collection_id) "
               f"VALUES (new.id, {new}, new.collection_id); END")
    op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")  # backfill existing rows


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in PG_VECTORS:
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_search")
            op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS search_vector")
        return
    for table in SOURCES:
        fts = f"{table}_fts"
        for suffix in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS {fts}_{suffix}")
        op.execute(f"DROP TABLE IF EXISTS {fts}")


