"""The graph read side: relationships, neighbours, paths, and documents (list, show, delete).

Functions take a Session and return plain dicts ready to render or to hand to a notebook.
Traversals walk the relationships table level by level with batched `IN` queries, so their
memory follows what they find, never the size of the graph.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, aliased

from kg.db import attributes as concept_attributes
from kg.db.locks import lock_for_rewrite
from kg.db.models import (
    Chunk,
    Concept,
    ConceptAlias,
    Document,
    Evidence,
    Relationship,
    RelationshipType,
    Run,
    RunDocument,
)
from kg.db.scope import view_as_of, with_history
from kg.errors import NotFoundError, UsageError
from kg.ontology import registry_type
from kg.queries import find_concept
from kg.text import snake

# Bound parameters per IN list: well under SQLite's and PostgreSQL's limits.
IN_BATCH = 2000
MAX_DEPTH = 6
# A breadth-first search's way back: (edge, previous concept id), None at the root.
Link = tuple[dict[str, Any], int] | None


def _batches(ids: Iterable[int], size: int = IN_BATCH) -> Iterator[list[int]]:
    batch: list[int] = []
    for i in ids:
        batch.append(i)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _positive(name: str, value: int, upper: int | None = None) -> int:
    if value < 1 or (upper is not None and value > upper):
        bound = f"between 1 and {upper}" if upper is not None else "at least 1"
        raise UsageError(f"{name} must be {bound} (got {value})")
    return value


def _edge_query() -> Any:
    source, target = aliased(Concept), aliased(Concept)
    evidence = (select(func.count(Evidence.id)).where(Evidence.relationship_id == Relationship.id)
                .correlate(Relationship).scalar_subquery())
    return (
        select(Relationship.id, source.id.label("source_id"), source.label.label("source"),
               RelationshipType.name.label("type"), target.id.label("target_id"),
               target.label.label("target"), Relationship.confidence,
               evidence.label("evidence"))
        .join(RelationshipType, RelationshipType.id == Relationship.type_id)
        .join(source, source.id == Relationship.source_id)
        .join(target, target.id == Relationship.target_id)
    )


def list_relationships(session: Session, *, type: str | None = None, concept: str | None = None,
                       min_confidence: float | None = None, limit: int = 100) -> list[dict]:
    """Relationships with their ends, type, confidence and evidence count; filters combine."""
    query = _edge_query()
    if type:
        # Names as the ontology writes them (birthPlace), found in any case or separators.
        found = registry_type(session, type) or registry_type(session, snake(type))
        if found is None:
            raise NotFoundError(f"no relationship type {type!r}; see `kg vocab list`")
        query = query.where(RelationshipType.id == found.id)
    if concept:
        cid = find_concept(session, concept).id
        query = query.where(or_(Relationship.source_id == cid, Relationship.target_id == cid))
    if min_confidence is not None:
        query = query.where(Relationship.confidence >= min_confidence)
    query = query.order_by(Relationship.id).limit(_positive("--limit", limit))
    return [dict(r._mapping) for r in session.execute(query)]


def _edges_touching(session: Session, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for batch in _batches(ids):
        query = _edge_query().where(or_(Relationship.source_id.in_(batch),
                                        Relationship.target_id.in_(batch)))
        for r in session.execute(query):
            rows[r.id] = dict(r._mapping)
    return [rows[k] for k in sorted(rows)]


def neighbors(session: Session, name: str, *, depth: int = 1, limit: int = 500,
              as_of: datetime | None = None) -> dict[str, Any]:
    """Concepts within `depth` relationships of one concept (either direction), with the edges
    that reached them; at most `limit` concepts (closest first), `truncated` says if cut.
    `as_of`: the graph as it was then."""
    view_as_of(session, as_of)
    _positive("--depth", depth, MAX_DEPTH)
    _positive("--limit", limit)
    start = find_concept(session, name)
    distance: dict[int, int] = {start.id: 0}
    labels: dict[int, str] = {start.id: start.label}
    edges: dict[int, dict[str, Any]] = {}
    frontier = [start.id]
    truncated = False
    for level in range(1, depth + 1):
        found: list[int] = []
        for edge in _edges_touching(session, frontier):
            ends = (edge["source_id"], edge["target_id"])
            fresh = [e for e in ends if e not in distance]
            if len(distance) + len(fresh) > limit + 1:
                truncated = True
                continue
            edges.setdefault(edge["id"], edge)
            for cid, label in ((edge["source_id"], edge["source"]),
                               (edge["target_id"], edge["target"])):
                if cid not in distance:
                    distance[cid], labels[cid] = level, label
                    found.append(cid)
        frontier = found
        if not frontier or truncated:
            break
    nodes = [{"id": cid, "label": labels[cid], "distance": d}
             for cid, d in sorted(distance.items(), key=lambda kv: (kv[1], labels[kv[0]]))
             if cid != start.id]
    return {"concept": {"id": start.id, "label": start.label}, "depth": depth,
            "neighbors": nodes, "relationships": [edges[k] for k in sorted(edges)],
            "truncated": truncated}


def path(session: Session, a: str, b: str, *, max_depth: int = 4) -> dict[str, Any]:
    """A shortest chain of relationships between two concepts (either direction per step),
    found by a breadth-first search from both ends; `steps` is empty when none is that short."""
    _positive("--max-depth", max_depth, MAX_DEPTH * 2)
    first, last = find_concept(session, a), find_concept(session, b)
    result: dict[str, Any] = {"from": first.label, "to": last.label, "max_depth": max_depth,
                              "steps": []}
    if first.id == last.id:
        return result
    # Per side: node -> (edge, previous node) or None for the root, and node -> depth.
    parents: list[dict[int, Link]] = [{first.id: None}, {last.id: None}]
    depths: list[dict[int, int]] = [{first.id: 0}, {last.id: 0}]
    frontiers: list[set[int]] = [{first.id}, {last.id}]
    for _ in range(max_depth):
        side = 0 if len(frontiers[0]) <= len(frontiers[1]) else 1
        mine, theirs = parents[side], parents[1 - side]
        found: set[int] = set()
        for edge in _edges_touching(session, sorted(frontiers[side])):
            for here, there in ((edge["source_id"], edge["target_id"]),
                                (edge["target_id"], edge["source_id"])):
                if here in frontiers[side] and there not in mine:
                    mine[there] = (edge, here)
                    depths[side][there] = depths[side][here] + 1
                    found.add(there)
        frontiers[side] = found
        meetings = [n for n in found if n in theirs]
        if meetings:
            meet = min(meetings, key=lambda n: (depths[1 - side][n], n))
            result["steps"] = _steps(parents, meet)
            break
        if not found:
            break
    return result


def _steps(parents: list[dict[int, Link]], meet: int) -> list[dict[str, Any]]:
    """Walk back from the meeting point to both roots and orient each step along the path."""
    chain: list[tuple[dict[str, Any], int]] = []  # (edge, the node the step leaves from)
    node = meet
    while (link := parents[0][node]) is not None:
        edge, previous = link
        chain.insert(0, (edge, previous))
        node = previous
    node = meet
    while (link := parents[1][node]) is not None:
        edge, following = link
        chain.append((edge, node))
        node = following
    steps = []
    for edge, here in chain:
        forward = edge["source_id"] == here
        steps.append({
            "from": edge["source"] if forward else edge["target"],
            "type": edge["type"], "direction": "->" if forward else "<-",
            "to": edge["target"] if forward else edge["source"],
            "relationship_id": edge["id"], "confidence": edge["confidence"],
        })
    return steps


# -- documents ----------------------------------------------------------------------------

def _document_rows(session: Session, path: str) -> list[Document]:
    """Every stored version of a document, by stored path, path on disk, or id."""
    candidates = [path, str(Path(path).expanduser().resolve(strict=False))]
    rows = list(session.scalars(select(Document).where(Document.path.in_(candidates))
                                .order_by(Document.id)))
    # ASCII digits within BIGINT only: a longer number is no id.
    if not rows and path.isascii() and path.isdigit() and len(path) <= 19 \
            and int(path) <= 2**63 - 1:
        doc = session.get(Document, int(path))
        rows = [doc] if doc is not None else []
    if not rows:
        raise NotFoundError(f"no document {path!r} in the graph; see `kg documents list`")
    return rows


def document_history(session: Session, path: str) -> dict[str, Any]:
    """The versions of a document, oldest first, with how many concepts and relationships each
    version's cutover added to the live graph and retracted from it."""
    with_history(session)
    candidates = [path, str(Path(path).expanduser().resolve(strict=False))]
    docs = list(session.scalars(select(Document).where(Document.path.in_(candidates))
                                .order_by(Document.version, Document.id)))
    if not docs:
        known = list(session.scalars(select(Document.path).distinct()))
        near = difflib.get_close_matches(path, known, n=3, cutoff=0.4) or \
            difflib.get_close_matches(str(Path(path).expanduser().resolve(strict=False)),
                                      known, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(near)}?" if near else "; see `kg documents list`"
        raise NotFoundError(f"no document {path!r} was ever ingested{hint}")
    versions = []
    before: dict[str, set[int]] = {"concepts": set(), "relationships": set()}
    for doc in docs:
        row: dict[str, Any] = {"version": doc.version, "id": doc.id, "sha256": doc.sha256[:12],
                               "status": doc.status, "valid_from": doc.valid_from,
                               "valid_to": doc.valid_to, "live": doc.valid_to is None
                               and doc.valid_from is not None}
        chunks = select(Chunk.id).where(Chunk.document_id == doc.id)
        for key, column in (("concepts", Evidence.concept_id),
                            ("relationships", Evidence.relationship_id)):
            now = {i for i in session.scalars(select(column).distinct().where(
                Evidence.chunk_id.in_(chunks))) if i is not None}
            row[f"{key}_added"] = len(now - before[key])
            row[f"{key}_removed"] = len(before[key] - now)
            before[key] = now
        versions.append(row)
    return {"path": docs[-1].path, "versions": versions}


