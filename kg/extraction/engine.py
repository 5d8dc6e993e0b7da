"""Ingestion runs: plan the work, keep up to max_parallel chunks in flight, commit as they land.

The main thread is the only database writer. Before each chunk it reads the profile's
(id, revision): when an operator changed or switched the profile, the next chunk is served by a
provider built from the new row. Every chunk commits alone, so a killed run loses nothing that
committed and `--resume` redoes exactly the rest.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, and_, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from kg import config
from kg.db import Database
from kg.db.models import (
    Call,
    Chunk,
    ChunkExtraction,
    Document,
    Run,
    RunDocument,
    utcnow,
)
from kg.errors import KgError, NotFoundError, ProviderError, UsageError
from kg.extraction import loaders
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.extraction.extract import ChunkOutcome, extract_chunk
from kg.extraction.prompt import system_prompt
from kg.extraction.schema import Bounds, bounds_for_budget
from kg.extraction.store import ChunkRef, GraphWriter
from kg.extraction.vocabulary import Vocabulary
from kg.providers import build_provider
from kg.providers.base import Provider

STALE_AFTER = timedelta(seconds=60)
CHUNKS = Chunk.__table__
HOST = socket.gethostname()


class Interrupted(KgError):
    exit_code = 130


@dataclass
class IngestRequest:
    """What `kg ingest` asks for."""

    paths: list[Path] = field(default_factory=list)
    recursive: bool = False
    profile: str | None = None
    force: bool = False
    resume: int | None = None
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    fuzzy_threshold: float = 92.0
    backoff_s: float = 1.0
    heartbeat_s: float = 5.0


@dataclass
class Progress:
    done: int
    total: int
    failed: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


@dataclass
class IngestSummary:
    run_id: int | None
    status: str
    documents: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks_total: int = 0
    chunks_ok: int = 0
    chunks_failed: int = 0
    concepts_new: int = 0
    relationships_new: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None


def call_totals(session: Session, run_id: int) -> tuple[int, int, int, int, float]:
    """(calls, prompt, completion, thinking tokens, latency ms) of a run, from its calls rows."""
    row = session.execute(select(
        func.count(Call.id), func.coalesce(func.sum(Call.prompt_tokens), 0),
        func.coalesce(func.sum(Call.completion_tokens), 0),
        func.coalesce(func.sum(Call.thinking_tokens), 0),
        func.coalesce(func.sum(Call.latency_ms), 0)).where(Call.run_id == run_id)).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4])


def effective_status(run: Run, now: datetime | None = None) -> str:
    """A 'running' run whose process is gone (or silent) is reported as interrupted."""
    if run.status != "running":
        return run.status
    now = now or utcnow()
    beat = run.heartbeat_at if run.heartbeat_at.tzinfo else run.heartbeat_at.replace(tzinfo=UTC)
    if now - beat > STALE_AFTER:
        return "interrupted"
    if run.host == HOST and run.pid != os.getpid() and not _alive(run.pid):
        return "interrupted"
    return "running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


class _Engine:
    def __init__(self, db: Database, request: IngestRequest, models_dir: Path | None,
                 on_progress: Callable[[Progress], None] | None) -> None:
        self.db = db
        self.request = request
        self.models_dir = models_dir
        self.on_progress = on_progress
        self.writer = GraphWriter(db, request.fuzzy_threshold)
        self.summary = IngestSummary(run_id=None, status="running")
        self.follow: str | None = request.profile  # None: follow whatever profile is active
        self.provider: Provider | None = None
        self.key: tuple[int, int] | None = None
        self.vocabulary: Vocabulary | None = None
        self.bounds: Bounds | None = None
        self.system = ""

    # -- provider and hot reload --------------------------------------------------------
    def _switch(self, session: Session) -> None:
        profile = config.get_profile(session, self.follow)
        settings = config.provider_settings(profile)
        provider = build_provider(settings, self.models_dir)
        provider.check()  # fatal problems surface here, before any chunk is sent
        self.provider = provider
        self.key = (profile.id, profile.revision)
        self.bounds = bounds_for_budget(settings.max_output_tokens)
        if self.vocabulary is None:
            self.vocabulary = Vocabulary.load(session)
        self.system = system_prompt(self.vocabulary, self.bounds)

    def _maybe_reload(self, conn: Connection, run_id: int) -> None:
        """Compare the profile's (id, revision) with the one in use; rebuild on a change."""
        key = config.revision_key(conn, self.follow)
        if key == self.key:
            return
        with self.db.session() as session:
            self._switch(session)
            assert self.provider is not None
            run = session.get(Run, run_id)
            assert run is not None
            run.profiles_used = [*run.profiles_used, _snapshot(self.provider.settings)]

    # -- planning --------------------------------------------------------------------------
    def _classify(self, files: list[Path]) -> list[Path]:
        """Drop unchanged files (same path and content already ingested) unless --force."""
        todo = []
        with self.db.session() as session:
            for path in files:
                sha = _sha256(path)
                if sha is None:
                    todo.append(path)  # the loader reports why it cannot be read
                    continue
                done = session.scalar(select(Document.id).where(
                    Document.path == str(path.resolve()), Document.sha256 == sha,
                    Document.status == "ingested"))
                if done is not None and not self.request.force:
                    self.summary.unchanged.append(str(path))
                else:
                    todo.append(path)
        return todo

    def _create_run(self, session: Session, files: list[Path]) -> int | None:
        """Run, documents and chunks in one transaction; None (nothing written) if no work."""
        assert self.provider is not None
        s = self.provider.settings
        run = Run(status="running", started_at=utcnow(), heartbeat_at=utcnow(), pid=os.getpid(),
                  host=HOST, profile_name=s.profile_name, profiles_used=[_snapshot(s)],
                  options={"follow_active": self.follow is None,
                           "force": self.request.force,
                           "chunking": self.request.chunking.model_dump(),
                           "paths": [str(p) for p in self.request.paths]},
                  documents=0, chunks_total=0, chunks_ok=0, chunks_failed=0)
        session.add(run)
        session.flush()
        total = 0
        for path in files:
            loaded = loaders.load(path)
            if isinstance(loaded, loaders.Skipped):
                self.summary.skipped.append((str(path), loaded.reason))
                continue
            total += self._add_document(session, run.id, loaded)
            run.documents += 1
        if run.documents == 0:
            session.rollback()
            return None
        run.chunks_total = total
        return run.id

    def _add_document(self, session: Session, run_id: int, doc: loaders.LoadedDocument) -> int:
        path = str(doc.path.resolve())
        document = session.scalar(select(Document).where(Document.path == path,
                                                         Document.sha256 == doc.sha256))
        if document is None:
            document = Document(path=path, sha256=doc.sha256, size_bytes=doc.size_bytes,
                                kind=doc.kind, status="pending", chunk_count=0,
                                created_at=utcnow())
            session.add(document)
            session.flush()
            self._write_chunks(session, document, doc)
        elif self.request.force:
            # Same chunks as before: keep them, so earlier runs keep their evidence (and
            # `kg runs diff` can compare). Different chunking: the chunks are replaced.
            spans = [(c.char_start, c.char_end)
                     for c in chunk_text(doc.text, self.request.chunking, doc.boundaries)]
            stored = [tuple(r) for r in session.execute(
                select(Chunk.char_start, Chunk.char_end).where(Chunk.document_id == document.id)
                .order_by(Chunk.ordinal))]
            if spans != stored:
                session.execute(delete(Chunk).where(Chunk.document_id == document.id))
                self._write_chunks(session, document, doc)
            document.status = "pending"
        # else: an earlier run left it partial; its chunks are reused and only the rest is done
        session.add(RunDocument(run_id=run_id, document_id=document.id))
        session.flush()
        return document.chunk_count

    def _write_chunks(self, session: Session, document: Document,
                      doc: loaders.LoadedDocument) -> None:
        batch: list[dict] = []
        count = 0
        for c in chunk_text(doc.text, self.request.chunking, doc.boundaries):
            batch.append({"document_id": document.id, "ordinal": c.ordinal, "text": c.text,
                          "char_start": c.char_start, "char_end": c.char_end,
                          "token_estimate": c.token_estimate})
            count += 1
            if len(batch) >= 500:
                session.execute(insert(Chunk), batch)
                batch = []
        if batch:
            session.execute(insert(Chunk), batch)
        document.chunk_count = count

    def _pending(self, run_id: int) -> deque[ChunkRef]:
        """Chunks of the run's documents still to do, in document order: not committed by any
        run, or (for a --force run) not committed by this run."""
        done = aliased(ChunkExtraction)
        with self.db.session() as session:
            run = session.get(Run, run_id)
            assert run is not None
            committed = exists().where(done.chunk_id == Chunk.id, done.status == "ok")
            if run.options.get("force"):
                committed = committed.where(done.run_id == run_id)
            rows = session.execute(
                select(Chunk.id, Chunk.document_id, Chunk.char_start)
                .join(RunDocument, and_(RunDocument.document_id == Chunk.document_id,
                                        RunDocument.run_id == run_id))
                .where(~committed)
                .order_by(Chunk.document_id, Chunk.ordinal)
            ).all()
        return deque(ChunkRef(r.id, r.document_id, r.char_start) for r in rows)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> IngestSummary:
        started = time.perf_counter()
        request = self.request
        if request.resume is not None:
            run_id = self._prepare_resume(request.resume)
        else:
            files = loaders.discover(request.paths, request.recursive)
            if not files:
                raise UsageError("no files found; give files or use --recursive for folders")
            todo = self._classify(files)
            if not todo:
                self.summary.status = "unchanged"
                return self.summary
            with self.db.session() as session:
                self._switch(session)
            with self.db.session() as session:
                new_run = self._create_run(session, todo)
            if new_run is None:
                self.summary.status = "nothing to do"
                return self.summary
            run_id = new_run
        self.summary.run_id = run_id
        try:
            self._loop(run_id, started)
        except KeyboardInterrupt:
            self._finish(run_id, "interrupted", "interrupted by the user")
            raise Interrupted(
                f"interrupted; committed chunks are kept; resume with `kg ingest --resume "
                f"{run_id}`") from None
        return self.summary

    def _prepare_resume(self, run_id: int) -> int:
        with self.db.session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id}; see `kg runs list`")
            status = effective_status(run)
            if status == "running":
                raise UsageError(
                    f"run {run_id} is still running (pid {run.pid} on {run.host}); wait for it "
                    "or stop it first")
            if not run.options.get("follow_active", True) and self.follow is None:
                self.follow = run.profile_name
            self._switch(session)
            run.status = "running"
            run.pid = os.getpid()
            run.host = HOST
            run.heartbeat_at = utcnow()
            run.finished_at = None
            run.error = None
            assert self.provider is not None
            run.profiles_used = [*run.profiles_used, _snapshot(self.provider.settings)]
        return run_id

    def _loop(self, run_id: int, started: float) -> None:
        pending = self._pending(run_id)
        in_flight: dict[Future[ChunkOutcome], ChunkRef] = {}
        fatal: ProviderError | None = None
        last_beat = time.monotonic()
        writer = _WriterThread(self, run_id, total=len(pending), started=started)

        def refill() -> None:
            nonlocal fatal

            def room() -> bool:
                return bool(pending) and fatal is None and self.provider is not None and (
                    len(in_flight) < self.provider.settings.max_parallel)

            if not room():
                return
            with self.db.engine.connect() as conn:
                # Hot reload: the profile's revision is read right before the chunks of this
                # round are sent, so every chunk goes out with the settings current at that time.
                try:
                    self._maybe_reload(conn, run_id)
                except ProviderError as exc:
                    fatal = exc
                    return
                assert self.provider is not None
                room_left = self.provider.settings.max_parallel - len(in_flight)
                batch = [pending.popleft() for _ in range(min(room_left, len(pending)))]
                texts = dict(conn.execute(select(CHUNKS.c.id, CHUNKS.c.text).where(
                    CHUNKS.c.id.in_([ref.id for ref in batch]))).all())
                conn.rollback()  # end the read transaction: SQLite must not pin old snapshots
            assert self.vocabulary is not None and self.bounds is not None
            for ref in batch:
                future = pool.submit(extract_chunk, self.provider, ref.id, texts.get(ref.id, ""),
                                     self.system, self.vocabulary, self.bounds,
                                     backoff_s=self.request.backoff_s)
                in_flight[future] = ref

        writer.start()
        with ThreadPoolExecutor(max_workers=64, thread_name_prefix="kg-chunk") as pool:
            try:
                while in_flight or (pending and fatal is None):
                    refill()
                    if not in_flight:
                        break
                    finished, _ = wait(list(in_flight), timeout=self.request.heartbeat_s,
                                       return_when=FIRST_COMPLETED)
                    for future in finished:
                        outcome = future.result()
                        fatal = fatal or outcome.fatal
                        writer.put(in_flight.pop(future), outcome)  # blocks when it lags
                    writer.raise_if_failed()
                    if time.monotonic() - last_beat >= self.request.heartbeat_s:
                        self._heartbeat(run_id)
                        last_beat = time.monotonic()
            except BaseException:
                for future in in_flight:
                    future.cancel()
                writer.close()  # what already landed is complete: it still commits
                raise
        writer.close()
        if fatal is not None:
            self._finish(run_id, "failed", fatal.message)
            self.summary.error = fatal.message
        else:
            self._finish(run_id, None, None)
        self.summary.seconds = time.perf_counter() - started

    def _heartbeat(self, run_id: int) -> None:
        with self.db.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))

    def _finish(self, run_id: int, status: str | None, error: str | None) -> None:
        """Final run status and document states, all from committed rows."""
        ok_chunks = (select(func.count()).select_from(ChunkExtraction)
                     .where(ChunkExtraction.chunk_id == Chunk.id, ChunkExtraction.status == "ok")
                     .correlate(Chunk).scalar_subquery())
        with self.db.session() as session:
            run = session.get(Run, run_id)
            assert run is not None
            docs = session.scalars(select(Document).join(
                RunDocument, RunDocument.document_id == Document.id).where(
                RunDocument.run_id == run_id)).all()
            remaining = 0
            for doc in docs:
                missing = session.scalar(select(func.count()).select_from(Chunk).where(
                    Chunk.document_id == doc.id, ok_chunks == 0)) or 0
                remaining += missing
                doc.status = "ingested" if missing == 0 else "partial"
            if status is None:
                status = "completed" if remaining == 0 else "partial"
            run.status = status
            run.error = error
            run.finished_at = utcnow()
            run.heartbeat_at = utcnow()
            totals = call_totals(session, run_id)
            s = self.summary
            s.status = status
            s.documents = run.documents
            s.chunks_total = run.chunks_total
            s.chunks_ok = run.chunks_ok
            s.chunks_failed = run.chunks_failed
            s.calls, s.prompt_tokens, s.completion_tokens, s.thinking_tokens = totals[:4]


