"""`kg worker`: a procrastinate worker that extracts queued chunks (see kg.queue).

Each job is one chunk of one run. The worker follows its profile per job (the profile's
(id, revision) is read before every extraction: an operator's change serves the next job), and
commits the chunk's rows, evidence and calls in one transaction through the graph writer, which
resolves against the database under the graph lock. A job can run twice (its worker was killed
after committing, another worker retried it): the commit checks, under that lock, whether the
chunk already has an outcome in the run, and stores nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from procrastinate import App, JobContext, RetryStrategy
from sqlalchemy import Table, and_, bindparam, select, update

from kg import queue
from kg.db import Database
from kg.db.models import Chunk, ChunkExtraction, Run, utcnow
from kg.db.runstate import HOST
from kg.extraction import runs
from kg.extraction.breaker import FAILURES, WINDOW_S, CircuitBreaker
from kg.extraction.extract import ChunkOutcome
from kg.extraction.extractor import Extractor, for_settings
from kg.extraction.store import AlreadyStored, ChunkRef, GraphWriter
from kg.extraction.vocabulary import Vocabulary
from kg.profiles import storage, views

log = logging.getLogger(__name__)
CHUNKS = cast(Table, Chunk.__table__)
EXTRACTIONS = cast(Table, ChunkExtraction.__table__)
RUNS = cast(Table, Run.__table__)
# A job whose provider call failed fatally (server down, model gone) waits and comes back;
# after the last attempt the chunk is recorded as failed so that its run can finish.
ATTEMPTS = 5
HEARTBEAT_S = 5.0  # a run's heartbeat from a job start, at most this often per worker
RETRY = RetryStrategy(max_attempts=ATTEMPTS - 1, wait=2, exponential_wait=2)
# What a job needs, in one read: its run (None: removed), its chunk (no row: removed) and
# whether the chunk has an outcome in the run already.
JOB = (select(RUNS.c.id.label("run"), RUNS.c.options, RUNS.c.profile_name, RUNS.c.collection_id,
              CHUNKS.c.document_id, CHUNKS.c.char_start, CHUNKS.c.text,
              EXTRACTIONS.c.id.label("stored"))
       .select_from(CHUNKS.outerjoin(RUNS, RUNS.c.id == bindparam("run_id")).outerjoin(
           EXTRACTIONS, and_(EXTRACTIONS.c.run_id == bindparam("run_id"),
                             EXTRACTIONS.c.chunk_id == CHUNKS.c.id)))
       .where(CHUNKS.c.id == bindparam("chunk_id")))


def worker_name() -> str:
    """host:pid, what `kg runs show` lists per worker."""
    return f"{HOST}:{os.getpid()}"


class OnceWriter(GraphWriter):
    """A GraphWriter that stores a chunk at most once per run and names the worker (checked in
    the same round trip that takes the graph lock, see GraphWriter)."""

    def __init__(self, db: Database, fuzzy_threshold: float, worker: str) -> None:
        super().__init__(db, fuzzy_threshold, worker=worker)


@dataclass
class Served:
    """The extractor of one followed profile and the (id, revision) it was built from."""

    extractor: Extractor
    key: tuple[int, int]
    users: int = 0
    retired: bool = False


class Extractors:
    """One extractor per followed profile, rebuilt when the profile's revision changes (hot
    reload per job); a replaced one is closed when its last job is done. Thread-safe."""

    def __init__(self, db: Database, models_dir: Path | None) -> None:
        self.db = db
        self.models_dir = models_dir
        self.lock = threading.Lock()
        self.served: dict[str | None, Served] = {}
        self.breakers: dict[str, CircuitBreaker] = {}

    def acquire(self, follow: str | None) -> Served:
        """The extractor for the profile as it is now, reserved for one job."""
        with self.lock:
            with self.db.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT") as conn:  # one read: no BEGIN, no ROLLBACK
                key = storage.revision_key(conn, follow)
            current = self.served.get(follow)
            if current is None or current.key != key:
                with self.db.session() as session:
                    row = storage.get_profile(session, follow)
                    fresh = for_settings(views.provider_settings(row),
                                         Vocabulary.load(session, row.ontology),
                                         self.models_dir)
                if current is not None:
                    log.info("profile %s revision %d now serves the next jobs", row.name,
                             row.revision)
                    self._retire(current)
                current = self.served[follow] = Served(fresh, (row.id, row.revision))
            current.users += 1
            return current

    def release(self, served: Served) -> None:
        with self.lock:
            served.users -= 1
            if served.retired and served.users == 0:
                served.extractor.close()

    def _retire(self, served: Served) -> None:
        served.retired = True
        if served.users == 0:
            served.extractor.close()

    def breaker(self, extractor: Extractor) -> CircuitBreaker:
        """One breaker per endpoint, shared by the worker's jobs."""
        with self.lock:
            endpoint = extractor.endpoint
            if endpoint not in self.breakers:
                threshold = max(FAILURES, extractor.settings.max_parallel + 1)
                self.breakers[endpoint] = CircuitBreaker(endpoint, threshold=threshold,
                                                         window_s=WINDOW_S)
            return self.breakers[endpoint]

    def close(self) -> None:
        with self.lock:
            for served in self.served.values():
                served.extractor.close()
            self.served.clear()