def list_documents(session: Session, *, search: str | None = None,
                   limit: int = 100) -> list[dict[str, Any]]:
    """Documents with their status, chunk and evidence counts, newest first."""
    evidence = (select(func.count(Evidence.id)).join(Chunk, Chunk.id == Evidence.chunk_id)
                .where(Chunk.document_id == Document.id).correlate(Document).scalar_subquery())
    query = select(Document.id, Document.path, Document.kind, Document.status,
                   Document.chunk_count.label("chunks"), evidence.label("evidence"),
                   Document.size_bytes, Document.created_at, Document.version)
    # The versions a path has now: the live one, and a new one waiting for its cutover
    # (older ones: `kg documents history PATH`).
    query = query.where(Document.valid_to.is_(None))
    if search:
        # A substring, not a pattern: autoescape makes `%`, `_` (and the escape) literal.
        query = query.where(Document.path.contains(search, autoescape=True))
    query = query.order_by(Document.id.desc()).limit(_positive("--limit", limit))
    return [dict(r._mapping) for r in session.execute(query)]


def document_detail(session: Session, path: str, *, top: int = 20) -> dict[str, Any]:
    """A document's versions, the runs that covered it, and its most evidenced concepts."""
    docs = _document_rows(session, path)
    ids = [d.id for d in docs]
    chunk_ids = select(Chunk.id).where(Chunk.document_id.in_(ids))
    concepts = [
        {"id": cid, "label": label, "evidence": n}
        for cid, label, n in session.execute(
            select(Concept.id, Concept.label, func.count(Evidence.id))
            .join(Evidence, Evidence.concept_id == Concept.id)
            .where(Evidence.chunk_id.in_(chunk_ids))
            .group_by(Concept.id, Concept.label)
            .order_by(func.count(Evidence.id).desc(), Concept.label).limit(top))
    ]
    runs = list(session.scalars(select(RunDocument.run_id).where(RunDocument.document_id.in_(ids))
                                .distinct().order_by(RunDocument.run_id)))
    evidence = session.scalar(select(func.count(Evidence.id)).where(
        Evidence.chunk_id.in_(chunk_ids))) or 0
    relationships = session.scalar(select(func.count(func.distinct(Evidence.relationship_id)))
                                   .where(Evidence.chunk_id.in_(chunk_ids))) or 0
    return {
        "path": docs[-1].path,
        "versions": [{"id": d.id, "sha256": d.sha256, "kind": d.kind, "status": d.status,
                      "chunks": d.chunk_count, "size_bytes": d.size_bytes,
                      "created_at": d.created_at} for d in docs],
        "runs": runs, "evidence": evidence, "relationships": relationships,
        "top_concepts": concepts,
    }


