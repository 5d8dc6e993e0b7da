"""Planning: which files are documents, which documents a run takes, which chunks are pending.

A document joins a run in its own short transaction that first takes a lock on (path, sha256):
an advisory lock on PostgreSQL, the database's write lock on SQLite. So two `kg ingest`
processes given the same file at once never both create it, and the second sees that the
first has it ("being ingested by run N") instead of paying for every chunk again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple, Protocol, cast

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kg.db import Database
from kg.db.models import Chunk, Document, Run, RunDocument, utcnow
from kg.db.runstate import DocumentStatus, RunStatus, effective_status
from kg.db.scope import scope_of
from kg.errors import UsageError
from kg.extraction import loaders, ocr, versions, vision
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.extraction.runs import committed, left_to_others, mine
from kg.extraction.store import ChunkRef

log = logging.getLogger(__name__)
CHUNKS = cast(Table, Chunk.__table__)
DOCUMENTS = cast(Table, Document.__table__)
RUNS = cast(Table, Run.__table__)
RUN_DOCUMENTS = cast(Table, RunDocument.__table__)
INSERT_BATCH = 500
# Advisory locks of kg's planning: (LOCK_SPACE, hash of path and content). Two-key locks
# never collide with the one-key locks other parts of kg may take.
LOCK_SPACE = 0x6B67


def discover(paths: list[Path], recursive: bool) -> list[Path]:
    """The files to consider; a path that cannot be followed is a usage error before any work."""
    for path in paths:
        if not path.is_symlink():
            continue
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(f"{path} is a symlink loop; point the link at a real file "
                                 "or folder") from None
            if exc.errno == errno.ENOENT:
                raise UsageError(f"{path} is a broken symlink (to {os.readlink(path)}); fix "
                                 "the link or give the file itself") from None
    return loaders.discover(paths, recursive)


def is_unchanged(db: Database, path: Path, sha: str) -> bool:
    """Already ingested with this content (no lock: a hint checked again under the lock)."""
    with db.transaction() as conn:
        return conn.scalar(select(DOCUMENTS.c.id).where(
            DOCUMENTS.c.collection_id == scope_of(conn),
            DOCUMENTS.c.path == str(path.resolve()), DOCUMENTS.c.sha256 == sha,
            DOCUMENTS.c.status == DocumentStatus.INGESTED,
            DOCUMENTS.c.valid_to.is_(None))) is not None



class SkippedFile(NamedTuple):
    path: str
    reason: str


class BusyFile(NamedTuple):
    path: str
    run_id: int  # the live run that is ingesting it


@dataclass(frozen=True)
class Planning:
    """Planning progress: file `done` of `total` is being looked at."""

    done: int
    total: int
    path: str


class Tally(Protocol):
    """Where planning counts what became of each file (an ingest's or a queue's summary)."""

    documents: int
    unchanged: list[str]
    skipped: list[SkippedFile]
    busy: list[BusyFile]

class Decision(StrEnum):
    ADDED = "added"
    UNCHANGED = "unchanged"
    BUSY = "busy"


@dataclass(frozen=True)
class Added:
    """What planning did with one document."""

    decision: Decision
    chunks: int = 0
    owner: int | None = None  # the live run that has it, when BUSY


def _lock(conn: Connection, run_id: int, path: str, sha: str) -> None:
    if conn.dialect.name == "postgresql":
        # By path, not content: two new versions of one file are planned one after the other
        # (issue #22), so each sees the other and none gets a duplicate version number.
        digest = hashlib.blake2b(f"{scope_of(conn)}\0{path}".encode(),
                                 digest_size=4).digest()
        conn.execute(select(func.pg_advisory_xact_lock(
            LOCK_SPACE, int.from_bytes(digest, "big", signed=True))))
    # The first statement writes: on SQLite that takes the write lock for the whole
    # transaction (BEGIN IMMEDIATE semantics), so concurrent planners go one at a time.
    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(heartbeat_at=utcnow()))


def _live_owner(conn: Connection, document_id: int, run_id: int) -> int | None:
    rows = conn.execute(
        select(RUNS.c.id, RUNS.c.status, RUNS.c.heartbeat_at, RUNS.c.pid, RUNS.c.host)
        .join(RUN_DOCUMENTS, RUN_DOCUMENTS.c.run_id == RUNS.c.id)
        .where(RUN_DOCUMENTS.c.document_id == document_id, RUNS.c.id != run_id,
               RUNS.c.status == RunStatus.RUNNING)).all()
    return next((r.id for r in rows if effective_status(r) == RunStatus.RUNNING), None)


def _insert_document(conn: Connection, doc: loaders.LoadedDocument, path: str) -> int:
    values = {"path": path, "sha256": doc.sha256, "size_bytes": doc.size_bytes,
              "kind": doc.kind, "status": DocumentStatus.PENDING, "chunk_count": 0,
              "source_map": doc.source_map, "created_at": utcnow()}
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(DOCUMENTS).values(values).on_conflict_do_nothing(
        index_elements=["collection_id", "path", "sha256"]).returning(DOCUMENTS.c.id)
    new_id = conn.scalar(statement)
    if new_id is None:  # someone not holding our lock created it: use theirs
        new_id = conn.scalar(select(DOCUMENTS.c.id).where(
            DOCUMENTS.c.collection_id == scope_of(conn),
            DOCUMENTS.c.path == path, DOCUMENTS.c.sha256 == doc.sha256))
    assert new_id is not None
    return int(new_id)


def _write_chunks(conn: Connection, document_id: int, doc: loaders.LoadedDocument,
                  chunking: ChunkingOptions) -> int:
    batch: list[dict[str, object]] = []
    count = 0
    for c in chunk_text(doc.text, chunking, doc.boundaries):
        batch.append({"document_id": document_id, "ordinal": c.ordinal, "text": c.text,
                      "char_start": c.char_start, "char_end": c.char_end,
                      "token_estimate": c.token_estimate})
        count += 1
        if len(batch) >= INSERT_BATCH:
            conn.execute(insert(CHUNKS), batch)
            batch = []
    if batch:
        conn.execute(insert(CHUNKS), batch)
    conn.execute(update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(
        chunk_count=count))
    return count


def add_files(db: Database, files: list[Path], chunking: ChunkingOptions, force: bool,
              tally: Tally, start_run: Callable[[], int],
              on_planning: Callable[[Planning], None] | None = None,
              profile: str | None = None) -> None:
    """Add each changed, readable file to a run, counting in `tally` what became of each.

    `start_run` opens the run at the first file that needs one, so nothing is written while
    every file is unchanged or unreadable; the caller keeps the id it returned (also when this
    raises half-way). Images are read by the reader `profile` (None: the active one) chooses
    (kg.extraction.vision.RunReader), chosen again before each file."""
    run_id: int | None = None
    with vision.reader_for(db, files, profile=profile) as reader:
        if (reader.choice is not None and reader.choice.chain is None
                and any(loaders.KINDS.get(p.suffix.lower()) == "image" for p in files)):
            ocr.check_ready()  # no Tesseract: one line before any run exists, not a failed run
        for number, path in enumerate(files, 1):
            if on_planning:
                on_planning(Planning(number, len(files), str(path)))
            sha = loaders.sha256_file(path)
            if sha is not None and not force and is_unchanged(db, path, sha):
                tally.unchanged.append(str(path))
                continue
            loaded = reader.load(path)  # the reader as the profile is now (hot reload)
            if isinstance(loaded, loaders.Skipped):
                tally.skipped.append(SkippedFile(str(path), loaded.reason))
                continue
            if run_id is None:
                run_id = start_run()
            added = add_document(db, run_id, loaded, chunking, force)
            vision.record_reads(db, run_id, loaded)  # issue #25: a calls row per page read
            if added.decision == Decision.UNCHANGED:
                tally.unchanged.append(str(path))
            elif added.decision == Decision.BUSY:
                assert added.owner is not None
                tally.busy.append(BusyFile(str(path), added.owner))
            else:
                tally.documents += 1


def add_document(db: Database, run_id: int, doc: loaders.LoadedDocument,
                 chunking: ChunkingOptions, force: bool) -> Added:
    """Add one loaded document (and its chunks, if new) to a run, under the document's lock."""
    path = str(doc.path.resolve())
    with db.transaction() as conn:
        _lock(conn, run_id, path, doc.sha256)
        row = conn.execute(select(DOCUMENTS.c.id, DOCUMENTS.c.status, DOCUMENTS.c.chunk_count,
                                  DOCUMENTS.c.valid_to)
                           .where(DOCUMENTS.c.collection_id == scope_of(conn),
                                  DOCUMENTS.c.path == path,
                                  DOCUMENTS.c.sha256 == doc.sha256)).first()
        retired = row is not None and row.valid_to is not None
        if (row is not None and row.status == DocumentStatus.INGESTED and not force
                and not retired):
            return Added(Decision.UNCHANGED)
        if row is not None:
            owner = _live_owner(conn, row.id, run_id)
            if owner is not None:
                log.info("%s is being ingested by run %d: left to it", path, owner)
                return Added(Decision.BUSY, owner=owner)
        if row is None:
            document_id = _insert_document(conn, doc, path)
            chunks = _write_chunks(conn, document_id, doc, chunking)
            sources = versions.stage(conn, document_id, path, doc.sha256)
            if not force:  # unchanged text reuses what was extracted (0 calls)
                versions.reuse(conn, run_id, document_id, sources)
        elif retired:  # an earlier content is back: it becomes the newest version
            document_id, chunks = row.id, row.chunk_count
            versions.reuse(conn, run_id, document_id,
                           versions.restage(conn, document_id, path, row.valid_to))
        else:
            document_id, chunks = row.id, row.chunk_count
            if force:
                chunks = _rechunk(conn, document_id, doc, chunking, chunks)
            # else: an earlier run left it partial; its chunks are reused, only the rest is done
        conn.execute(insert(RUN_DOCUMENTS), {"run_id": run_id, "document_id": document_id})
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
            documents=RUNS.c.documents + 1, chunks_total=RUNS.c.chunks_total + chunks))
    return Added(Decision.ADDED, chunks=chunks)


