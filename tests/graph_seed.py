"""Graphs to test the read side on: a real `kg ingest` against the fake Ollama server, or rows
inserted in bulk (hostile labels, large graphs) for the exports and the benchmark."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select, text

from kg.db import Database
from kg.db.models import (
    Chunk,
    Concept,
    ConceptAlias,
    Document,
    Evidence,
    Relationship,
    RelationshipType,
    Run,
    utcnow,
)
from kg.text import normalise_label
from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of, graph_reply

STORY = """# Baker Street

Sherlock Holmes lives at Baker Street in London with Doctor Watson. Mrs Hudson keeps the house
and Inspector Lestrade of Scotland Yard often calls for help with a difficult case.

# Enemies

Professor Moriarty runs a criminal network across London. Colonel Moran serves Moriarty.
"""

SMALL_CHUNKS = ["--chunk-tokens", "60", "--chunk-min", "20", "--chunk-max", "120",
                "--chunk-overlap", "0"]

# Labels that break naive writers: quotes, backslashes, newlines, statement ends, markup,
# comment starts, backticks, control characters, astral-plane Unicode.
HOSTILE = [
    "O'Brien's \"quoted\" name",
    "back\\slash \\' \\n literal",
    "two\nlines\r\nand a tab\there",
    "unicode é ß 中文 😀 \u2028 sep",
    "statement'; MATCH (n) DETACH DELETE n; //",
    "`backtick` ]]> <xml attr=\"x\"> & amp;",
    "/* not a comment */ -- nor this",
    "control \x01\x07 chars",
    "trailing backslash \\",
    "}) RETURN 1 UNION MATCH (m) SET m.x = '",
]


def use_server(kg: Any, url: str) -> None:
    """Point the active profile at a fake Ollama server."""
    result = kg("admin", "extraction", "set", "--profile", "test", "--provider", "ollama",
                "--model", "qwen3:8b", "--base-url", url, "--max-retries", "2",
                "--timeout", "5", "--activate")
    assert result.exit_code == 0, result.stderr


def ingest_story(kg: Any, tmp_path: Path, *extra: str, name: str = "story.md",
                 content: str = STORY) -> Path:
    """Ingest the story through the CLI; returns the document's path."""
    doc = tmp_path / name
    doc.write_text(content, encoding="utf-8")
    result = kg("ingest", str(doc), *SMALL_CHUNKS, *extra)
    assert result.exit_code == 0, result.stderr
    return doc


def add_concepts(db: Database, *concepts: tuple[str, str | None]) -> dict[str, int]:
    """Insert bare concepts, (label, type) each, as an ingest would have named them; their ids
    by label."""
    with db.session() as s:
        made = [Concept(label=label, norm_label=normalise_label(label), type=kind)
                for label, kind in concepts]
        s.add_all(made)
        s.flush()
        return {c.label: c.id for c in made}


def concept_labels(db: Database) -> set[str]:
    """The labels of every concept in the graph."""
    with db.session() as s:
        return {c.label for c in s.query(Concept)}


def rows(db: Database, sql: str, **params: object) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


@dataclass
class Bulk:
    run_id: int
    document_id: int
    concepts: int
    relationships: int
    evidence: int