def delete_document(session: Session, path: str) -> dict[str, Any]:
    """Remove every version of a document: its chunks and their evidence, then the concepts
    and relationships that are left with no evidence at all. Runs and calls stay (a call's
    chunk becomes NULL). Returns what was removed."""
    lock_for_rewrite(session)
    with_history(session)  # every version goes, with its history
    docs = _document_rows(session, path)
    ids = [d.id for d in docs]
    chunk_ids = list(session.scalars(select(Chunk.id).where(Chunk.document_id.in_(ids))))
    # Only what this document's evidence touched may go: a concept that had no evidence
    # before (none should) is not ours to remove.
    touched_concepts: set[int] = set()
    touched_edges: set[int] = set()
    evidence = attribute_evidence = 0
    for batch in _batches(chunk_ids):
        for concept_id, edge_id in session.execute(
                select(Evidence.concept_id, Evidence.relationship_id)
                .where(Evidence.chunk_id.in_(batch))):
            evidence += 1
            if concept_id is not None:
                touched_concepts.add(concept_id)
            if edge_id is not None:
                touched_edges.add(edge_id)
        session.execute(delete(Evidence).where(Evidence.chunk_id.in_(batch)))
        attribute_evidence += concept_attributes.drop_unsupported(session, batch)
    dead_edges = _without_evidence(session, Evidence.relationship_id, touched_edges)
    for batch in _batches(dead_edges):
        session.execute(delete(Relationship).where(Relationship.id.in_(batch)))
    dead_concepts = _without_evidence(session, Evidence.concept_id, touched_concepts)
    # A concept still holding an edge that has evidence elsewhere stays (its edge needs it).
    for batch in _batches(list(dead_concepts)):
        held = set(session.scalars(select(Relationship.source_id).where(
            Relationship.source_id.in_(batch)))) | set(session.scalars(
            select(Relationship.target_id).where(Relationship.target_id.in_(batch))))
        dead_concepts -= held
    aliases = 0
    for batch in _batches(sorted(dead_concepts)):
        aliases += session.scalar(select(func.count(ConceptAlias.id)).where(
            ConceptAlias.concept_id.in_(batch))) or 0
        session.execute(delete(ConceptAlias).where(ConceptAlias.concept_id.in_(batch)))
        session.execute(delete(Concept).where(Concept.id.in_(batch)))
    # Chunks go with their document (ON DELETE CASCADE); calls keep their rows (SET NULL),
    # runs stay; run_documents links to the document go with it.
    session.execute(delete(Chunk).where(Chunk.document_id.in_(ids)))
    session.execute(delete(RunDocument).where(RunDocument.document_id.in_(ids)))
    session.execute(delete(Document).where(Document.id.in_(ids)))
    return {"path": docs[-1].path, "documents": len(ids), "chunks": len(chunk_ids),
            "evidence": evidence, "attribute_evidence": attribute_evidence,
            "relationships": len(dead_edges),
            "concepts": len(dead_concepts), "aliases": aliases}


def _without_evidence(session: Session, evidence_key: Any, candidates: set[int]) -> set[int]:
    """The candidates that no evidence row points to any more."""
    dead: set[int] = set()
    for batch in _batches(sorted(candidates)):
        alive = set(session.scalars(select(evidence_key).where(evidence_key.in_(batch))
                                    .distinct()))
        dead |= set(batch) - alive
    return dead


def run_exists(session: Session, run_id: int) -> None:
    """Raise NotFoundError unless the run exists (filters name runs by id)."""
    if session.get(Run, run_id) is None:
        raise NotFoundError(f"no run {run_id}; see `kg runs list`")
