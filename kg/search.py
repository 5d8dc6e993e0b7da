"""Full-text search over concepts (label, description, search terms, aliases, the quotes their
literal values were read from), evidence quotes and chunk text, with the database's own engine:
SQLite FTS5 (bm25) or PostgreSQL tsvector (ts_rank_cd), both kept current by the database
(migrations 0018 and 0023), never by kg's writers.

Every query names the session's collection itself: these are text statements, which the
automatic ORM filter (kg.db.scope) does not reach.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from kg.db.scope import collection_of
from kg.errors import UsageError

KINDS = ("concept", "evidence", "chunk")
Mode = Literal["all", "any"]
MAX_TERMS = 32
MAX_QUERY_CHARS = 1000
# Highlight marks in snippets: plain brackets, readable on a terminal and easy to restyle.
MARK_OPEN, MARK_CLOSE = "[", "]"
# Words too common to find anything by. PostgreSQL's English configuration drops them anyway;
# FTS5 has no stop list, and on SQLite a question's "the" would match (and rank) every row.
_STOP = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not now of off on once only or other our ours ourselves out
over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves tell know give show
explain describe list name does did much many
"""
STOPWORDS = frozenset(_STOP.split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Kinds weigh differently when merged into one list: a concept named by the query is usually
# what a person looks for; a quote beats a raw chunk.
KIND_WEIGHT = {"concept": 1.2, "evidence": 1.0, "chunk": 0.9}
RRF_K = 60


@dataclass(frozen=True)
class Hit:
    """One ranked match: `score` is higher-is-better within its kind."""

    kind: str
    id: int
    score: float
    snippet: str


def terms(query: str, mode: Mode = "all") -> list[str]:
    """The words of a query, lower-cased and deduplicated; `any` (questions) drops stop words
    unless nothing else is left."""
    words = list(dict.fromkeys(w.casefold() for w in _WORD.findall(query)))
    if mode == "any":
        kept = [w for w in words if w not in STOPWORDS and len(w) > 1]
        words = kept or words
    return words[:MAX_TERMS]


def _check(query: str) -> str:
    query = query.strip()
    if not query:
        raise UsageError("the search text is empty; give some words to look for")
    if len(query) > MAX_QUERY_CHARS:
        raise UsageError(f"the search text is {len(query)} characters; keep it under "
                         f"{MAX_QUERY_CHARS}")
    return query


def _match(session: Session, words: Sequence[str], mode: Mode) -> str:
    if _dialect(session) == "postgresql":
        return (" | " if mode == "any" else " & ").join(words)
    # Quoted: every word is a string to FTS5, never an operator (OR, NOT, NEAR, column:).
    return (" OR " if mode == "any" else " ").join(f'"{w}"' for w in words)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _rows(session: Session, sql: str, **params: Any) -> list[Any]:
    return list(session.execute(text(sql), params))


def live(alias: str) -> str:
    """SQL: the row is live (issue #22: not retracted, not waiting for a version's cutover)."""
    return f"{alias}.valid_from IS NOT NULL AND {alias}.valid_to IS NULL"


# Only live rows are found: a retracted concept or quote (an older version of a document)
# stays in the tables and in the index, for history, but is no answer.
_SQLITE = {
    "concept": f"""
        SELECT concepts_fts.rowid AS id, -bm25(concepts_fts, 10.0, 2.0, 4.0, 0.0) AS score,
               snippet(concepts_fts, -1, :o, :c, '…', 12) AS snippet
        FROM concepts_fts JOIN concepts c ON c.id = concepts_fts.rowid
        WHERE concepts_fts MATCH :q AND concepts_fts.collection_id = :cid AND {live('c')}
        ORDER BY score DESC LIMIT :n""",
    "alias": f"""
        SELECT a.concept_id AS id, -bm25(concept_aliases_fts) * 5.0 AS score,
               snippet(concept_aliases_fts, 0, :o, :c, '…', 12) AS snippet
        FROM concept_aliases_fts JOIN concept_aliases a ON a.id = concept_aliases_fts.rowid
        JOIN concepts c ON c.id = a.concept_id
        WHERE concept_aliases_fts MATCH :q AND concept_aliases_fts.collection_id = :cid
          AND {live('c')}
        ORDER BY score DESC LIMIT :n""",
    # A literal value's quote finds the concept holding it ("1996" -> the academy established
    # then), weighed as a quote about it.
    "value": f"""
        SELECT a.concept_id AS id, -bm25(attribute_evidence_fts) AS score,
               snippet(attribute_evidence_fts, 0, :o, :c, '…', 16) AS snippet
        FROM attribute_evidence_fts
        JOIN attribute_evidence ae ON ae.id = attribute_evidence_fts.rowid
        JOIN concept_attributes a ON a.id = ae.attribute_id
        JOIN concepts c ON c.id = a.concept_id
        WHERE attribute_evidence_fts MATCH :q AND attribute_evidence_fts.collection_id = :cid
          AND {live('ae')} AND {live('c')}
        ORDER BY score DESC LIMIT :n""",
    "evidence": f"""
        SELECT evidence_fts.rowid AS id, -bm25(evidence_fts) AS score,
               snippet(evidence_fts, 0, :o, :c, '…', 16) AS snippet
        FROM evidence_fts JOIN evidence e ON e.id = evidence_fts.rowid
        WHERE evidence_fts MATCH :q AND evidence_fts.collection_id = :cid AND {live('e')}
        ORDER BY score DESC LIMIT :n""",
    "chunk": f"""
        SELECT chunks_fts.rowid AS id, -bm25(chunks_fts) AS score,
               snippet(chunks_fts, 0, :o, :c, '…', 16) AS snippet
        FROM chunks_fts JOIN chunks ch ON ch.id = chunks_fts.rowid
        JOIN documents d ON d.id = ch.document_id
        WHERE chunks_fts MATCH :q AND chunks_fts.collection_id = :cid AND {live('d')}
        ORDER BY score DESC LIMIT :n""",
}
_HEADLINE = "'StartSel=\"[\", StopSel=\"]\", MaxWords=24, MinWords=8, MaxFragments=1'"
# Per source: the table, the text its snippet is cut from (ts_headline is costly: only for the
# rows kept), a weight (as in the SQLite statements), and what keeps only live rows.
_PG: dict[str, tuple[str, str, int, str]] = {
    "concept": ("concepts", "t.label || ' ' || coalesce(t.description, '')", 2,
                f"AND {live('t')}"),
    "alias": ("concept_aliases", "t.alias", 5,
              f"JOIN concepts c ON c.id = t.concept_id AND {live('c')}"),
    "value": ("attribute_evidence", "t.quote", 1,
              f"JOIN concept_attributes a ON a.id = t.attribute_id AND {live('t')} "
              f"JOIN concepts c ON c.id = a.concept_id AND {live('c')}"),
    "evidence": ("evidence", "t.quote", 1, f"AND {live('t')}"),
    "chunk": ("chunks", "t.text", 1,
              f"JOIN documents d ON d.id = t.document_id AND {live('d')}"),
}


def _pg_sql(source: str) -> str:
    table, shown, weight, liveness = _PG[source]
    ident = {"alias": "t.concept_id", "value": "a.concept_id"}.get(source, "t.id")
    join, where = (liveness, "") if liveness.startswith("JOIN") else ("", liveness)
    return f"""
        WITH q AS (SELECT to_tsquery('english', :q) AS q),
        top AS (
            SELECT {ident} AS id, ts_rank_cd(t.search_vector, q.q) * {weight} AS score,
                   {shown} AS shown
            FROM {table} t {join} CROSS JOIN q
            WHERE t.search_vector @@ q.q AND t.collection_id = :cid {where}
            ORDER BY score DESC LIMIT :n)
        SELECT top.id, top.score, ts_headline('english', top.shown, q.q, {_HEADLINE}) AS snippet
        FROM top, q ORDER BY top.score DESC"""


def source_hits(session: Session, source: str, words: Sequence[str], mode: Mode,
                limit: int) -> list[Hit]:
    """Ranked matches in one source: concept, alias or value (as concept ids), evidence or
    chunk."""
    if not words or limit < 1:
        return []
    params = {"q": _match(session, words, mode), "cid": collection_of(session), "n": limit}
    if _dialect(session) == "postgresql":
        rows = _rows(session, _pg_sql(source), **params)
    else:
        rows = _rows(session, _SQLITE[source], o=MARK_OPEN, c=MARK_CLOSE, **params)
    kind = "concept" if source in ("alias", "value") else source
    return [Hit(kind, int(r.id), float(r.score), " ".join((r.snippet or "").split()))
            for r in rows]


def concept_hits(session: Session, words: Sequence[str], mode: Mode, limit: int) -> list[Hit]:
    """Concepts by label, description, search terms, alias or the quote of a literal value:
    each concept once, best first."""
    best: dict[int, Hit] = {}
    for hit in (source_hits(session, "concept", words, mode, limit)
                + source_hits(session, "alias", words, mode, limit)
                + source_hits(session, "value", words, mode, limit)):
        if hit.id not in best or hit.score > best[hit.id].score:
            best[hit.id] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:limit]


