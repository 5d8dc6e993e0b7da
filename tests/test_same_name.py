"""Same-name concepts of incompatible types through the graph writer (issue #24): 'Paris' the
place and 'Paris' the person end as 'Paris (place)' and 'Paris (person)' whichever chunk
commits first, both still found by 'Paris', on both databases."""

from __future__ import annotations

import json

from sqlalchemy import insert

from kg.db import Database
from kg.db.models import Chunk, utcnow
from kg.extraction.extract import Attempt, CallStatus, ChunkOutcome
from kg.extraction.store import ChunkRef, GraphWriter
from kg.extraction.validate import validate_reply
from kg.text import normalise_label
from tests.test_ingest import rows
from tests.test_store import BOUNDS, FILLER, Graph, Item


def typed_item(graph: Graph, concepts: list[tuple[str, str]]) -> Item:
    """A chunk whose model reply names these (label, type) concepts."""
    body = ". ".join(label for label, _t in concepts) + "." + FILLER
    with graph.db.engine.begin() as conn:
        chunk_id = conn.execute(insert(Chunk).returning(Chunk.id), {
            "document_id": graph.document_id, "ordinal": graph.ordinal, "text": body,
            "char_start": 0, "char_end": len(body), "token_estimate": 30}).scalar_one()
    graph.ordinal += 1
    reply = json.dumps({"concepts": [
        {"label": label, "type": kind, "description": "", "search_terms": [], "quote": label}
        for label, kind in concepts], "relationships": []})
    verdict = validate_reply(reply, body, graph.vocabulary, BOUNDS)
    assert verdict.usable and [c.type for c in verdict.concepts] == [k for _l, k in concepts]
    attempt = Attempt(1, CallStatus.OK, utcnow(), "qwen3:8b", response=reply)
    return ChunkRef(chunk_id, graph.document_id, 0), ChunkOutcome(
        chunk_id, graph.settings, [attempt], verdict)


def _graph(db: Database) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
    concepts = {label: kind for label, kind in rows(db, "SELECT label, type FROM concepts")}
    aliases = sorted(rows(db, "SELECT c.label, a.alias FROM concept_aliases a "
                              "JOIN concepts c ON c.id = a.concept_id"))
    return concepts, aliases


def test_same_name_types_are_qualified_whichever_commits_first(db: Database) -> None:
    chunks = [[("Paris", "place"), ("France", "place")], [("Paris", "person")],
              [("paris", "place")]]
    seen = []
    graph = Graph(db)
    for order in ([0, 1, 2], [1, 2, 0], [2, 1, 0]):
        with db.engine.begin() as conn:  # a fresh graph for each order
            for table in ("evidence", "concept_aliases", "concepts", "chunk_extractions"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
        writer = GraphWriter(db)
        for i in order:
            assert writer.commit(graph.run_id, [typed_item(graph, chunks[i])])[0].ok
        writer.close()
        seen.append(_graph(db))
    concepts, aliases = seen[0]
    assert concepts == {"Paris (place)": "place", "Paris (person)": "person", "France": "place"}
    assert ("Paris (place)", "Paris") in aliases and ("Paris (person)", "Paris") in aliases
    assert all(labels == concepts for labels, _a in seen)
    # A later writer, its index loaded from the database, finds each by type.
    writer = GraphWriter(db)
    assert writer.commit(graph.run_id, [typed_item(graph, [("PARIS", "person")])])[0].ok
    writer.close()
    assert _graph(db)[0] == concepts
    assert ("Paris (person)", "PARIS") in _graph(db)[1]
    assert normalise_label("Paris (person)") in {r[0] for r in rows(
        db, "SELECT norm_label FROM concepts")}
