"""The single writer: chunk outcomes become graph rows, evidence and calls, atomically.

Everything that has landed when the writer gets to it is committed in one transaction, each
chunk whole (a chunk's rows and its calls always share the transaction). Resolution is
planned in memory first (the writer owns the concept and edge indexes), then written with a
handful of batched statements for the whole group, so the cost per chunk falls as the server
gets faster. Index changes are applied only after the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

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
from kg.extraction.validate import Validation

CALLS = Call.__table__
CONCEPTS = Concept.__table__
ALIASES = ConceptAlias.__table__
EDGES = Relationship.__table__
EVIDENCE = Evidence.__table__
EXTRACTIONS = ChunkExtraction.__table__
PROPOSALS = RelationshipTypeProposal.__table__
RUNS = Run.__table__
MAX_TERMS = 10

Ref = int | str  # an existing concept id, or the normalised label of one created in this group
EdgeKey = tuple[int, int, int]


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


@dataclass
class _Plan:
    """What a group of chunks adds, decided before a single statement runs."""

    new_concepts: dict[str, dict[str, Any]] = field(default_factory=dict)  # norm -> row
    aliases: list[tuple[str, Ref, str]] = field(default_factory=list)  # (norm, ref, alias)
    relabels: dict[int, tuple[str, str, str, str]] = field(default_factory=dict)
    enrich: dict[int, dict[str, Any]] = field(default_factory=dict)
    new_ids: dict[str, int] = field(default_factory=dict)  # norm -> id once inserted
    new_edges: dict[EdgeKey, float] = field(default_factory=dict)
    edge_ids: dict[EdgeKey, tuple[int, float]] = field(default_factory=dict)
    raises: dict[EdgeKey, float] = field(default_factory=dict)  # known edge -> higher confidence

    def cid(self, ref: Ref) -> int:
        return ref if isinstance(ref, int) else self.new_ids[ref]


class GraphWriter:
    """Owns the in-memory concept and edge indexes; only ever used from one thread."""

    def __init__(self, db: Database, fuzzy_threshold: float = 92.0) -> None:
        self.db = db
        self.fuzzy_threshold = fuzzy_threshold
        self.index: ConceptIndex | None = None
        self.edges: dict[EdgeKey, tuple[int, float]] = {}
        self.failed_before: dict[int, set[int]] = {}  # run -> chunks with a failure row

    def _load(self, conn: Connection) -> None:
        self.index = ConceptIndex.load(conn, self.fuzzy_threshold)
        self.edges = {
            (s, t, g): (rid, conf)
            for rid, s, t, g, conf in conn.execute(select(
                EDGES.c.id, EDGES.c.source_id, EDGES.c.type_id, EDGES.c.target_id,
                EDGES.c.confidence))
        }

    def commit(self, run_id: int, items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        """Write the outcomes in one transaction; redone once if another writer raced us."""
        for attempt in (1, 2):
            try:
                with self.db.transaction() as conn:
                    if self.index is None:
                        self._load(conn)
                    if run_id not in self.failed_before:
                        self.failed_before[run_id] = set(conn.scalars(
                            select(EXTRACTIONS.c.chunk_id).where(
                                EXTRACTIONS.c.run_id == run_id,
                                EXTRACTIONS.c.status == "failed")))
                    results, plan = self._write(conn, run_id, items)
                self._merge(plan)
                failed = self.failed_before[run_id]
                for (chunk, _outcome), result in zip(items, results, strict=True):
                    (failed.add if not result.ok else failed.discard)(chunk.id)
                return results
            except IntegrityError:
                # Another process created the same concept or edge meanwhile: reload, redo.
                self.index = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def record_calls(self, run_id: int, chunk: ChunkRef, outcome: ChunkOutcome) -> None:
        """Keep the calls of a chunk that a fatal error stopped; the chunk itself stays pending."""
        with self.db.transaction() as conn:
            conn.execute(insert(CALLS), call_rows(run_id, chunk.id, outcome))

    # -- planning (no database) -----------------------------------------------------------
    def _plan_chunk(self, plan: _Plan, verdict: Validation) -> dict[str, Ref]:
        """Resolve each concept of one chunk to an existing id or a new concept of the group."""
        index = self.index
        assert index is not None
        refs: dict[str, Ref] = {}
        for c in verdict.concepts:
            norm = normalise_label(c.label)
            label = c.label[:200]
            if norm in plan.new_concepts:
                refs[c.label] = norm
                self._plan_new_spelling(plan, norm, label)
                continue
            hit = index.find(norm)
            if hit is None:
                plan.new_concepts[norm] = {
                    "label": label, "norm_label": norm, "description": c.description,
                    "search_terms": c.search_terms[:MAX_TERMS], "created_at": utcnow()}
                refs[c.label] = norm
                continue
            cid = hit[0]
            refs[c.label] = cid
            self._plan_surface(plan, cid, norm, label)
            self._plan_enrich(plan, cid, c.description, c.search_terms)
        return refs

    def _plan_new_spelling(self, plan: _Plan, norm: str, label: str) -> None:
        """A concept created earlier in this group met again under another spelling."""
        row = plan.new_concepts[norm]
        if label == row["label"]:
            return
        if label_rank(label) > label_rank(row["label"]):
            label, row["label"] = row["label"], label
        if all((ref, alias) != (norm, label) for _n, ref, alias in plan.aliases):
            plan.aliases.append((norm, norm, label))

    def _plan_surface(self, plan: _Plan, cid: int, norm: str, label: str) -> None:
        index = self.index
        assert index is not None
        current, current_norm = (plan.relabels[cid][:2] if cid in plan.relabels
                                 else index.canonical[cid])
        if label == current:
            return
        if norm == current_norm and label_rank(label) > label_rank(current):
            # Same concept, better spelling: it becomes the label, the old one an alias.
            old = plan.relabels.get(cid, (None, None, current, current_norm))
            plan.relabels[cid] = (label, norm, current, current_norm)
            if old[0] is not None:  # an earlier relabel in this group: keep its loser too
                plan.aliases.append((old[3], cid, old[2]))
            return
        if (cid, label) not in index.surface and all(
            (ref, alias) != (cid, label) for _n, ref, alias in plan.aliases
        ):
            plan.aliases.append((norm, cid, label))

    def _plan_enrich(self, plan: _Plan, cid: int, description: str, terms: list[str]) -> None:
        index = self.index
        assert index is not None
        values = plan.enrich.setdefault(cid, {})
        if description and cid not in index.described and "description" not in values:
            values["description"] = description
        known = values.get("search_terms", index.terms.get(cid, []))
        merged = known + [t for t in terms if t not in known]
        if merged[:MAX_TERMS] != known[:MAX_TERMS]:
            values["search_terms"] = merged[:MAX_TERMS]
        if not values:
            del plan.enrich[cid]

    def _plan_edges(self, plan: _Plan, verdict: Validation,
                    refs: dict[str, Ref]) -> list[tuple[EdgeKey, Any]]:
        """Edge keys of one chunk (after concept ids exist); new edges and confidence raises."""
        sightings = []
        for r in verdict.relationships:
            source, target = plan.cid(refs[r.source]), plan.cid(refs[r.target])
            if source == target:
                continue  # two spellings that resolved to one concept
            if r.type.direction == "symmetric" and source > target:
                source, target = target, source
            key = (source, r.type.id, target)
            sightings.append((key, r))
            known = self.edges.get(key)
            if known is None:
                plan.new_edges[key] = max(plan.new_edges.get(key, 0.0), r.confidence)
            elif r.confidence > max(known[1], plan.raises.get(key, 0.0)):
                plan.raises[key] = r.confidence
        return sightings

    # -- writing ----------------------------------------------------------------------------
    def _write(self, conn: Connection, run_id: int,
               items: list[tuple[ChunkRef, ChunkOutcome]]) -> tuple[list[Committed], _Plan]:
        plan = _Plan()
        failed_before = self.failed_before[run_id]
        calls: list[dict[str, Any]] = []
        extractions: list[dict[str, Any]] = []
        results: list[Committed] = []
        good: list[tuple[ChunkRef, Validation, dict[str, Ref], int]] = []
        retried = [chunk.id for chunk, _o in items if chunk.id in failed_before]
        ok_count = failed_count = 0
        for chunk, outcome in items:
            calls += call_rows(run_id, chunk.id, outcome)
            row = {"run_id": run_id, "chunk_id": chunk.id, "attempts": len(outcome.attempts),
                   "profile_revision": outcome.settings.revision, "finished_at": utcnow()}
            if outcome.validation is None:
                extractions.append({**row, "status": "failed", "concepts": 0,
                                    "relationships": 0, "dropped": {}, "error": outcome.error})
                failed_count += 1
                results.append(Committed(ok=False))
                continue
            verdict = outcome.validation
            before = len(plan.new_concepts)
            refs = self._plan_chunk(plan, verdict)
            extractions.append({**row, "status": "ok", "concepts": len(verdict.concepts),
                                "relationships": len(verdict.relationships),
                                "dropped": dict(verdict.dropped), "error": None})
            ok_count += 1
            results.append(Committed(True, len(plan.new_concepts) - before))
            good.append((chunk, verdict, refs, len(results) - 1))

        if calls:
            conn.execute(insert(CALLS), calls)
        if retried:
            # A resumed run retries chunks that failed before: replace their failure records.
            conn.execute(delete(EXTRACTIONS).where(EXTRACTIONS.c.run_id == run_id,
                                                   EXTRACTIONS.c.chunk_id.in_(retried)))
        self._write_concepts(conn, plan)
        evidence: list[dict[str, Any]] = []
        sightings_by_chunk = []
        for chunk, verdict, refs, position in good:
            new_before = len(plan.new_edges)
            sightings_by_chunk.append((chunk, self._plan_edges(plan, verdict, refs)))
            results[position].new_relationships = len(plan.new_edges) - new_before
            evidence += [
                {"run_id": run_id, "chunk_id": chunk.id, "concept_id": plan.cid(refs[c.label]),
                 "relationship_id": None, "quote": c.quote,
                 "char_start": chunk.char_start + c.start, "char_end": chunk.char_start + c.end}
                for c in verdict.concepts
            ]
        self._write_edges(conn, plan)
        for chunk, sightings in sightings_by_chunk:
            for key, r in sightings:
                rid = (plan.edge_ids.get(key) or self.edges[key])[0]
                evidence.append({
                    "run_id": run_id, "chunk_id": chunk.id, "concept_id": None,
                    "relationship_id": rid, "quote": r.quote,
                    "char_start": chunk.char_start + r.start,
                    "char_end": chunk.char_start + r.end})
        if evidence:
            conn.execute(insert(EVIDENCE), evidence)
        for _chunk, verdict, _refs, _p in good:
            for name, example in verdict.proposals:
                self._propose(conn, name, example)
        conn.execute(insert(EXTRACTIONS), extractions)
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
            heartbeat_at=utcnow(), chunks_ok=RUNS.c.chunks_ok + ok_count,
            chunks_failed=RUNS.c.chunks_failed + failed_count - len(retried)))
        return results, plan

    def _write_concepts(self, conn: Connection, plan: _Plan) -> None:
        if plan.new_concepts:
            rows = list(plan.new_concepts.values())
            ids = conn.execute(
                insert(CONCEPTS).returning(CONCEPTS.c.id, sort_by_parameter_order=True),
                rows).all()
            for row, values in zip(ids, rows, strict=True):
                plan.new_ids[values["norm_label"]] = row.id
        for cid, (label, _norm, old, old_norm) in plan.relabels.items():
            conn.execute(update(CONCEPTS).where(CONCEPTS.c.id == cid).values(label=label))
            conn.execute(delete(ALIASES).where(ALIASES.c.concept_id == cid,
                                               ALIASES.c.alias == label))
            plan.aliases.append((old_norm, cid, old))
        if plan.aliases:
            conn.execute(insert(ALIASES), [
                {"concept_id": plan.cid(ref), "alias": alias, "norm_alias": norm}
                for norm, ref, alias in plan.aliases])
        for cid, values in plan.enrich.items():
            conn.execute(update(CONCEPTS).where(CONCEPTS.c.id == cid).values(**values))

    def _write_edges(self, conn: Connection, plan: _Plan) -> None:
        if plan.new_edges:
            keys = list(plan.new_edges)
            rows = conn.execute(
                insert(EDGES).returning(EDGES.c.id, sort_by_parameter_order=True),
                [{"source_id": k[0], "type_id": k[1], "target_id": k[2],
                  "confidence": plan.new_edges[k]} for k in keys]).all()
            for key, row in zip(keys, rows, strict=True):
                plan.edge_ids[key] = (row.id, plan.new_edges[key])
        if plan.raises:
            conn.execute(
                update(EDGES).where(EDGES.c.id == bindparam("rid")).values(
                    confidence=bindparam("conf")),
                [{"rid": self.edges[key][0], "conf": conf} for key, conf in plan.raises.items()])

    def _propose(self, conn: Connection, name: str, example: str) -> None:
        now = utcnow()
        updated = conn.execute(update(PROPOSALS).where(PROPOSALS.c.name == name).values(
            occurrences=PROPOSALS.c.occurrences + 1, last_seen=now))
        if updated.rowcount == 0:
            conn.execute(insert(PROPOSALS), {
                "name": name[:64], "occurrences": 1, "example": example[:300],
                "first_seen": now, "last_seen": now})

    def _merge(self, plan: _Plan) -> None:
        """Apply a committed plan to the in-memory indexes."""
        index = self.index
        assert index is not None
        for norm, values in plan.new_concepts.items():
            cid = plan.new_ids[norm]
            index.add_label(norm, cid, values["label"])
            if values["description"]:
                index.described.add(cid)
            index.terms[cid] = list(values["search_terms"])
        for norm, ref, alias in plan.aliases:
            index.add_alias(norm, plan.cid(ref), alias)
        for cid, (label, norm, _old, _old_norm) in plan.relabels.items():
            index.canonical[cid] = (label, norm)
            index.surface.add((cid, label))
        for cid, values in plan.enrich.items():
            if values.get("description"):
                index.described.add(cid)
            if "search_terms" in values:
                index.terms[cid] = values["search_terms"]
        self.edges.update(plan.edge_ids)
        for key, conf in plan.raises.items():
            self.edges[key] = (self.edges[key][0], conf)


def call_rows(run_id: int | None, chunk_id: int | None,
              outcome: ChunkOutcome) -> list[dict[str, Any]]:
    """`calls` rows for every attempt of an outcome (run and chunk are None in evaluations)."""
    s = outcome.settings
    return [
        {
            "run_id": run_id, "chunk_id": chunk_id, "attempt": a.attempt,
            "provider": s.provider, "model": a.model, "profile_name": s.profile_name,
            "profile_revision": s.revision, "status": a.status, "error_kind": a.error_kind,
            "finish_reason": a.finish_reason, "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens, "thinking_tokens": a.thinking_tokens,
            "latency_ms": a.latency_ms, "load_ms": a.load_ms,
            "prompt_eval_ms": a.prompt_eval_ms, "eval_ms": a.eval_ms, "error": a.error,
            "response": a.response, "started_at": a.started_at,
        }
        for a in outcome.attempts
    ]