def _copy(conn: Connection, table: str, columns: list[str], data: list[tuple[Any, ...]]) -> None:
    """PostgreSQL COPY: what makes a 300k-edge graph take seconds, not minutes."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor: Any = raw.cursor()
    with cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in data:
            copy.write_row(row)


def _put(conn: Connection, model: Any, columns: list[str], data: list[tuple[Any, ...]]) -> None:
    if not data:
        return
    if conn.dialect.name == "postgresql":
        _copy(conn, model.__tablename__, columns, data)
        return
    conn.execute(insert(model.__table__), [dict(zip(columns, row, strict=True)) for row in data])


def bulk_graph(db: Database, concepts: int, relationships: int, *,
               labels: list[str] | None = None, chunk_count: int = 100,
               aliases_per: int = 1) -> Bulk:
    """A graph written straight into the tables: `concepts` concepts (the first ones named by
    `labels`), `relationships` distinct edges (no self-loops), one evidence row per concept
    and per edge, spread over one document's chunks."""
    labels = list(labels or [])
    types = None
    with db.engine.begin() as conn:
        types = [(r.id, r.direction) for r in conn.execute(
            select(RelationshipType.id, RelationshipType.direction).order_by(RelationshipType.id))]
        run_id = conn.execute(insert(Run.__table__).values(
            status="completed", started_at=utcnow(), finished_at=utcnow(),
            heartbeat_at=utcnow(), pid=os.getpid(), host=socket.gethostname(),
            profile_name="bulk", profiles_used=[], options={}, documents=1,
            chunks_total=chunk_count, chunks_ok=chunk_count, chunks_failed=0)
            .returning(Run.id)).scalar_one()
        doc_id = conn.execute(insert(Document.__table__).values(
            path=f"/bulk/document-{run_id}.txt", sha256="0" * 64, size_bytes=chunk_count * 100,
            kind="text", status="ingested", chunk_count=chunk_count, created_at=utcnow())
            .returning(Document.id)).scalar_one()
        first_chunk = conn.scalar(select(Chunk.id).order_by(Chunk.id.desc()).limit(1)) or 0
        _put(conn, Chunk, ["id", "document_id", "ordinal", "text", "char_start", "char_end",
                           "token_estimate"],
             [(first_chunk + i + 1, doc_id, i, f"chunk {i} text", i * 100, i * 100 + 12, 3)
              for i in range(chunk_count)])
        base = conn.scalar(select(Concept.id).order_by(Concept.id.desc()).limit(1)) or 0
        now = utcnow()
        names = [labels[i] if i < len(labels) else f"Concept {base + i}" for i in range(concepts)]
        norms: set[str] = set()
        concept_rows = []
        for i, name in enumerate(names):
            norm = normalise_label(name) or f"concept {i}"
            if norm in norms:
                norm = f"{norm} {i}"
            norms.add(norm)
            concept_rows.append((base + i + 1, name[:200], norm[:200], f"About {name}",
                                 '["term"]' if conn.dialect.name == "postgresql" else ["term"],
                                 now))
        _put(conn, Concept, ["id", "label", "norm_label", "description", "search_terms",
                             "created_at"], concept_rows)
        _put(conn, ConceptAlias, ["concept_id", "alias", "norm_alias"],
             [(base + i + 1, f"{names[i]} alias {k}", f"{norms_i} alias {k}")
              for i, norms_i in enumerate(r[2] for r in concept_rows)
              for k in range(aliases_per)])
        edge_rows = []
        seen: set[tuple[int, int, int]] = set()
        offsets = [1, 17, 4099, 7, 31, 101, 257, 1021]
        k = 0
        while len(edge_rows) < relationships:
            s, lap = k % concepts, k // concepts
            t = (s + offsets[lap % len(offsets)] + lap // len(offsets)) % concepts
            type_id, direction = types[(k * 7) % len(types)]
            k += 1
            a, b = base + s + 1, base + t + 1
            if direction == "symmetric" and a > b:
                a, b = b, a
            if a == b or (a, type_id, b) in seen:
                continue
            seen.add((a, type_id, b))
            edge_rows.append((a, type_id, b, round(0.5 + (k % 50) / 100, 2)))
        edge_base = conn.scalar(select(Relationship.id).order_by(Relationship.id.desc())
                                .limit(1)) or 0
        _put(conn, Relationship, ["id", "source_id", "type_id", "target_id", "confidence"],
             [(edge_base + i + 1, *row) for i, row in enumerate(edge_rows)])
        evidence = [(run_id, first_chunk + 1 + i % chunk_count, base + i + 1, None,
                     f"quote of {names[i]}"[:300], 0, 5) for i in range(concepts)]
        evidence += [(run_id, first_chunk + 1 + i % chunk_count, None, edge_base + i + 1,
                      "edge quote", 0, 5) for i in range(len(edge_rows))]
        _put(conn, Evidence, ["run_id", "chunk_id", "concept_id", "relationship_id", "quote",
                              "char_start", "char_end"], evidence)
        if conn.dialect.name == "postgresql":
            # COPY with explicit ids leaves the sequences behind: move them past the new rows.
            for table in ("chunks", "concepts", "relationships"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    if db.dialect == "postgresql":
        # What autovacuum would do soon after an ingest: plans from real row counts.
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return Bulk(run_id, doc_id, concepts, len(edge_rows), len(evidence))


def fake_ollama(responder: Any = None) -> FakeOllama:
    """An Ollama server on 127.0.0.1 serving qwen3:8b; by default every chunk gets
    graph_reply (its capitalised names, linked in a chain)."""
    return FakeOllama(models=[FakeModel("qwen3:8b", ["completion", "thinking"])],
                      responder=responder or (lambda body: Reply(graph_reply(chunk_of(body)))))
