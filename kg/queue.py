"""Chunks as jobs on procrastinate, a PostgreSQL job queue: plan a run, defer its chunks, and
tell when the run is done.

`kg ingest --queue` plans exactly like `kg ingest` (kg.extraction.plan) and then defers one job
per pending chunk; `kg worker` processes (kg.worker) take them. A queued run belongs to no
process: its row names the queue as its host, so it is judged alive by its heartbeat, which
every worker commit refreshes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from procrastinate import App, PsycopgConnector, jobs
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy import Table, and_, exists, func, select, update

from kg.db import Database
from kg.db.models import Chunk, ChunkExtraction, Run, RunDocument, utcnow
from kg.db.runstate import RunStatus, effective_status
from kg.errors import NotFoundError, UsageError
from kg.extraction import plan, runs
from kg.extraction.ingest import IngestRequest, pinned
from kg.extraction.plan import BusyFile, Planning, SkippedFile
from kg.profiles import storage, views

QUEUE = "kg-chunks"
TASK = "kg.extract_chunk"
QUEUE_HOST = "(queue)"  # runs.host of a queued run: no local pid to check, only the heartbeat
DEFER_BATCH = 500
RUNS = cast(Table, Run.__table__)


def require_postgresql(db: Database) -> None:
    """Queued ingestion needs PostgreSQL (the queue and the workers share it)."""
    if db.dialect != "postgresql":
        raise UsageError("queued ingestion and `kg worker` need PostgreSQL; set "
                         "KG_DATABASE_URL to a postgresql:// URL (or run `kg ingest` "
                         "without --queue)")


def conninfo(db: Database) -> str:
    """The libpq URL procrastinate connects with (SQLAlchemy's without the +driver part)."""
    return db.url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(db: Database) -> App:
    """A procrastinate app on kg's database (its schema comes from kg's migration 0012)."""
    require_postgresql(db)
    return App(connector=PsycopgConnector(conninfo=conninfo(db)))


def queueing_lock(run_id: int, chunk_id: int) -> str:
    """At most one waiting job per chunk of a run."""
    return f"kg:{run_id}:{chunk_id}"


@dataclass
class Queued:
    """What `kg ingest --queue` did."""

    run_id: int | None
    documents: int = 0
    jobs: int = 0
    chunks_total: int = 0
    status: str = RunStatus.RUNNING
    skipped: list[SkippedFile] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    busy: list[BusyFile] = field(default_factory=list)


def _options(request: IngestRequest) -> dict[str, Any]:
    return {"follow_active": request.profile is None, "force": request.force,
            "chunking": request.chunking.model_dump(), "fuzzy_threshold":
            request.fuzzy_threshold, "paths": [str(p) for p in request.paths], "queued": True}


def _start(db: Database, request: IngestRequest) -> int:
    """The run row, with the profile's snapshot (the server is the workers' business)."""
    with db.session() as session:
        row = storage.get_profile(session, request.profile)
        snapshot = views.snapshot(views.provider_settings(row))
        return runs.start(session, profile_name=row.name, snapshot=snapshot,
                          options=_options(request))


def enqueue(db: Database, request: IngestRequest,
            on_planning: Callable[[Planning], None] | None = None) -> Queued:
    """Plan a run like `kg ingest` does and defer one job per pending chunk; returns at once."""
    require_postgresql(db)
    request = pinned(db, request)
    files = plan.discover(request.paths, request.recursive)
    if not files:
        raise UsageError("no files found; give files or use --recursive for folders")
    queued = Queued(run_id=None)
    run_id: int | None = None

    def start_run() -> int:
        nonlocal run_id
        run_id = _start(db, request)
        return run_id

    try:
        plan.add_files(db, files, request.chunking, request.force, queued, start_run,
                       on_planning, profile=request.profile)
        if run_id is not None and queued.documents == 0:
            runs.discard(db, run_id)
            run_id = None
        if run_id is None:
            if queued.skipped and not queued.unchanged and not queued.busy:
                raise UsageError("nothing could be read; give .txt, .md, .pdf or .html files "
                                 "with text in them")
            queued.status = "unchanged" if queued.unchanged else "nothing to do"
            return queued
        queued.run_id = run_id
        queued.jobs = defer_pending(db, run_id)
        with db.transaction() as conn:
            # How many outcomes end the run: workers compare the run's counters with it, so
            # the precise check runs once, not after every chunk.
            options = conn.scalar(select(RUNS.c.options).where(RUNS.c.id == run_id)) or {}
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
                options={**options, "queued_chunks": queued.jobs}))
    except BaseException as exc:
        if run_id is not None:
            runs.finish(db, run_id, RunStatus.FAILED, f"stopped while queueing: {exc}")
        raise
    with db.transaction() as conn:
        # From now on the run is the queue's: alive while workers keep its heartbeat fresh.
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
            host=QUEUE_HOST, pid=0, heartbeat_at=utcnow()))
        queued.chunks_total = int(conn.scalar(select(RUNS.c.chunks_total)
                                              .where(RUNS.c.id == run_id)) or 0)
    if queued.jobs == 0:  # everything was in the graph already
        queued.status = finish_if_done(db, run_id) or RunStatus.RUNNING
    return queued


