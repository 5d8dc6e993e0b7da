"""Document versions (issue #22): a path's contents over time, and the cutover between them.

A document row is one version of a path. A changed file becomes a new row that waits, staged
(valid_from NULL), while its new text is extracted; chunks whose text an earlier version had
reuse that version's evidence (copied onto the new chunks, so each version's evidence is whole
and no LLM call is made for them). When the version is complete, `promote` does the cutover in
one transaction under the graph lock: the old version's evidence gets valid_to, the new one's
valid_from; concepts and relationships left without live evidence are retracted (valid_to,
never deleted), those the new version mentions again come back; so are concept attributes
(literal values, issue #20), by their own evidence. A reader sees the old version
or the new one, never a mix; a crash before the cutover leaves the old version live.

Retraction only sets validity columns: ids, labels and aliases stay. The graph epoch is still
bumped, once per cutover: writers reload the set of retracted concepts, which fuzzy matching
must not land on (kg.extraction.store.LiveIndex).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy import cast as sql_cast

from kg.db import Database
from kg.db.locks import lock_graph
from kg.db.models import (
    AttributeEvidence,
    Chunk,
    ChunkExtraction,
    Concept,
    ConceptAttribute,
    Document,
    Evidence,
    Relationship,
    Run,
    utcnow,
)
from kg.db.scope import scope_of
from kg.errors import UsageError

CHUNKS = cast(Table, Chunk.__table__)
CONCEPTS = cast(Table, Concept.__table__)
DOCUMENTS = cast(Table, Document.__table__)
EDGES = cast(Table, Relationship.__table__)
EVIDENCE = cast(Table, Evidence.__table__)
EXTRACTIONS = cast(Table, ChunkExtraction.__table__)
RUNS = cast(Table, Run.__table__)
ATTRIBUTES = cast(Table, ConceptAttribute.__table__)
ATTRIBUTE_EVIDENCE = cast(Table, AttributeEvidence.__table__)

STAMP = DateTime(timezone=True)


def _copy(pg: bool, retired: bool, table: Table = EVIDENCE) -> Any:
    """Copies the evidence (or, `table`, the attribute evidence) of one earlier chunk onto a
    new chunk (offsets moved with it): its live evidence, or (`retired`) what it had when its
    version was retired."""
    valid_from = bindparam("valid_from", type_=STAMP)
    e = table.c
    delta = bindparam("delta", type_=Integer)
    if table is EVIDENCE:
        owners: tuple[str, ...] = ("concept_id", "relationship_id")
        spans: tuple[str, ...] = ("char_start", "char_end")
    else:
        owners, spans = ("attribute_id",), ("char_start", "char_end", "value_start", "value_end")
    columns = ("collection_id", "run_id", "chunk_id", *owners, "quote", *spans, "valid_from")
    which = (e.valid_to == bindparam("retired", type_=STAMP) if retired
             else e.valid_to.is_(None))
    return insert(table).from_select(columns, select(
        e.collection_id, bindparam("run", type_=Integer), bindparam("new", type_=Integer),
        *(e[name] for name in owners), e.quote, *(e[name] + delta for name in spans),
        sql_cast(valid_from, STAMP) if pg else type_coerce(valid_from, STAMP))
        .where(e.chunk_id == bindparam("old", type_=Integer), e.valid_from.is_not(None), which))


@dataclass(frozen=True)
class Source:
    """Where a new version's unchanged chunks take their evidence from."""

    document_id: int
    retired: datetime | None = None  # None: its live evidence; else what it had when retired


def live_version(conn: Connection, path: str, other_than: int | None = None) -> Any:
    """The live version of `path` in this collection (id, version), or None."""
    query = select(DOCUMENTS.c.id, DOCUMENTS.c.version).where(
        DOCUMENTS.c.collection_id == scope_of(conn), DOCUMENTS.c.path == path,
        DOCUMENTS.c.valid_from.is_not(None), DOCUMENTS.c.valid_to.is_(None))
    if other_than is not None:
        query = query.where(DOCUMENTS.c.id != other_than)
    return conn.execute(query.order_by(DOCUMENTS.c.id.desc())).first()


