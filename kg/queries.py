"""Read-side queries over the graph and the runs, returning plain dicts ready to render."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from kg import sourcemap
from kg.db.models import (
    AttributeEvidence,
    Call,
    Chunk,
    ChunkExtraction,
    Concept,
    ConceptAlias,
    ConceptAttribute,
    Document,
    Evidence,
    Relationship,
    RelationshipType,
    RelationshipTypeProposal,
    Run,
    RunDocument,
)
from kg.db.runstate import ChunkStatus, call_totals, effective_status
from kg.errors import NotFoundError, UsageError
from kg.text import normalise_label
from kg.urls import redact_url


def _limit(limit: int) -> int:
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    return limit


def list_concepts(session: Session, search: str | None = None, limit: int = 50) -> list[dict]:
    """Concepts with their evidence and relationship counts, optionally filtered by text."""
    evidence = (select(func.count(Evidence.id)).where(Evidence.concept_id == Concept.id)
                .correlate(Concept).scalar_subquery())
    edges = (select(func.count(Relationship.id)).where(
        or_(Relationship.source_id == Concept.id, Relationship.target_id == Concept.id))
        .correlate(Concept).scalar_subquery())
    query = select(Concept.id, Concept.label, Concept.description, evidence.label("mentions"),
                   edges.label("relationships"))
    if search:
        # A substring, not a pattern: autoescape makes `%`, `_` (and the escape) literal.
        text = normalise_label(search) or search.casefold()
        alias_match = select(ConceptAlias.concept_id).where(
            ConceptAlias.norm_alias.contains(text, autoescape=True))
        query = query.where(or_(Concept.norm_label.contains(text, autoescape=True),
                                Concept.id.in_(alias_match)))
    query = query.order_by(evidence.desc(), Concept.label).limit(_limit(limit))
    return [dict(r._mapping) for r in session.execute(query)]


def find_concept(session: Session, name: str) -> Concept:
    """By id, label, or alias (normalised)."""
    # ASCII digits within BIGINT only: a longer number is no id (it may still be a label).
    if name.isascii() and name.isdigit() and len(name) <= 19 and int(name) <= 2**63 - 1:
        concept = session.get(Concept, int(name))
        if concept is not None:
            return concept
    norm = normalise_label(name)
    concept = session.scalar(select(Concept).where(Concept.norm_label == norm))
    if concept is None:
        concept = session.scalar(select(Concept).join(ConceptAlias).where(
            ConceptAlias.norm_alias == norm).limit(1))
    if concept is None:
        raise NotFoundError(f"no concept named {name!r}; try `kg concepts list --search TEXT`")
    return concept


def concept_detail(session: Session, name: str, evidence_limit: int = 20) -> dict[str, Any]:
    """A concept with aliases, relationships both ways, and evidence quotes with offsets."""
    concept = find_concept(session, name)
    aliases = sorted(session.scalars(select(ConceptAlias.alias).where(
        ConceptAlias.concept_id == concept.id)))
    other = aliased(Concept)
    relationships = []
    for direction, mine, theirs in (("out", Relationship.source_id, Relationship.target_id),
                                    ("in", Relationship.target_id, Relationship.source_id)):
        rows = session.execute(
            select(Relationship.id, RelationshipType.name, other.label, Relationship.confidence)
            .join(RelationshipType, RelationshipType.id == Relationship.type_id)
            .join(other, other.id == theirs).where(mine == concept.id)
            .order_by(RelationshipType.name, other.label))
        for rid, type_name, label, confidence in rows:
            relationships.append({"id": rid, "direction": direction, "type": type_name,
                                  "concept": label, "confidence": confidence})
    found = session.execute(
        select(Evidence.quote, Document.path, Evidence.char_start, Evidence.char_end,
               Evidence.run_id, Document.id)
        .join(Chunk, Chunk.id == Evidence.chunk_id)
        .join(Document, Document.id == Chunk.document_id)
        .where(Evidence.concept_id == concept.id)
        .order_by(Evidence.id).limit(evidence_limit)).all()
    # Each OCR document's map is read once, however many quotes come from it.
    maps: dict[int, dict[str, Any]] = dict(session.execute(
        select(Document.id, Document.source_map).where(
            Document.id.in_({row[5] for row in found}), Document.source_map.is_not(None))).all())
    evidence = []
    for q, path, s, e, run_id, document_id in found:
        item: dict[str, Any] = {"quote": q, "document": path, "char_start": s, "char_end": e,
                                "run_id": run_id}
        if document_id in maps:  # page and box on the image, for OCR text
            item["places"] = [{"page": p.page, "box": list(p.box) if p.box else None}
                              for p in sourcemap.places(maps[document_id], s, e)]
        evidence.append(item)
    return {"id": concept.id, "label": concept.label, "description": concept.description,
            "search_terms": concept.search_terms, "aliases": aliases,
            "relationships": relationships, "attributes": concept_attributes(session, concept.id),
            "evidence": evidence}


def concept_attributes(session: Session, concept_id: int) -> list[dict[str, Any]]:
    """A concept's literal values (issue #20) by name: verbatim, normalised, how many quotes
    support each and the first of them. Live ones (or those of the session's --as-of)."""
    quotes = (select(func.count(AttributeEvidence.id))
              .where(AttributeEvidence.attribute_id == ConceptAttribute.id)
              .correlate(ConceptAttribute).scalar_subquery())
    first = (select(AttributeEvidence.quote)
             .where(AttributeEvidence.attribute_id == ConceptAttribute.id)
             .correlate(ConceptAttribute).order_by(AttributeEvidence.id).limit(1)
             .scalar_subquery())
    rows = session.execute(
        select(ConceptAttribute.name, ConceptAttribute.datatype, ConceptAttribute.value,
               ConceptAttribute.normalised, quotes.label("evidence"), first.label("quote"))
        .where(ConceptAttribute.concept_id == concept_id)
        .order_by(ConceptAttribute.name, ConceptAttribute.normalised))
    return [dict(r._mapping) for r in rows]


def _run_row(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "status": effective_status(run), "started_at": run.started_at,
        "finished_at": run.finished_at, "profile": run.profile_name,
        "documents": run.documents, "chunks_total": run.chunks_total,
        "chunks_ok": run.chunks_ok, "chunks_failed": run.chunks_failed,
    }


def list_runs(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    runs = session.scalars(select(Run).order_by(Run.id.desc()).limit(_limit(limit)))
    return [_run_row(r) for r in runs]


def run_detail(session: Session, run_id: int) -> dict[str, Any]:
    """A run with totals computed from its calls, its profiles, and its failed chunks."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}; see `kg runs list`")
    totals = call_totals(session, run_id)
    by_revision = [
        {"profile": p, "revision": r, "model": m, "calls": n}
        for p, r, m, n in session.execute(
            select(Call.profile_name, Call.profile_revision, Call.model, func.count(Call.id))
            .where(Call.run_id == run_id)
            .group_by(Call.profile_name, Call.profile_revision, Call.model)
            .order_by(Call.profile_revision))
    ]
    failures = [
        {"chunk_id": c, "document": path, "ordinal": o, "error": err}
        for c, path, o, err in session.execute(
            select(ChunkExtraction.chunk_id, Document.path, Chunk.ordinal, ChunkExtraction.error)
            .join(Chunk, Chunk.id == ChunkExtraction.chunk_id)
            .join(Document, Document.id == Chunk.document_id)
            .where(ChunkExtraction.run_id == run_id, ChunkExtraction.status == ChunkStatus.FAILED)
            .order_by(Chunk.id).limit(50))
    ]
    by_worker = [
        {"worker": w, "chunks_ok": ok, "chunks_failed": n - ok}
        for w, n, ok in session.execute(
            select(ChunkExtraction.worker, func.count(ChunkExtraction.id),
                   func.count(ChunkExtraction.id).filter(
                       ChunkExtraction.status == ChunkStatus.OK))
            .where(ChunkExtraction.run_id == run_id, ChunkExtraction.worker.is_not(None))
            .group_by(ChunkExtraction.worker).order_by(ChunkExtraction.worker))
    ]
    return {**_run_row(run), "heartbeat_at": run.heartbeat_at, "pid": run.pid,
            "host": run.host, "error": run.error, "calls": totals.calls,
            "prompt_tokens": totals.prompt_tokens, "completion_tokens": totals.completion_tokens,
            "thinking_tokens": totals.thinking_tokens,
            "llm_seconds": round(totals.latency_ms / 1000, 3),
            "profiles_used": [_masked(p) for p in run.profiles_used],
            "calls_by_revision": by_revision, "workers": by_worker, "failed_chunks": failures}


def vocabulary(session: Session) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "category": t.category, "direction": t.direction,
         "description": t.description}
        for t in session.scalars(select(RelationshipType).order_by(
            RelationshipType.category, RelationshipType.name))
    ]


def proposals(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "occurrences": p.occurrences, "example": p.example,
         "last_seen": p.last_seen}
        for p in session.scalars(select(RelationshipTypeProposal).order_by(
            RelationshipTypeProposal.occurrences.desc(), RelationshipTypeProposal.name)
            .limit(_limit(limit)))
    ]


def _run_graph(session: Session, run_id: int) -> tuple[set[str], dict[tuple[str, str], set[str]]]:
    """Concepts and typed edges a run has evidence for (labels, (source, target) -> types)."""
    concepts = set(session.scalars(
        select(Concept.label).join(Evidence, Evidence.concept_id == Concept.id)
        .where(Evidence.run_id == run_id).distinct()))
    source, target = aliased(Concept), aliased(Concept)
    edges: dict[tuple[str, str], set[str]] = {}
    for s, t, g in session.execute(
        select(source.label, RelationshipType.name, target.label)
        .select_from(Evidence)
        .join(Relationship, Relationship.id == Evidence.relationship_id)
        .join(RelationshipType, RelationshipType.id == Relationship.type_id)
        .join(source, source.id == Relationship.source_id)
        .join(target, target.id == Relationship.target_id)
        .where(Evidence.run_id == run_id).distinct()
    ):
        edges.setdefault((s, g), set()).add(t)
    return concepts, edges


def runs_diff(session: Session, run_a: int, run_b: int) -> dict[str, Any]:
    """The graph difference between two runs: concepts and relationships added, removed,
    changed (same pair of concepts, different types)."""
    for run_id in (run_a, run_b):
        if session.get(Run, run_id) is None:
            raise NotFoundError(f"no run {run_id}; see `kg runs list`")
    docs_a = set(session.scalars(select(RunDocument.document_id).where(
        RunDocument.run_id == run_a)))
    docs_b = set(session.scalars(select(RunDocument.document_id).where(
        RunDocument.run_id == run_b)))
    concepts_a, edges_a = _run_graph(session, run_a)
    concepts_b, edges_b = _run_graph(session, run_b)

    def triples(edges: dict[tuple[str, str], set[str]], pairs: set[tuple[str, str]]) -> list:
        return sorted([s, t, g] for (s, g) in pairs for t in sorted(edges[(s, g)]))

    changed = sorted(pair for pair in set(edges_a) & set(edges_b)
                     if edges_a[pair] != edges_b[pair])
    return {
        "run_a": run_a, "run_b": run_b,
        "same_documents": docs_a == docs_b, "shared_documents": len(docs_a & docs_b),
        "concepts_added": sorted(concepts_b - concepts_a),
        "concepts_removed": sorted(concepts_a - concepts_b),
        "relationships_added": triples(edges_b, set(edges_b) - set(edges_a)),
        "relationships_removed": triples(edges_a, set(edges_a) - set(edges_b)),
        "relationships_changed": [
            {"source": s, "target": g, "types_a": sorted(edges_a[(s, g)]),
             "types_b": sorted(edges_b[(s, g)])} for s, g in changed],
        "concepts_in_both": len(concepts_a & concepts_b),
        "relationships_in_both": len(set(edges_a) & set(edges_b)) - len(changed),
    }


def _masked(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A run's profile snapshot with any password in its base URL masked (older rows)."""
    if snapshot.get("base_url"):
        return {**snapshot, "base_url": redact_url(snapshot["base_url"])}
    return snapshot
