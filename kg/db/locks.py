"""The graph lock and epoch, taken by everything that writes concepts, aliases or relationships.

The ingest writer (`kg.extraction.store`), curation and document removal share them, so they
live below both sides: neither has to import the other to serialise its commits.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Connection, Table, text, update
from sqlalchemy.orm import Session

from kg.db.models import GraphEpoch

EPOCH = cast(Table, GraphEpoch.__table__)
GRAPH_LOCK = int.from_bytes(b"kg-graph", "big")  # the pg_advisory_xact_lock key
# The same lock as driver SQL, for a writer that sends it in one pipeline with the statements
# that must follow it (kg.extraction.store): one round trip instead of one per statement.
GRAPH_LOCK_SQL = "SELECT pg_advisory_xact_lock(%(graph_lock)s)"


def lock_graph(conn: Connection, *, rewrites: bool = False) -> None:
    """Hold the graph lock until the transaction ends (on SQLite the transaction's first write
    holds the whole database). Anything besides GraphWriter that writes concepts, aliases or
    relationships takes it first; with `rewrites` (the transaction changes or removes existing
    rows: curation's merge, rename, delete, undo) every writer reloads its caches afterwards."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GRAPH_LOCK})
    if rewrites:
        conn.execute(update(EPOCH).values(epoch=EPOCH.c.epoch + 1))


def lock_for_rewrite(session: Session) -> None:
    """Take the graph lock before anything else in the transaction, and make running ingest
    writers reload their caches afterwards (this transaction changes or removes rows)."""
    lock_graph(session.connection(), rewrites=True)