def next_version(conn: Connection, path: str, document_id: int) -> int:
    """The number the document gets as the newest version of its path."""
    return int(conn.scalar(select(func.coalesce(func.max(DOCUMENTS.c.version), 0)).where(
        DOCUMENTS.c.collection_id == scope_of(conn), DOCUMENTS.c.path == path,
        DOCUMENTS.c.id != document_id)) or 0) + 1


def same_content(conn: Connection, sha: str, other_than: int) -> list[int]:
    """Live documents elsewhere with these very bytes (a moved or copied file)."""
    return list(conn.scalars(select(DOCUMENTS.c.id).where(
        DOCUMENTS.c.collection_id == scope_of(conn), DOCUMENTS.c.sha256 == sha,
        DOCUMENTS.c.id != other_than, DOCUMENTS.c.valid_from.is_not(None),
        DOCUMENTS.c.valid_to.is_(None)).order_by(DOCUMENTS.c.id)))


def stage(conn: Connection, document_id: int, path: str, sha: str) -> list[Source]:
    """Make a new document row a version of its path: staged behind the live version if there
    is one (else live at once, as a first version is); returns where unchanged chunks reuse
    evidence from (the live version, then documents with the same bytes)."""
    previous = live_version(conn, path, other_than=document_id)
    values: dict[str, Any] = {"version": next_version(conn, path, document_id), "valid_to": None}
    if previous is not None:
        values["valid_from"] = None
    conn.execute(update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(**values))
    sources = [Source(previous.id)] if previous is not None else []
    return sources + [Source(d) for d in same_content(conn, sha, document_id)
                      if previous is None or d != previous.id]


def restage(conn: Connection, document_id: int, path: str, retired: datetime) -> list[Source]:
    """A retired version's content is back (a file reverted, a deleted file restored): the row
    becomes the newest version again, its own evidence of then reused for every chunk."""
    previous = live_version(conn, path, other_than=document_id)
    conn.execute(update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(
        version=next_version(conn, path, document_id), valid_to=None,
        valid_from=None if previous is not None else utcnow()))
    return [Source(document_id, retired)]


def reuse(conn: Connection, run_id: int, document_id: int, sources: list[Source]) -> int:
    """Copy evidence onto every chunk of the document whose text a source chunk has, and mark
    those chunks done in this run (no call is made for them). Returns how many were reused."""
    if not sources:
        return 0
    staged = conn.scalar(select(DOCUMENTS.c.valid_from.is_(None)).where(
        DOCUMENTS.c.id == document_id))
    valid_from = None if staged else utcnow()
    new = conn.execute(select(CHUNKS.c.id, CHUNKS.c.text, CHUNKS.c.char_start).where(
        CHUNKS.c.document_id == document_id).order_by(CHUNKS.c.ordinal)).all()
    copies: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    wanted = {c.text for c in new}
    seen: dict[str, tuple[int, int, datetime | None]] = {}
    for source in sources:
        if source.document_id == document_id:  # restaged: each chunk is its own source
            copies += [{"run": run_id, "new": c.id, "old": c.id, "delta": 0,
                        "valid_from": valid_from, "retired": source.retired} for c in new]
            new = []
            break
        # Only chunks whose extraction committed: a failed or never-reached chunk of a
        # partial source has no facts to give, and must be asked for here.
        extracted = exists().where(EXTRACTIONS.c.chunk_id == CHUNKS.c.id,
                                   EXTRACTIONS.c.status == "ok")
        for old in conn.execute(select(CHUNKS.c.id, CHUNKS.c.text, CHUNKS.c.char_start).where(
                CHUNKS.c.document_id == source.document_id, extracted)
                .order_by(CHUNKS.c.ordinal)):
            if old.text in wanted and old.text not in seen:
                seen[old.text] = (old.id, old.char_start, source.retired)
    for chunk in new:
        hit = seen.get(chunk.text)
        if hit is None:
            continue
        old_id, old_start, retired = hit
        copies.append({"run": run_id, "new": chunk.id, "old": old_id,
                       "delta": chunk.char_start - old_start, "valid_from": valid_from,
                       "retired": retired})
        if old_id != chunk.id:
            done.append({"run_id": run_id, "chunk_id": chunk.id, "status": "ok", "attempts": 0,
                         "profile_revision": 0, "concepts": 0, "relationships": 0,
                         "dropped": {"reused": 1}, "error": None, "finished_at": utcnow()})
    pg = conn.dialect.name == "postgresql"
    for old_version in (False, True):
        batch = [c for c in copies if (c["retired"] is not None) == old_version]
        if batch:
            params = [{k: v for k, v in c.items() if old_version or k != "retired"}
                      for c in batch]
            conn.execute(_copy(pg, old_version), params)
            conn.execute(_copy(pg, old_version, ATTRIBUTE_EVIDENCE), params)
    if done:
        conn.execute(insert(EXTRACTIONS), done)
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
            chunks_ok=RUNS.c.chunks_ok + len(done)))
    return len(copies)