def hits(session: Session, words: Sequence[str], mode: Mode, limit: int,
         kinds: Sequence[str] = KINDS) -> dict[str, list[Hit]]:
    """Ranked hits per kind."""
    found: dict[str, list[Hit]] = {}
    for kind in kinds:
        found[kind] = (concept_hits(session, words, mode, limit) if kind == "concept"
                       else source_hits(session, kind, words, mode, limit))
    return found


def fuse(per_kind: dict[str, list[Hit]], limit: int) -> list[Hit]:
    """One list from several rankings (weighted reciprocal rank fusion): bm25 and ts_rank_cd
    scores of different sources are not on one scale, ranks are."""
    scored: list[tuple[float, int, Hit]] = []
    for kind, found in per_kind.items():
        for rank, hit in enumerate(found):
            scored.append((KIND_WEIGHT.get(kind, 1.0) / (RRF_K + rank), len(scored), hit))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [hit for _s, _i, hit in scored[:limit]]


def _details(session: Session, found: Sequence[Hit]) -> dict[tuple[str, int], dict[str, Any]]:
    """What to show with each hit: a concept's label, a quote's subject and document, a chunk's
    document and place."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    cid = collection_of(session)
    ids = {kind: [h.id for h in found if h.kind == kind] for kind in KINDS}
    if ids["concept"]:
        for r in _rows(session, "SELECT id, label, type FROM concepts WHERE collection_id = :cid "
                       f"AND id IN ({_ints(ids['concept'])})", cid=cid):
            out[("concept", r.id)] = {"title": r.label, "type": r.type, "document": None}
    if ids["evidence"]:
        for r in _rows(session, f"""
                SELECT e.id, coalesce(c.label, s.label || ' -' || rt.name || '-> ' || t.label)
                       AS title, d.path, e.char_start, e.char_end
                FROM evidence e JOIN chunks ch ON ch.id = e.chunk_id
                JOIN documents d ON d.id = ch.document_id
                LEFT JOIN concepts c ON c.id = e.concept_id
                LEFT JOIN relationships r ON r.id = e.relationship_id
                LEFT JOIN relationship_types rt ON rt.id = r.type_id
                LEFT JOIN concepts s ON s.id = r.source_id
                LEFT JOIN concepts t ON t.id = r.target_id
                WHERE e.collection_id = :cid AND e.id IN ({_ints(ids['evidence'])})""", cid=cid):
            out[("evidence", r.id)] = {"title": r.title, "document": r.path,
                                       "char_start": r.char_start, "char_end": r.char_end}
    if ids["chunk"]:
        for r in _rows(session, f"""
                SELECT ch.id, ch.ordinal, d.path, ch.char_start, ch.char_end
                FROM chunks ch JOIN documents d ON d.id = ch.document_id
                WHERE ch.collection_id = :cid AND ch.id IN ({_ints(ids['chunk'])})""", cid=cid):
            out[("chunk", r.id)] = {"title": f"chunk {r.ordinal}", "document": r.path,
                                    "char_start": r.char_start, "char_end": r.char_end}
    return out


def _ints(values: Sequence[int]) -> str:
    # Ids come from the database as ints: inlining them is safe, and one statement whatever
    # their number (no expanding bind parameters in text SQL).
    return ", ".join(str(int(v)) for v in values)


def search(session: Session, query: str, *, limit: int = 20,
           kinds: Sequence[str] = KINDS) -> dict[str, Any]:
    """`kg search`: concepts, evidence quotes and chunks matching every word of `query`,
    best first (if nothing has them all, those matching any)."""
    query = _check(query)
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"unknown kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
    words = terms(query, "all")
    mode: Mode = "all"
    per_kind = hits(session, words, mode, limit, kinds)
    if not any(per_kind.values()):
        mode = "any"
        per_kind = hits(session, terms(query, "any"), mode, limit, kinds)
    found = fuse(per_kind, limit)
    details = _details(session, found)
    rows = []
    for hit in found:
        info = details.get((hit.kind, hit.id), {})
        rows.append({"kind": hit.kind, "id": hit.id, "title": info.get("title"),
                     "snippet": hit.snippet, "document": info.get("document"),
                     "char_start": info.get("char_start"), "char_end": info.get("char_end"),
                     "score": round(hit.score, 4)})
    return {"query": query, "terms": words, "mode": mode, "hits": rows}
