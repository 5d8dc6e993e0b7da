"""`kg db prune`: delete the history that document versions leave (issue #22).

Retracted rows (valid_to before the given moment) really go: evidence first, then
relationships, literal values (#20) and concepts with no evidence left, then retired document
versions with their chunks. Live rows are never touched. Rows disappear, so running writers
reload their caches (the graph epoch is bumped under the graph lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, exists, or_, select

from kg.db import Database
from kg.db.locks import lock_graph
from kg.db.models import (
    AttributeEvidence,
    Chunk,
    ChunkExtraction,
    Concept,
    ConceptAlias,
    ConceptAttribute,
    Document,
    Evidence,
    Relationship,
    RunDocument,
)
from kg.db.scope import scope_of

ATTRIBUTES = cast(Table, ConceptAttribute.__table__)
ATTRIBUTE_EVIDENCE = cast(Table, AttributeEvidence.__table__)
CHUNKS = cast(Table, Chunk.__table__)
CONCEPTS = cast(Table, Concept.__table__)
ALIASES = cast(Table, ConceptAlias.__table__)
DOCUMENTS = cast(Table, Document.__table__)
EDGES = cast(Table, Relationship.__table__)
EVIDENCE = cast(Table, Evidence.__table__)
EXTRACTIONS = cast(Table, ChunkExtraction.__table__)
RUN_DOCUMENTS = cast(Table, RunDocument.__table__)


@dataclass(frozen=True)
class Pruned:
    evidence: int
    relationships: int
    concepts: int
    documents: int
    attributes: int = 0  # literal values (their evidence goes with them)


def _retired(table: Table, before: datetime) -> Any:
    return table.c.valid_to.is_not(None) & (table.c.valid_to < before)


def prune(db: Database, before: datetime, *, dry_run: bool = False) -> Pruned:
    """Delete history older than `before` (or only count it, with `dry_run`)."""
    with db.transaction() as conn:
        lock_graph(conn, rewrites=not dry_run)
        return _prune(conn, before, dry_run)


def _prune(conn: Connection, before: datetime, dry_run: bool) -> Pruned:
    mine = scope_of(conn)
    evidence = select(EVIDENCE.c.id).where(EVIDENCE.c.collection_id == mine,
                                           _retired(EVIDENCE, before))
    edges = select(EDGES.c.id).where(EDGES.c.collection_id == mine, _retired(EDGES, before))
    concepts = select(CONCEPTS.c.id).where(CONCEPTS.c.collection_id == mine,
                                           _retired(CONCEPTS, before))
    documents = select(DOCUMENTS.c.id).where(DOCUMENTS.c.collection_id == mine,
                                             _retired(DOCUMENTS, before))
    values = select(ATTRIBUTES.c.id).where(ATTRIBUTES.c.collection_id == mine,
                                           _retired(ATTRIBUTES, before))
    if dry_run:
        return Pruned(*(len(conn.scalars(q).all()) for q in (evidence, edges, concepts,
                                                             documents, values)))
    gone_evidence = conn.execute(delete(EVIDENCE).where(EVIDENCE.c.id.in_(evidence))).rowcount
    conn.execute(delete(ATTRIBUTE_EVIDENCE).where(
        ATTRIBUTE_EVIDENCE.c.collection_id == mine, _retired(ATTRIBUTE_EVIDENCE, before)))
    # As for relationships: a retracted value whose newer history holds evidence stays.
    gone_values = conn.execute(delete(ATTRIBUTES).where(
        ATTRIBUTES.c.id.in_(values),
        ~exists().where(ATTRIBUTE_EVIDENCE.c.attribute_id == ATTRIBUTES.c.id))).rowcount
    # A retracted relationship or concept still holding evidence (newer history) stays.
    gone_edges = conn.execute(delete(EDGES).where(
        EDGES.c.id.in_(edges),
        ~exists().where(EVIDENCE.c.relationship_id == EDGES.c.id))).rowcount
    orphan = CONCEPTS.c.id.in_(concepts) & ~exists().where(
        EVIDENCE.c.concept_id == CONCEPTS.c.id) & ~exists().where(
        or_(EDGES.c.source_id == CONCEPTS.c.id, EDGES.c.target_id == CONCEPTS.c.id)) & ~exists(
        ).where(ATTRIBUTES.c.concept_id == CONCEPTS.c.id)
    conn.execute(delete(ALIASES).where(ALIASES.c.concept_id.in_(
        select(CONCEPTS.c.id).where(orphan))))
    gone_concepts = conn.execute(delete(CONCEPTS).where(orphan)).rowcount
    old_documents = list(conn.scalars(documents))
    old_chunks = select(CHUNKS.c.id).where(CHUNKS.c.document_id.in_(old_documents))
    conn.execute(delete(EVIDENCE).where(EVIDENCE.c.chunk_id.in_(old_chunks)))
    conn.execute(delete(ATTRIBUTE_EVIDENCE).where(ATTRIBUTE_EVIDENCE.c.chunk_id.in_(old_chunks)))
    conn.execute(delete(EXTRACTIONS).where(EXTRACTIONS.c.chunk_id.in_(old_chunks)))
    conn.execute(delete(RUN_DOCUMENTS).where(RUN_DOCUMENTS.c.document_id.in_(old_documents)))
    conn.execute(delete(CHUNKS).where(CHUNKS.c.document_id.in_(old_documents)))
    gone_documents = conn.execute(delete(DOCUMENTS).where(
        DOCUMENTS.c.id.in_(old_documents))).rowcount
    return Pruned(gone_evidence, gone_edges, gone_concepts, gone_documents, gone_values)