class _WriterThread(threading.Thread):
    """The single database writer: commits what has landed while requests keep flowing."""

    def __init__(self, engine: _Engine, run_id: int, *, total: int, started: float) -> None:
        super().__init__(name="kg-writer", daemon=True)
        self.engine = engine
        self.run_id = run_id
        self.total = total
        self.started = started
        self.done = 0
        self.failed = 0
        self.error: BaseException | None = None
        # Bounded: if the database falls behind, the request loop waits (memory stays flat).
        self.queue: queue.Queue[tuple[ChunkRef, ChunkOutcome] | None] = queue.Queue(maxsize=256)

    def put(self, ref: ChunkRef, outcome: ChunkOutcome) -> None:
        while self.error is None:
            try:
                self.queue.put((ref, outcome), timeout=0.5)
                return
            except queue.Full:
                continue
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Commit everything queued, stop, and re-raise the writer's failure if any."""
        if self.is_alive():
            self.queue.put(None)
            self.join()
        self.raise_if_failed()

    def run(self) -> None:
        writer, summary = self.engine.writer, self.engine.summary
        stop = False
        try:
            while not stop:
                items = [self.queue.get()]
                while True:
                    try:
                        items.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in items
                group = []
                for item in items:
                    if item is None:
                        continue
                    ref, outcome = item
                    if outcome.fatal is not None:
                        writer.record_calls(self.run_id, ref, outcome)  # chunk stays pending
                    else:
                        group.append((ref, outcome))
                if not group:
                    continue
                # Everything that landed meanwhile commits together, each chunk whole.
                for committed in writer.commit(self.run_id, group):
                    self.done += 1
                    self.failed += 0 if committed.ok else 1
                    summary.concepts_new += committed.new_concepts
                    summary.relationships_new += committed.new_relationships
                if self.engine.on_progress:
                    self.engine.on_progress(Progress(self.done, self.total, self.failed,
                                                     time.perf_counter() - self.started))
        except BaseException as exc:  # handed to the request loop, which re-raises it
            self.error = exc


def _snapshot(settings) -> dict:
    """What a run records about each profile revision it used (no secrets: only the env name)."""
    return {
        "profile": settings.profile_name, "revision": settings.revision,
        "provider": settings.provider, "model": settings.model, "base_url": settings.base_url,
        "temperature": settings.temperature, "thinking_mode": settings.thinking_mode,
        "context_window": settings.context_window,
        "max_output_tokens": settings.max_output_tokens,
        "max_parallel": settings.max_parallel, "at": utcnow().isoformat(timespec="seconds"),
    }


def ingest(
    db: Database,
    request: IngestRequest,
    *,
    models_dir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> IngestSummary:
    """Run (or resume) one ingestion and return its summary."""
    return _Engine(db, request, models_dir, on_progress).run()