@dataclass(frozen=True)
class WorkerOptions:
    """How `kg worker` runs."""

    concurrency: int = 1
    profile: str | None = None  # None: the run's profile if it named one, else the active one
    stalled_after_s: float = 30.0  # a worker silent this long is dead; its jobs go to others
    backoff_s: float = 1.0
    models_dir: Path | None = None


class ChunkJobs:
    """What one `kg worker` process does with each job."""

    def __init__(self, db: Database, options: WorkerOptions) -> None:
        self.db = db
        self.options = options
        self.name = worker_name()
        self.extractors = Extractors(db, options.models_dir)
        self.writers: dict[tuple[int, float], OnceWriter] = {}
        self.scoped: dict[int, Database] = {}  # collection id -> the database working in it
        self.writers_lock = threading.Lock()
        self.recorded: set[tuple[int, tuple[int, int]]] = set()  # (run, profile key) listed
        self.beats: dict[int, float] = {}  # run -> when this process last wrote its heartbeat
        self.done = 0

    def database(self, collection_id: int) -> Database:
        """The database working in a run's collection (a worker takes jobs of any)."""
        with self.writers_lock:
            if collection_id not in self.scoped:
                self.scoped[collection_id] = self.db.scoped(collection_id, f"#{collection_id}")
            return self.scoped[collection_id]

    def writer(self, db: Database, fuzzy_threshold: float) -> OnceWriter:
        """One writer per collection and threshold: its caches are kept between jobs."""
        key = (db.collection_id, fuzzy_threshold)
        with self.writers_lock:
            if key not in self.writers:
                self.writers[key] = OnceWriter(db, fuzzy_threshold, self.name)
            return self.writers[key]

    def process(self, run_id: int, chunk_id: int, attempts: int = 0) -> str:
        """Extract and commit one chunk of a run; returns what happened (for the job log)."""
        with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            job = conn.execute(JOB, {"run_id": run_id, "chunk_id": chunk_id}).first()
        if job is None or job.run is None:
            return "gone"  # the run or its document was removed meanwhile
        db = self.database(job.collection_id)
        if job.stored is not None:
            queue.finish_if_done(db, run_id)
            return "already stored"
        if self._beat_due(run_id):
            # The run is alive while its chunks are in hand (commits beat too; this covers
            # LLM calls longer than the staleness limit).
            with self.db.transaction() as conn:
                conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
                    heartbeat_at=utcnow()))
        options = job.options or {}
        follow = self.options.profile
        if follow is None and not options.get("follow_active", True):
            follow = job.profile_name
        ref = ChunkRef(chunk_id, job.document_id, job.char_start)
        served = self.extractors.acquire(follow)
        try:
            self._record_profile(db, run_id, served)
            extractor = served.extractor
            outcome = extractor.extract(chunk_id, job.text, backoff_s=self.options.backoff_s,
                                        breaker=self.extractors.breaker(extractor))
        finally:
            self.extractors.release(served)
        writer = self.writer(db, float(options.get("fuzzy_threshold", 92.0)))
        if outcome.fatal is not None:
            if attempts + 1 < ATTEMPTS:
                if outcome.attempts:
                    writer.record_calls(run_id, ref, outcome)
                raise RuntimeError(f"chunk {chunk_id}: {outcome.fatal.message}")
            outcome = ChunkOutcome(outcome.chunk_id, outcome.settings, outcome.attempts,
                                   error=outcome.fatal.message)
        try:
            [committed] = writer.commit(run_id, [(ref, outcome)])
        except AlreadyStored:
            return "already stored"
        finally:
            self.done += 1
        expected = options.get("queued_chunks")
        if expected is None or committed.run_outcomes is None \
                or committed.run_outcomes >= expected:
            # Each queued chunk adds one outcome: before the last, the run cannot be done
            # (the commit said how many there are; finish_if_done need not read them again).
            queue.finish_if_done(db, run_id)
        return "ok" if outcome.ok else "failed"

    def _beat_due(self, run_id: int) -> bool:
        now = time.monotonic()
        with self.writers_lock:
            if now - self.beats.get(run_id, -HEARTBEAT_S) < HEARTBEAT_S:
                return False
            self.beats[run_id] = now
            return True

    def _record_profile(self, db: Database, run_id: int, served: Served) -> None:
        """The run lists every profile revision that served it (once, whichever worker)."""
        if (run_id, served.key) in self.recorded:
            return
        snapshot = views.snapshot(served.extractor.settings)
        self.recorded.add((run_id, served.key))
        with db.session() as session:
            run = session.get(Run, run_id, with_for_update=True)
            listed = {(p.get("profile"), p.get("revision")) for p in run.profiles_used} \
                if run is not None else set()
            if run is not None and (snapshot.get("profile"), snapshot.get("revision")) \
                    not in listed:
                runs.record_profile(session, run_id, snapshot)

    def close(self) -> None:
        self.extractors.close()
        with self.writers_lock:
            for writer in self.writers.values():
                writer.close()