# -- the cutover ---------------------------------------------------------------------------
def _live(table: Table) -> Any:
    return and_(table.c.valid_from.is_not(None), table.c.valid_to.is_(None))


def _has_live_evidence(column: Any, key: Any) -> Any:
    return exists().where(column == key, _live(EVIDENCE))


def promote(conn: Connection, document_id: int) -> datetime:
    """The cutover of a complete staged version: it goes live, the version it replaces (and
    any abandoned staged one of the same path) is retired, with what only it supported.
    The graph epoch is bumped: writers reload which concepts are retracted (fuzzy matching
    does not land on those)."""
    lock_graph(conn, rewrites=True)
    now = utcnow()
    path = conn.scalar(select(DOCUMENTS.c.path).where(DOCUMENTS.c.id == document_id))
    older = list(conn.scalars(select(DOCUMENTS.c.id).where(
        DOCUMENTS.c.collection_id == scope_of(conn), DOCUMENTS.c.path == path,
        DOCUMENTS.c.id != document_id, DOCUMENTS.c.valid_to.is_(None))))
    chunks = select(CHUNKS.c.id).where(CHUNKS.c.document_id == document_id).scalar_subquery()
    for table in (EVIDENCE, ATTRIBUTE_EVIDENCE):
        conn.execute(update(table).where(table.c.chunk_id.in_(chunks),
                                         table.c.valid_from.is_(None))
                     .values(valid_from=now))
    conn.execute(update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(
        valid_from=now, valid_to=None))
    _retire(conn, older, now)
    conn.execute(update(ATTRIBUTES).where(
        ATTRIBUTES.c.id.in_(select(ATTRIBUTE_EVIDENCE.c.attribute_id).where(
            ATTRIBUTE_EVIDENCE.c.chunk_id.in_(chunks), _live(ATTRIBUTE_EVIDENCE))),
        or_(ATTRIBUTES.c.valid_to.is_not(None), ATTRIBUTES.c.valid_from.is_(None)))
        .values(valid_to=None, valid_from=func.coalesce(ATTRIBUTES.c.valid_from, now)))
    for table, column in ((CONCEPTS, EVIDENCE.c.concept_id), (EDGES, EVIDENCE.c.relationship_id)):
        # What the new version mentions is live (back, if it had been retracted).
        conn.execute(update(table).where(
            table.c.id.in_(select(column).where(EVIDENCE.c.chunk_id.in_(chunks),
                                                _live(EVIDENCE))),
            or_(table.c.valid_to.is_not(None), table.c.valid_from.is_(None)))
            .values(valid_to=None, valid_from=func.coalesce(table.c.valid_from, now)))
    return now


def retire(conn: Connection, document_ids: list[int]) -> datetime:
    """Retract whole documents (their files are gone): their facts leave the live graph."""
    lock_graph(conn, rewrites=True)
    now = utcnow()
    _retire(conn, document_ids, now)
    return now