def _rechunk(conn: Connection, document_id: int, doc: loaders.LoadedDocument,
             chunking: ChunkingOptions, stored_count: int) -> int:
    """--force: same cuts as before keep their chunks (earlier runs keep their evidence, and
    `kg runs diff` can compare); different chunking replaces them."""
    spans = [(c.char_start, c.char_end) for c in chunk_text(doc.text, chunking, doc.boundaries)]
    stored = [(r.char_start, r.char_end) for r in conn.execute(
        select(CHUNKS.c.char_start, CHUNKS.c.char_end)
        .where(CHUNKS.c.document_id == document_id).order_by(CHUNKS.c.ordinal))]
    count = stored_count
    if spans != stored:
        conn.execute(delete(CHUNKS).where(CHUNKS.c.document_id == document_id))
        count = _write_chunks(conn, document_id, doc, chunking)
    # Same bytes, maybe another reading (KG_OCR_LANGUAGES changed): the map follows the text.
    conn.execute(update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(
        status=DocumentStatus.PENDING, source_map=doc.source_map))
    return count


def claim(db: Database, run_id: int) -> list[BusyFile]:
    """Resume: take each unfinished document of the run under its planning lock, unless another
    live run took it meanwhile (a new `kg ingest` of the same file): that one is left to it.

    The resumed run is already `running` when this is called, so a planner that takes the lock
    after us sees it and leaves the document to us: one owner per chunk, in either order."""
    with db.transaction() as conn:
        docs = conn.execute(
            select(DOCUMENTS.c.id, DOCUMENTS.c.path, DOCUMENTS.c.sha256)
            .join(RUN_DOCUMENTS, RUN_DOCUMENTS.c.document_id == DOCUMENTS.c.id)
            .where(RUN_DOCUMENTS.c.run_id == run_id,
                   DOCUMENTS.c.status != DocumentStatus.INGESTED)).all()
    left: dict[str, int] = {}
    busy: list[BusyFile] = []
    for doc in docs:
        with db.transaction() as conn:
            _lock(conn, run_id, doc.path, doc.sha256)
            owner = _live_owner(conn, doc.id, run_id)
            if owner is None:
                continue
            left[str(doc.id)] = owner
            options = conn.scalar(select(RUNS.c.options).where(RUNS.c.id == run_id)) or {}
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
                options={**options, "left_to": {**options.get("left_to", {}), **left}}))
        log.info("%s is being ingested by run %d: left to it", doc.path, owner)
        busy.append(BusyFile(doc.path, owner))
    return busy