def defer_pending(db: Database, run_id: int) -> int:
    """One job per pending chunk of the run (a chunk already waiting is not queued again)."""
    refs = list(plan.pending(db, run_id).chunks)
    app = make_app(db)
    deferred = 0
    with app.open():
        manager = app.job_manager
        for start in range(0, len(refs), DEFER_BATCH):
            batch = [jobs.Job(id=None, queue=QUEUE, lock=None,
                              queueing_lock=queueing_lock(run_id, ref.id), task_name=TASK,
                              task_kwargs={"run_id": run_id, "chunk_id": ref.id})
                     for ref in refs[start:start + DEFER_BATCH]]
            try:
                manager.batch_defer_jobs(batch)
                deferred += len(batch)
            except AlreadyEnqueued:  # some are waiting already: defer the rest one by one
                for job in batch:
                    try:
                        manager.defer_job(job)
                        deferred += 1
                    except AlreadyEnqueued:
                        continue
    return deferred


def remaining(db: Database, run_id: int) -> int:
    """Chunks of the run with no outcome yet (not in the graph, not recorded as failed)."""
    with db.transaction() as conn:
        force = bool((conn.scalar(select(RUNS.c.options).where(RUNS.c.id == run_id)) or {})
                     .get("force"))
        return _remaining(conn, run_id, force)


def _remaining(conn: Any, run_id: int, force: bool) -> int:
    mine = and_(RunDocument.document_id == Chunk.document_id, RunDocument.run_id == run_id)
    here = exists().where(ChunkExtraction.chunk_id == Chunk.id,
                          ChunkExtraction.run_id == run_id)
    return int(conn.scalar(select(func.count()).select_from(Chunk).join(RunDocument, mine)
                           .where(~runs.committed(run_id, force), ~here)) or 0)


def finish_if_done(db: Database, run_id: int) -> RunStatus | None:
    """Finish the run if no chunk is left; exactly one caller wins, however many workers ask
    at once (the run's row lock orders them, and the winner marks it before letting go)."""
    with db.transaction() as conn:
        # Without a lock first: most chunks are not the last, and a lock costs a commit.
        seen = conn.execute(select(RUNS.c.options, RUNS.c.chunks_ok, RUNS.c.chunks_failed)
                            .where(RUNS.c.id == run_id)).first()
        expected = None if seen is None else (seen.options or {}).get("queued_chunks")
        if expected is not None and seen is not None \
                and seen.chunks_ok + seen.chunks_failed < expected:
            return None
    with db.transaction() as conn:
        row = conn.execute(select(RUNS.c.status, RUNS.c.finished_at, RUNS.c.options,
                                  RUNS.c.chunks_ok, RUNS.c.chunks_failed)
                           .where(RUNS.c.id == run_id).with_for_update()).first()
        if row is None or row.status != RunStatus.RUNNING or row.finished_at is not None:
            return None
        expected = (row.options or {}).get("queued_chunks")
        if expected is not None and row.chunks_ok + row.chunks_failed < expected:
            return None  # each queued chunk adds one outcome: some are still to come
        if _remaining(conn, run_id, bool((row.options or {}).get("force"))):
            return None
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(finished_at=utcnow()))
    return runs.finish(db, run_id).status


@dataclass(frozen=True)
class RunState:
    """Where a queued run stands, from its row."""

    status: str
    chunks_total: int
    chunks_ok: int
    chunks_failed: int
    finished: bool


def state(db: Database, run_id: int) -> RunState:
    """The run's counts and whether it has finished."""
    with db.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}; see `kg runs list`")
        status = effective_status(run)
        # Finished is the row's own word: a queued run waiting for workers is not over.
        return RunState(str(status), run.chunks_total, run.chunks_ok, run.chunks_failed,
                        run.status != RunStatus.RUNNING)


def follow(db: Database, run_id: int, on_state: Callable[[RunState], None],
           poll_s: float = 1.0, timeout_s: float | None = None) -> RunState:
    """Poll the run until it finishes (or `timeout_s` passes), reporting each change."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last: RunState | None = None
    while True:
        current = state(db, run_id)
        if current != last:
            on_state(current)
            last = current
        if current.finished or (deadline is not None and time.monotonic() > deadline):
            return current
        time.sleep(poll_s)


def wait_done(db: Database, run_id: int, poll_s: float = 0.2,
              timeout_s: float = 120.0) -> RunState:
    """Block until the run has finished (tests, benchmarks); raises on timeout."""
    final = follow(db, run_id, lambda _s: None, poll_s, timeout_s)
    if not final.finished:
        raise TimeoutError(f"run {run_id} still running after {timeout_s}s")
    return final