def _retire(conn: Connection, document_ids: list[int], now: datetime) -> None:
    if not document_ids:
        return
    chunks = select(CHUNKS.c.id).where(CHUNKS.c.document_id.in_(document_ids)).scalar_subquery()
    touched = select(EVIDENCE.c.concept_id, EVIDENCE.c.relationship_id).where(
        EVIDENCE.c.chunk_id.in_(chunks), _live(EVIDENCE)).subquery()
    concepts = [r for r in conn.scalars(select(touched.c.concept_id).distinct()) if r is not None]
    edges = [r for r in conn.scalars(select(touched.c.relationship_id).distinct())
             if r is not None]
    attributes = list(conn.scalars(select(ATTRIBUTE_EVIDENCE.c.attribute_id).where(
        ATTRIBUTE_EVIDENCE.c.chunk_id.in_(chunks), _live(ATTRIBUTE_EVIDENCE)).distinct()))
    for table in (EVIDENCE, ATTRIBUTE_EVIDENCE):
        conn.execute(update(table).where(table.c.chunk_id.in_(chunks), _live(table))
                     .values(valid_to=now))
        # Staged evidence of an abandoned version never goes live: it closes empty.
        conn.execute(update(table).where(table.c.chunk_id.in_(chunks),
                                         table.c.valid_from.is_(None))
                     .values(valid_from=now, valid_to=now))
    conn.execute(update(DOCUMENTS).where(DOCUMENTS.c.id.in_(document_ids)).values(
        valid_from=func.coalesce(DOCUMENTS.c.valid_from, now), valid_to=now))
    for batch in _batches(edges):
        conn.execute(update(EDGES).where(
            EDGES.c.id.in_(batch), _live(EDGES),
            ~_has_live_evidence(EVIDENCE.c.relationship_id, EDGES.c.id)).values(valid_to=now))
    for batch in _batches(attributes):
        conn.execute(update(ATTRIBUTES).where(
            ATTRIBUTES.c.id.in_(batch), _live(ATTRIBUTES),
            ~exists().where(ATTRIBUTE_EVIDENCE.c.attribute_id == ATTRIBUTES.c.id,
                            _live(ATTRIBUTE_EVIDENCE))).values(valid_to=now))
    for batch in _batches(concepts):
        conn.execute(update(CONCEPTS).where(
            CONCEPTS.c.id.in_(batch), _live(CONCEPTS),
            ~_has_live_evidence(EVIDENCE.c.concept_id, CONCEPTS.c.id),
            # Two tests, not one OR: each is an index lookup (an OR scans every relationship).
            ~exists().where(EDGES.c.source_id == CONCEPTS.c.id, _live(EDGES)),
            ~exists().where(EDGES.c.target_id == CONCEPTS.c.id, _live(EDGES)))
            .values(valid_to=now))


def _batches(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def staged_documents(conn: Connection, document_ids: list[int]) -> list[int]:
    return list(conn.scalars(select(DOCUMENTS.c.id).where(
        DOCUMENTS.c.id.in_(document_ids), DOCUMENTS.c.valid_from.is_(None))))


# -- files gone from a folder (`kg ingest DIR --sync`) -------------------------------------
@dataclass(frozen=True)
class Gone:
    id: int
    path: str


def gone_from(db: Database, folders: list[Path], recursive: bool) -> list[Gone]:
    """Live documents of these folders whose files are no longer there. A folder that cannot
    be read is an error before anything is retracted (its files may only be out of reach)."""
    roots = []
    for folder in folders:
        try:
            os.listdir(folder)
        except OSError as exc:
            raise UsageError(f"--sync cannot read {folder} ({exc.strerror or exc}); nothing "
                             "was retracted; give a readable folder") from None
        roots.append(folder.resolve())
    with db.transaction() as conn:
        rows = conn.execute(select(DOCUMENTS.c.id, DOCUMENTS.c.path).where(
            DOCUMENTS.c.collection_id == scope_of(conn), DOCUMENTS.c.valid_to.is_(None),
            or_(*(DOCUMENTS.c.path.startswith(str(root) + os.sep, autoescape=True)
                  for root in roots))).order_by(DOCUMENTS.c.path)).all()
    gone = []
    for row in rows:
        path = Path(row.path)
        inside = any(path.parent == root or (recursive and path.is_relative_to(root))
                     for root in roots)
        if inside and not path.exists():
            gone.append(Gone(row.id, row.path))
    return gone


def retract_gone(db: Database, gone: list[Gone]) -> None:
    """Retract the documents (one transaction: all of them or none)."""
    if gone:
        with db.transaction() as conn:
            retire(conn, [g.id for g in gone])