@dataclass(frozen=True)
class DocumentWork:
    """One document of a run as progress reports it: its name, size and what is left."""

    path: str
    chunks: int
    pending: int


@dataclass
class Pending:
    """The chunks a run still has to do, in document order, and its documents."""

    chunks: deque[ChunkRef] = field(default_factory=deque)
    documents: dict[int, DocumentWork] = field(default_factory=dict)


def pending(db: Database, run_id: int) -> Pending:
    """Chunks of the run's documents not yet committed (by any run, or by this run if forced)."""
    with db.transaction() as conn:
        options = conn.scalar(select(RUNS.c.options).where(RUNS.c.id == run_id)) or {}
        force = bool(options.get("force"))
        left = left_to_others(options)
        rows = conn.execute(
            select(Chunk.id, Chunk.document_id, Chunk.char_start)
            .join(RunDocument, mine(run_id, left))
            .where(~committed(run_id, force))
            .order_by(Chunk.document_id, Chunk.ordinal)).all()
        docs = conn.execute(
            select(Document.id, Document.path, Document.chunk_count)
            .join(RunDocument, RunDocument.document_id == Document.id)
            .where(RunDocument.run_id == run_id, RunDocument.document_id.not_in(left))).all()
    counts: dict[int, int] = {}
    for r in rows:
        counts[r.document_id] = counts.get(r.document_id, 0) + 1
    return Pending(
        chunks=deque(ChunkRef(r.id, r.document_id, r.char_start) for r in rows),
        documents={d.id: DocumentWork(d.path, d.chunk_count, counts.get(d.id, 0))
                   for d in docs})
