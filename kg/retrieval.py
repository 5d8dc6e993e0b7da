"""What the graph knows about a question: matching concepts, quotes and chunks (full text), their
neighbourhood in the graph (bounded hops, strongest edges first), their literal values (a year,
a number: issue #20's attributes), then the verbatim evidence of what was kept, within a token
budget. No LLM: `kg ask --no-llm` shows exactly this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from kg import search, sourcemap
from kg.db.scope import collection_of
from kg.errors import NotFoundError, UsageError
from kg.providers.base import estimate_tokens

MAX_HOPS = 3
DEFAULT_BUDGET = 2000  # tokens of evidence handed to the model
SEED_CONCEPTS = 8  # concepts matched by name
SEED_QUOTES = 30  # quotes matched by text
SEED_CHUNKS = 10  # chunks matched by text
EDGES_PER_HOP = 25  # strongest edges kept at each hop
MAX_EVIDENCE = 60
MAX_VALUES = 40  # literal values of the concepts found, nearest concepts first


@dataclass
class Options:
    """Knobs of one retrieval (bounded so that a question cannot walk the whole graph)."""

    budget: int = DEFAULT_BUDGET
    hops: int = 1
    seeds: int = SEED_CONCEPTS
    edges_per_hop: int = EDGES_PER_HOP

    def check(self) -> Options:
        if not 100 <= self.budget <= 100_000:
            raise UsageError(f"--budget must be between 100 and 100000 tokens (got {self.budget})")
        if not 0 <= self.hops <= MAX_HOPS:
            raise UsageError(f"--hops must be between 0 and {MAX_HOPS} (got {self.hops})")
        return self


@dataclass
class _Walk:
    """Concepts found so far (id -> distance from a match) and edges kept (id -> row)."""

    distance: dict[int, int] = field(default_factory=dict)
    score: dict[int, float] = field(default_factory=dict)
    edges: dict[int, dict[str, Any]] = field(default_factory=dict)


def _rows(session: Session, sql: str, **params: Any) -> list[Any]:
    return list(session.execute(text(sql), params))


def _ints(values: Iterable[int]) -> str:
    return ", ".join(str(int(v)) for v in values) or "NULL"


def _edges(session: Session, concept_ids: Sequence[int], skip: set[int],
           limit: int) -> list[dict[str, Any]]:
    """The strongest edges touching these concepts (most evidence, then confidence)."""
    if not concept_ids:
        return []
    cid = collection_of(session)
    ids = _ints(concept_ids)
    rows = _rows(session, f"""
        SELECT r.id, r.source_id, s.label AS source, rt.name AS type, r.target_id,
               t.label AS target, r.confidence,
               (SELECT count(*) FROM evidence e WHERE e.relationship_id = r.id
                AND {search.live('e')}) AS evidence
        FROM relationships r
        JOIN relationship_types rt ON rt.id = r.type_id
        JOIN concepts s ON s.id = r.source_id
        JOIN concepts t ON t.id = r.target_id
        WHERE r.collection_id = :cid AND (r.source_id IN ({ids}) OR r.target_id IN ({ids}))
          AND {search.live('r')} AND {search.live('s')} AND {search.live('t')}
        ORDER BY evidence DESC, r.confidence DESC, r.id
        LIMIT :n""", cid=cid, n=limit + len(skip))
    return [dict(r._mapping) for r in rows if r.id not in skip][:limit]


def _walk(session: Session, seeds: dict[int, float], options: Options) -> _Walk:
    walk = _Walk(distance=dict.fromkeys(seeds, 0), score=dict(seeds))
    frontier = list(seeds)
    for hop in range(1, options.hops + 1):
        found: list[int] = []
        for edge in _edges(session, frontier, set(walk.edges), options.edges_per_hop):
            walk.edges[edge["id"]] = {**edge, "hop": hop}
            for end in (edge["source_id"], edge["target_id"]):
                if end not in walk.distance:
                    walk.distance[end] = hop
                    walk.score[end] = 0.0
                    found.append(end)
        frontier = found
        if not frontier:
            break
    return walk


def _evidence_rows(session: Session, where: str, limit: int | None = None) -> list[Any]:
    cid = collection_of(session)
    return _rows(session, f"""
        SELECT e.id, e.quote, e.char_start, e.char_end, e.chunk_id, e.concept_id,
               e.relationship_id, d.id AS document_id, d.path AS document
        FROM evidence e JOIN chunks ch ON ch.id = e.chunk_id
        JOIN documents d ON d.id = ch.document_id
        WHERE e.collection_id = :cid AND {search.live('e')} AND {search.live('d')} AND ({where})
        ORDER BY e.id{'' if limit is None else f' LIMIT {int(limit)}'}""", cid=cid)


def _first_per(session: Session, key: str, ids: Iterable[int]) -> dict[int, Any]:
    """The first live quote of each concept, relationship or chunk (`key`): one row each,
    however many quotes a much-mentioned concept has."""
    first = (f"SELECT min(e2.id) FROM evidence e2 WHERE e2.{key} IN ({_ints(ids)}) "
             f"AND e2.collection_id = :cid AND {search.live('e2')} GROUP BY e2.{key}")
    return {getattr(r, key): r for r in _evidence_rows(session, f"e.id IN ({first})")}


def retrieve(session: Session, question: str, options: Options | None = None) -> dict[str, Any]:
    """The subgraph and the evidence for a question, ranked, within `options.budget` tokens."""
    options = (options or Options()).check()
    words = search.terms(question, "any")
    concepts = search.concept_hits(session, words, "any", options.seeds)
    quotes = search.source_hits(session, "evidence", words, "any", SEED_QUOTES)
    chunks = search.source_hits(session, "chunk", words, "any", SEED_CHUNKS)
    quote_rows = {r.id: r for r in _evidence_rows(
        session, f"e.id IN ({_ints(h.id for h in quotes)})")} if quotes else {}

    # Seeds: concepts named by the question, then the subjects of matching quotes.
    seeds: dict[int, float] = {}
    for rank, hit in enumerate(concepts):
        seeds[hit.id] = seeds.get(hit.id, 0.0) + 1.0 / (search.RRF_K + rank) * 2
    quote_edges = [r.relationship_id for r in quote_rows.values() if r.relationship_id]
    edge_ends = {r.id: (r.source_id, r.target_id) for r in _rows(
        session, f"SELECT id, source_id, target_id FROM relationships WHERE id IN "
                 f"({_ints(quote_edges)})")} if quote_edges else {}
    for rank, hit in enumerate(quotes):
        row = quote_rows.get(hit.id)
        if row is None:
            continue
        ends = (row.concept_id,) if row.concept_id else edge_ends.get(row.relationship_id, ())
        for end in ends:
            seeds[end] = seeds.get(end, 0.0) + 1.0 / (search.RRF_K + rank)
    ranked_seeds = dict(sorted(seeds.items(), key=lambda kv: -kv[1])[:options.seeds * 2])
    walk = _walk(session, ranked_seeds, options)

    # Evidence, most relevant first: quotes that match the question, then the best quote of
    # each kept edge (closest first), of each seed concept, of each matching chunk.
    ordered: list[Any] = [quote_rows[h.id] for h in quotes if h.id in quote_rows]
    edges = sorted(walk.edges.values(), key=lambda e: (
        e["hop"], -(walk.score.get(e["source_id"], 0) + walk.score.get(e["target_id"], 0)),
        -e["evidence"], -e["confidence"]))
    if edges:
        by_edge = _first_per(session, "relationship_id", (e["id"] for e in edges))
        ordered += [by_edge[e["id"]] for e in edges if e["id"] in by_edge]
    if ranked_seeds:
        by_concept = _first_per(session, "concept_id", ranked_seeds)
        ordered += [by_concept[c] for c in ranked_seeds if c in by_concept]
    if chunks:
        by_chunk = _first_per(session, "chunk_id", (h.id for h in chunks))
        ordered += [by_chunk[h.id] for h in chunks if h.id in by_chunk]

    evidence: list[Any] = []
    used, seen = 0, set()
    for row in ordered:
        if row.id in seen:
            continue
        cost = estimate_tokens(row.quote) + 12  # the quote and its reference line
        if used + cost > options.budget or len(evidence) >= MAX_EVIDENCE:
            continue
        seen.add(row.id)
        used += cost
        evidence.append(row)
    return _result(session, question, words, walk, evidence, chunks, used, options)


def _result(session: Session, question: str, words: list[str], walk: _Walk,
            evidence: list[Any], chunks: list[search.Hit], used: int,
            options: Options) -> dict[str, Any]:
    labels = {r.id: (r.label, r.description) for r in _rows(
        session, f"SELECT id, label, description FROM concepts WHERE id IN "
                 f"({_ints(walk.distance)})")} if walk.distance else {}
    edges = {e["id"]: e for e in walk.edges.values()}
    maps = {r.id: r.source_map for r in _rows(
        session, f"SELECT id, source_map FROM documents WHERE source_map IS NOT NULL AND id IN "
                 f"({_ints({r.document_id for r in evidence})})")} if evidence else {}
    items = []
    for row in evidence:
        if row.concept_id:
            subject = labels.get(row.concept_id, (None,))[0]
            if subject is None:
                subject = session.execute(text("SELECT label FROM concepts WHERE id = :i"),
                                          {"i": row.concept_id}).scalar()
        else:
            edge = edges.get(row.relationship_id)
            subject = (f"{edge['source']} -{edge['type']}-> {edge['target']}" if edge
                       else _edge_label(session, row.relationship_id))
        item: dict[str, Any] = {
            "id": row.id, "quote": row.quote, "subject": subject, "document": row.document,
            "document_id": row.document_id, "chunk_id": row.chunk_id,
            "char_start": row.char_start, "char_end": row.char_end,
            "concept_id": row.concept_id, "relationship_id": row.relationship_id}
        source_map = maps.get(row.document_id)
        if source_map is not None:
            places = sourcemap.places(_json(source_map), row.char_start, row.char_end)
            item["pages"] = sorted({p.page for p in places})
        items.append(item)
    concepts = [{"id": c, "label": labels.get(c, ("?", ""))[0],
                 "description": labels.get(c, ("", ""))[1], "distance": d,
                 "score": round(walk.score.get(c, 0.0), 5)}
                for c, d in sorted(walk.distance.items(),
                                   key=lambda kv: (kv[1], -walk.score.get(kv[0], 0.0)))]
    return {"question": question, "terms": words, "hops": options.hops,
            "budget": options.budget, "tokens": used, "concepts": concepts,
            "relationships": sorted(edges.values(), key=lambda e: (e["hop"], e["id"])),
            "attributes": _values(session, [c["id"] for c in concepts]),
            "evidence": items,
            "chunks": [{"id": h.id, "snippet": h.snippet, "score": round(h.score, 4)}
                       for h in chunks]}


def _values(session: Session, concept_ids: list[int]) -> list[dict[str, Any]]:
    """The live literal values of these concepts (nearest first, as listed), with how often
    each was read: "when was X established" is answered by an attribute, not an edge."""
    if not concept_ids:
        return []
    rows = _rows(session, f"""
        SELECT a.concept_id, c.label, a.name, a.datatype, a.value, a.normalised,
               (SELECT count(*) FROM attribute_evidence e WHERE e.attribute_id = a.id
                AND {search.live('e')}) AS evidence
        FROM concept_attributes a JOIN concepts c ON c.id = a.concept_id
        WHERE a.collection_id = :cid AND {search.live('a')}
          AND a.concept_id IN ({_ints(concept_ids)})""", cid=collection_of(session))
    rank = {cid: i for i, cid in enumerate(concept_ids)}
    rows.sort(key=lambda r: (rank[r.concept_id], r.name, r.normalised))
    return [{"concept_id": r.concept_id, "concept": r.label, "name": r.name,
             "datatype": r.datatype, "value": r.value, "normalised": r.normalised,
             "evidence": r.evidence} for r in rows[:MAX_VALUES]]


def _edge_label(session: Session, relationship_id: int) -> str:
    row = session.execute(text("""
        SELECT s.label AS source, rt.name AS type, t.label AS target FROM relationships r
        JOIN relationship_types rt ON rt.id = r.type_id JOIN concepts s ON s.id = r.source_id
        JOIN concepts t ON t.id = r.target_id WHERE r.id = :i"""), {"i": relationship_id}).first()
    return f"{row.source} -{row.type}-> {row.target}" if row else "?"


def _json(value: Any) -> Any:
    # Text SQL hands back JSON as a string on SQLite and as an object on PostgreSQL.
    if isinstance(value, str):
        import json

        return json.loads(value)
    return value


def evidence_in_chunk(session: Session, evidence_id: int) -> dict[str, Any]:
    """One evidence row with the text of its chunk and where the quote sits in it (offsets
    within the chunk), to show the quote highlighted in context."""
    row = session.execute(text("""
        SELECT e.id, e.quote, e.char_start, e.char_end, e.concept_id, e.relationship_id,
               ch.id AS chunk_id, ch.text AS chunk, ch.char_start AS chunk_start,
               d.id AS document_id, d.path AS document, d.source_map
        FROM evidence e JOIN chunks ch ON ch.id = e.chunk_id
        JOIN documents d ON d.id = ch.document_id
        WHERE e.id = :i AND e.collection_id = :cid"""),
        {"i": evidence_id, "cid": collection_of(session)}).first()
    if row is None:
        raise NotFoundError(f"no evidence {evidence_id} in this collection")
    start = row.char_start - row.chunk_start
    end = row.char_end - row.chunk_start
    if row.chunk[start:end] != row.quote:  # offsets from another version of the text
        found = row.chunk.find(row.quote)
        start, end = (found, found + len(row.quote)) if found >= 0 else (0, 0)
    data: dict[str, Any] = {
        "id": row.id, "quote": row.quote, "document": row.document,
        "document_id": row.document_id, "chunk_id": row.chunk_id, "chunk": row.chunk,
        "char_start": row.char_start, "char_end": row.char_end,
        "quote_start": start, "quote_end": end, "concept_id": row.concept_id,
        "relationship_id": row.relationship_id}
    if row.source_map is not None:
        places = sourcemap.places(_json(row.source_map), row.char_start, row.char_end)
        data["pages"] = sorted({p.page for p in places})
    return data
