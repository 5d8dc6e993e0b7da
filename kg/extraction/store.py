"""The single writer: one chunk's graph rows, evidence and calls commit in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kg.db import Database
from kg.db.models import (
    Call,
    ChunkExtraction,
    Concept,
    ConceptAlias,
    Evidence,
    Relationship,
    RelationshipTypeProposal,
    Run,
    utcnow,
)
from kg.extraction.extract import ChunkOutcome
from kg.extraction.resolve import ConceptIndex, label_rank, normalise_label


@dataclass(frozen=True)
class ChunkRef:
    id: int
    document_id: int
    char_start: int


@dataclass
class Committed:
    ok: bool
    new_concepts: int = 0
    new_relationships: int = 0


class GraphWriter:
    """Owns the in-memory concept and edge indexes; only ever used from one thread."""

    def __init__(self, db: Database, fuzzy_threshold: float = 92.0) -> None:
        self.db = db
        self.fuzzy_threshold = fuzzy_threshold
        self.index: ConceptIndex | None = None
        self.edges: dict[tuple[int, int, int], int] = {}

    def _load(self, session: Session) -> None:
        self.index = ConceptIndex.load(session, self.fuzzy_threshold)
        self.edges = {
            (s, t, g): rid
            for rid, s, t, g in session.execute(select(
                Relationship.id, Relationship.source_id, Relationship.type_id,
                Relationship.target_id))
        }

    def commit(self, run_id: int, chunk: ChunkRef, outcome: ChunkOutcome) -> Committed:
        """Write the outcome; retried once after reloading the indexes if another writer raced."""
        for attempt in (1, 2):
            try:
                with self.db.session() as session:
                    if self.index is None:
                        self._load(session)
                    staged = _Staged()
                    result = self._write(session, run_id, chunk, outcome, staged)
                self._merge(staged)
                return result
            except IntegrityError:
                # Another process created the same concept or edge meanwhile: reload and redo.
                self.index = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def record_calls(self, run_id: int, chunk: ChunkRef, outcome: ChunkOutcome) -> None:
        """Keep the calls of a chunk that a fatal error stopped; the chunk itself stays pending."""
        with self.db.session() as session:
            self._insert_calls(session, run_id, chunk.id, outcome)

    @staticmethod
    def _insert_calls(session: Session, run_id: int, chunk_id: int, outcome: ChunkOutcome) -> None:
        s = outcome.settings
        if not outcome.attempts:
            return
        session.execute(insert(Call), [
            {
                "run_id": run_id, "chunk_id": chunk_id, "attempt": a.attempt,
                "provider": s.provider, "model": a.model, "profile_name": s.profile_name,
                "profile_revision": s.revision, "status": a.status,
                "error_kind": a.error_kind, "finish_reason": a.finish_reason,
                "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                "thinking_tokens": a.thinking_tokens, "latency_ms": a.latency_ms,
                "load_ms": a.load_ms, "prompt_eval_ms": a.prompt_eval_ms,
                "eval_ms": a.eval_ms, "error": a.error, "response": a.response,
                "started_at": a.started_at,
            }
            for a in outcome.attempts
        ])

    def _merge(self, staged: _Staged) -> None:
        assert self.index is not None
        for norm, (cid, label) in staged.labels.items():
            self.index.add_label(norm, cid, label)
        for norm, cid, alias in staged.aliases:
            self.index.add_alias(norm, cid, alias)
        for cid, (label, norm) in staged.relabels.items():
            self.index.canonical[cid] = (label, norm)
            self.index.surface.add((cid, label))
        self.edges.update(staged.edges)

    def _write(self, session: Session, run_id: int, chunk: ChunkRef, outcome: ChunkOutcome,
               staged: _Staged) -> Committed:
        s = outcome.settings
        self._insert_calls(session, run_id, chunk.id, outcome)
        # A resumed run retries chunks that failed before: replace their failure record.
        previous = session.scalar(
            select(ChunkExtraction.status).where(ChunkExtraction.run_id == run_id,
                                                 ChunkExtraction.chunk_id == chunk.id))
        if previous is not None:
            session.execute(delete(ChunkExtraction).where(
                ChunkExtraction.run_id == run_id, ChunkExtraction.chunk_id == chunk.id))
        run_update: dict = {"heartbeat_at": utcnow()}
        if previous == "failed":
            run_update["chunks_failed"] = Run.chunks_failed - 1

        if not outcome.ok:
            session.add(ChunkExtraction(
                run_id=run_id, chunk_id=chunk.id, status="failed",
                attempts=len(outcome.attempts), profile_revision=s.revision, concepts=0,
                relationships=0, dropped={}, error=outcome.error, finished_at=utcnow()))
            run_update["chunks_failed"] = run_update.get("chunks_failed", Run.chunks_failed) + 1
            session.execute(update(Run).where(Run.id == run_id).values(**run_update))
            return Committed(ok=False)

        verdict = outcome.validation
        assert verdict is not None
        ids, new_concepts = self._concepts(session, verdict, staged)
        evidence = [
            {"run_id": run_id, "chunk_id": chunk.id, "concept_id": ids[c.label],
             "relationship_id": None, "quote": c.quote,
             "char_start": chunk.char_start + c.start, "char_end": chunk.char_start + c.end}
            for c in verdict.concepts
        ]
        new_edges = 0
        for r in verdict.relationships:
            source, target = ids[r.source], ids[r.target]
            if source == target:
                continue  # two surface forms that resolved to one concept
            if r.type.direction == "symmetric" and source > target:
                source, target = target, source
            key = (source, r.type.id, target)
            rid = staged.edges.get(key) or self.edges.get(key)
            if rid is None:
                rid = session.execute(insert(Relationship).returning(Relationship.id), {
                    "source_id": source, "type_id": r.type.id, "target_id": target,
                    "confidence": r.confidence}).scalar_one()
                staged.edges[key] = rid
                new_edges += 1
            else:
                session.execute(update(Relationship).where(
                    Relationship.id == rid, Relationship.confidence < r.confidence
                ).values(confidence=r.confidence))
            evidence.append({
                "run_id": run_id, "chunk_id": chunk.id, "concept_id": None,
                "relationship_id": rid, "quote": r.quote,
                "char_start": chunk.char_start + r.start, "char_end": chunk.char_start + r.end})
        if evidence:
            session.execute(insert(Evidence), evidence)
        for name, example in verdict.proposals:
            self._propose(session, name, example)
        session.add(ChunkExtraction(
            run_id=run_id, chunk_id=chunk.id, status="ok", attempts=len(outcome.attempts),
            profile_revision=s.revision, concepts=len(verdict.concepts),
            relationships=len(verdict.relationships), dropped=dict(verdict.dropped),
            error=None, finished_at=utcnow()))
        run_update["chunks_ok"] = Run.chunks_ok + 1
        session.execute(update(Run).where(Run.id == run_id).values(**run_update))
        return Committed(True, new_concepts, new_edges)

    def _concepts(self, session: Session, verdict, staged: _Staged) -> tuple[dict[str, int], int]:
        """Resolve each extracted concept to an id, creating new ones; returns (label->id, new).

        Every surface form that differs from the concept's label is recorded as an alias.
        """
        assert self.index is not None
        ids: dict[str, int] = {}
        new = 0
        for c in verdict.concepts:
            norm = normalise_label(c.label)
            label = c.label[:200]
            cid = staged.labels[norm][0] if norm in staged.labels else None
            if cid is None:
                hit = self.index.find(norm)
                cid = hit[0] if hit else None
            if cid is None:
                cid = session.execute(insert(Concept).returning(Concept.id), {
                    "label": label, "norm_label": norm,
                    "description": c.description, "search_terms": c.search_terms[:10],
                    "created_at": utcnow()}).scalar_one()
                staged.labels[norm] = (cid, label)
                new += 1
            else:
                self._record_surface(session, cid, norm, label, staged)
                self._enrich(session, cid, c)
            ids[c.label] = cid
        return ids, new

    def _record_surface(self, session: Session, cid: int, norm: str, label: str,
                        staged: _Staged) -> None:
        """Record a new spelling as an alias, or make it the label if it ranks higher."""
        assert self.index is not None
        created = {c: (lbl, n) for n, (c, lbl) in staged.labels.items()}
        current, current_norm = (staged.relabels.get(cid) or self.index.canonical.get(cid)
                                 or created[cid])
        if label == current:
            return
        if norm == current_norm and label_rank(label) > label_rank(current):
            session.execute(update(Concept).where(Concept.id == cid).values(label=label))
            session.execute(delete(ConceptAlias).where(ConceptAlias.concept_id == cid,
                                                       ConceptAlias.alias == label))
            session.execute(insert(ConceptAlias), {
                "concept_id": cid, "alias": current, "norm_alias": current_norm})
            staged.relabels[cid] = (label, norm)
            staged.aliases.append((current_norm, cid, current))
            return
        known = (cid, label) in self.index.surface or any(
            (a_cid, a_label) == (cid, label) for _n, a_cid, a_label in staged.aliases)
        if not known:
            session.execute(insert(ConceptAlias), {
                "concept_id": cid, "alias": label, "norm_alias": norm})
            staged.aliases.append((norm, cid, label))

    def _enrich(self, session: Session, cid: int, c) -> None:
        """Fill an empty description and add new search terms to an existing concept."""
        row = session.execute(select(Concept.description, Concept.search_terms).where(
            Concept.id == cid)).one()
        terms = list(row.search_terms or [])
        merged = terms + [t for t in c.search_terms if t not in terms]
        values: dict = {}
        if not row.description and c.description:
            values["description"] = c.description
        if merged != terms:
            values["search_terms"] = merged[:10]
        if values:
            session.execute(update(Concept).where(Concept.id == cid).values(**values))

    def _propose(self, session: Session, name: str, example: str) -> None:
        now = utcnow()
        updated = session.execute(update(RelationshipTypeProposal).where(
            RelationshipTypeProposal.name == name).values(
            occurrences=RelationshipTypeProposal.occurrences + 1, last_seen=now))
        if updated.rowcount == 0:
            session.execute(insert(RelationshipTypeProposal), {
                "name": name[:64], "occurrences": 1, "example": example[:300],
                "first_seen": now, "last_seen": now})


class _Staged:
    """Index additions of the transaction in progress, applied only after it commits."""

    def __init__(self) -> None:
        self.labels: dict[str, tuple[int, str]] = {}
        self.aliases: list[tuple[str, int, str]] = []
        self.relabels: dict[int, tuple[str, str]] = {}
        self.edges: dict[tuple[int, int, int], int] = {}