def build_app(db: Database, jobs: ChunkJobs) -> App:
    """The procrastinate app with kg's one task bound to this process's job handler."""
    app = queue.make_app(db)

    @app.task(name=queue.TASK, queue=queue.QUEUE, pass_context=True, retry=RETRY)
    def extract_chunk(context: JobContext, run_id: int, chunk_id: int) -> str:
        return jobs.process(run_id, chunk_id, context.job.attempts)

    return app


async def _rescue_stalled(app: App, stalled_after_s: float, every_s: float) -> None:
    """Jobs of workers that stopped sending heartbeats (killed, machine lost) go back to the
    queue; any live worker may do this, a job is taken back once (the retry needs 'doing')."""
    while True:
        await asyncio.sleep(every_s)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                queue=queue.QUEUE, seconds_since_heartbeat=stalled_after_s)
            for job in stalled:
                with contextlib.suppress(Exception):  # another worker took it back first
                    await app.job_manager.retry_job(job)
                    log.warning("job %s (%s) of a stalled worker is queued again", job.id,
                                job.task_kwargs)
        except Exception as exc:  # the database blinked: try again next round
            log.warning("looking for stalled jobs failed: %s", exc)


async def _serve(app: App, options: WorkerOptions, name: str) -> None:
    loop = asyncio.get_running_loop()
    # Sync jobs run on the loop's default executor: size it to the concurrency.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=options.concurrency + 2,
                                                 thread_name_prefix="kg-job"))
    heartbeat_s = max(0.2, options.stalled_after_s / 3)
    async with app.open_async():
        rescue = asyncio.create_task(_rescue_stalled(app, options.stalled_after_s,
                                                     heartbeat_s))
        try:
            await app.run_worker_async(
                queues=[queue.QUEUE], concurrency=options.concurrency, name=name,
                update_heartbeat_interval=heartbeat_s,
                stalled_worker_timeout=options.stalled_after_s,
                delete_jobs="successful", install_signal_handlers=True)
        finally:
            rescue.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rescue


def run(db: Database, options: WorkerOptions) -> int:
    """Take jobs until SIGTERM or SIGINT (after the jobs in hand); returns how many were done."""
    queue.require_postgresql(db)
    jobs = ChunkJobs(db, options)
    app = build_app(db, jobs)
    started = time.monotonic()
    log.info("worker %s: %d at a time", jobs.name, options.concurrency)
    try:
        asyncio.run(_serve(app, options, jobs.name))
    finally:
        jobs.close()
    log.info("worker %s stopped after %d jobs in %.0fs", jobs.name, jobs.done,
             time.monotonic() - started)
    return jobs.done


def describe(options: WorkerOptions) -> dict[str, Any]:
    """What the worker prints when it starts."""
    return {"worker": worker_name(), "concurrency": options.concurrency,
            "profile": options.profile or "(the run's, else the active one)",
            "stalled after": f"{options.stalled_after_s:g}s"}
