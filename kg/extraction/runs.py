"""Run bookkeeping: start, heartbeat, resume and finish, from committed rows.

Statuses, liveness and call totals, which the read side needs too, are in `kg.db.runstate`.
A run's verdict comes from its own chunks: a `--force` run whose chunks all fail is failed,
whatever earlier runs committed for the same document.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from kg.db import Database
from kg.db.models import Chunk, ChunkExtraction, Document, Run, RunDocument, utcnow
from kg.db.runstate import (
    HOST,
    CallTotals,
    ChunkStatus,
    DocumentStatus,
    RunStatus,
    call_totals,
    check_resumable,
)
from kg.errors import NotFoundError, UsageError
from kg.extraction import versions


def start(session: Session, *, profile_name: str, snapshot: dict[str, Any],
          options: dict[str, Any]) -> int:
    """A new run row owned by this process (documents are added to it by planning)."""
    now = utcnow()
    run = Run(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, pid=os.getpid(),
              host=HOST, profile_name=profile_name, profiles_used=[snapshot], options=options,
              documents=0, chunks_total=0, chunks_ok=0, chunks_failed=0,
              ontology=snapshot.get("ontology"),
              ontology_revision=snapshot.get("ontology_revision"))
    session.add(run)
    session.flush()
    return run.id


def discard(db: Database, run_id: int) -> None:
    """Remove a run that planning left without documents (nothing else refers to it yet)."""
    with db.session() as session:
        run = session.get(Run, run_id)
        if run is not None:
            session.delete(run)


def stopped(session: Session, run_id: int) -> Run:
    """The run, if it exists and no live process owns it (else a one-line error)."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}; see `kg runs list`")
    if (run.options or {}).get("queued"):
        # Its chunks are jobs on the queue: a local resume would race the workers for them.
        raise UsageError(
            f"run {run_id} is queued; its chunks are done by `kg worker` processes (start one: "
            "`kg worker`), not by `kg ingest --resume`")
    check_resumable(run, run_id)
    return run


def reopen(session: Session, seen: Run) -> None:
    """Claim a stopped run for this process, unless another process claimed it since `seen`
    was read (two `--resume N` at once: one wins, the other is told the run is running)."""
    claimed = session.execute(
        update(Run).where(Run.id == seen.id, Run.status == seen.status, Run.pid == seen.pid,
                          Run.host == seen.host)
        .values(status=RunStatus.RUNNING, pid=os.getpid(), host=HOST, heartbeat_at=utcnow(),
                finished_at=None, error=None)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise UsageError(f"run {seen.id} was just resumed by another process; wait for it")


def record_profile(session: Session, run_id: int, snapshot: dict[str, Any]) -> None:
    """Append the settings of a profile revision the run switched to (hot reload)."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}; see `kg runs list`")
    run.profiles_used = [*run.profiles_used, snapshot]


def heartbeat(db: Database, run_id: int) -> None:
    """Tell other processes this run is alive (they judge it by this timestamp)."""
    with db.transaction() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))


def left_to_others(options: dict[str, Any] | None) -> list[int]:
    """Documents a resumed run found in another live run's hands and left to it."""
    return [int(d) for d in (options or {}).get("left_to", {})]


def mine(run_id: int, left: list[int]) -> ColumnElement[bool]:
    """SQL join condition: the chunk's document belongs to the run (and was not left to another)."""
    clause = and_(RunDocument.document_id == Chunk.document_id, RunDocument.run_id == run_id)
    return and_(clause, RunDocument.document_id.not_in(left)) if left else clause


def committed(run_id: int, force: bool) -> ColumnElement[bool]:
    """SQL: the correlated chunk is done for this run: committed by any run, or by this run
    itself for a --force run (which redoes what earlier runs did)."""
    done = aliased(ChunkExtraction)
    clause = exists().where(done.chunk_id == Chunk.id, done.status == ChunkStatus.OK)
    if force:
        clause = clause.where(done.run_id == run_id)
    return clause


@dataclass(frozen=True)
class Finished:
    """A run's final figures, all read back from committed rows."""

    status: RunStatus
    documents: int
    chunks_total: int
    chunks_ok: int
    chunks_failed: int
    totals: CallTotals


def finish(db: Database, run_id: int, status: RunStatus | None = None,
           error: str | None = None) -> Finished:
    """Set the final status (derived from this run's chunks unless given) and document states."""
    any_ok = (select(func.count()).select_from(ChunkExtraction)
              .where(ChunkExtraction.chunk_id == Chunk.id,
                     ChunkExtraction.status == ChunkStatus.OK)
              .correlate(Chunk).scalar_subquery())
    with db.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}; see `kg runs list`")
        force = bool(run.options.get("force"))
        docs = session.scalars(select(Document).join(
            RunDocument, RunDocument.document_id == Document.id).where(
            RunDocument.run_id == run_id)).all()
        for doc in docs:
            # A document's state is about the graph: are all its chunks in it (any run)?
            missing = session.scalar(select(func.count()).select_from(Chunk).where(
                Chunk.document_id == doc.id, any_ok == 0)) or 0
            doc.status = DocumentStatus.INGESTED if missing == 0 else DocumentStatus.PARTIAL
            if missing == 0 and doc.valid_from is None:
                # A new version, complete: its cutover commits with this status (issue #22).
                doc.valid_from = versions.promote(session.connection(), doc.id)
        remaining = session.scalar(select(func.count()).select_from(Chunk).join(
            RunDocument, mine(run_id, left_to_others(run.options)))
            .where(~committed(run_id, force))) or 0
        ok_here = session.scalar(select(func.count()).select_from(ChunkExtraction).where(
            ChunkExtraction.run_id == run_id, ChunkExtraction.status == ChunkStatus.OK)) or 0
        if status is None:
            if remaining == 0:
                status = RunStatus.COMPLETED
            else:
                status = RunStatus.PARTIAL if ok_here else RunStatus.FAILED
        run.status = status
        run.error = error
        run.finished_at = utcnow()
        run.heartbeat_at = utcnow()
        return Finished(status, run.documents, run.chunks_total, run.chunks_ok,
                        run.chunks_failed, call_totals(session, run_id))
