"""Request scheduling for one run: keep up to max_parallel chunks in flight, follow the profile
(hot reload), stop on a circuit breaker, and hand what lands to the commit thread.

Before each round of submissions the followed profile's (id, revision) is read (a read less than
REVISION_FRESH_S old is reused: against a fast server rounds come hundreds a second, and each
read is a round trip the request loop waits for): when an operator changed or switched it, the
next chunks go out with an extractor built from the new row, and the replaced one is closed once
its last request is back. One thread commits (`CommitThread`, the only user of the run's
`GraphWriter`) while requests keep flowing.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.exc import DBAPIError

from kg.db import Database
from kg.db.models import Chunk
from kg.errors import ProviderError
from kg.extraction import runs
from kg.extraction.breaker import FAILURES, WINDOW_S, CircuitBreaker
from kg.extraction.cache import CallCache
from kg.extraction.extract import ChunkOutcome
from kg.extraction.extractor import Extractor, for_settings
from kg.extraction.plan import Pending
from kg.extraction.store import ChunkRef, Committed, GraphWriter
from kg.profiles import storage, views
from kg.routing import fallback
from kg.routing.fallback import Fallbacks
from kg.routing.rules import Router

log = logging.getLogger(__name__)
CHUNKS = cast(Table, Chunk.__table__)
T = TypeVar("T")
MAX_WORKERS = 64  # the ceiling of max_parallel
COMMIT_QUEUE = 256  # outcomes waiting for the database; beyond it, requests wait (flat memory)
TEXTS_AHEAD = 64  # chunk texts read ahead of the requests, in one query
REVISION_FRESH_S = 0.05  # a profile revision read this recently still holds for the next round


@dataclass(frozen=True)
class Progress:
    """Where a run stands after a chunk landed (committed or recorded as failed)."""

    document: str  # the file of the chunk that just landed
    document_done: int  # chunks of that file done (earlier runs' included)
    document_chunks: int
    document_failed: int  # chunks of that file that failed in this session
    documents_done: int  # files of this run with nothing left to do
    documents_total: int
    done: int  # chunks landed in this session
    total: int  # chunks this session set out to do
    failed: int
    concepts: int  # new concepts so far
    relationships: int  # new relationships so far
    tokens: int  # tokens generated (completion and thinking), for tokens/s
    elapsed_s: float
    finished_document: bool  # this chunk was the last one its file was waiting for

    @property
    def rate(self) -> float:
        """Chunks per second."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


class ProgressTracker:
    """Turns landed chunks into Progress; used only from the commit thread."""

    def __init__(self, work: Pending, started: float,
                 on_progress: Callable[[Progress], None] | None) -> None:
        self.documents = work.documents
        self.left = {doc_id: d.pending for doc_id, d in work.documents.items()}
        self.failed_in: dict[int, int] = {}
        self.total = len(work.chunks)
        self.documents_total = sum(1 for d in work.documents.values() if d.pending)
        self.documents_done = 0
        self.started = started
        self.on_progress = on_progress
        self.done = self.failed = self.concepts = self.relationships = self.tokens = 0

    def landed(self, ref: ChunkRef, outcome: ChunkOutcome, committed: Committed) -> None:
        self.done += 1
        if not committed.ok:
            self.failed += 1
            self.failed_in[ref.document_id] = self.failed_in.get(ref.document_id, 0) + 1
        self.concepts += committed.new_concepts
        self.relationships += committed.new_relationships
        self.tokens += sum(a.completion_tokens + a.thinking_tokens for a in outcome.attempts)
        self.left[ref.document_id] = self.left.get(ref.document_id, 1) - 1
        finished = self.left[ref.document_id] == 0
        self.documents_done += finished
        if self.on_progress is None:
            return
        doc = self.documents.get(ref.document_id)
        chunks = doc.chunks if doc else 0
        self.on_progress(Progress(
            document=doc.path if doc else "", document_done=chunks - self.left[ref.document_id],
            document_chunks=chunks, document_failed=self.failed_in.get(ref.document_id, 0),
            documents_done=self.documents_done,
            documents_total=self.documents_total, done=self.done, total=self.total,
            failed=self.failed, concepts=self.concepts, relationships=self.relationships,
            tokens=self.tokens, elapsed_s=time.perf_counter() - self.started,
            finished_document=finished))


class LiveExtractor:
    """The extractor serving the next chunk, rebuilt when the followed profile changes.

    `follow` None follows whichever profile is active. A replaced extractor is closed once
    the last request sent through it is back (`release`).
    """

    def __init__(self, db: Database, run_id: int, follow: str | None, models_dir: Path | None,
                 current: Extractor, key: tuple[int, int]) -> None:
        self.db = db
        self.run_id = run_id
        self.follow = follow
        self.models_dir = models_dir
        self.current = current
        self.key = key
        self._in_flight: dict[int, int] = {}
        self._retired: dict[int, Extractor] = {}

    def refresh(self, conn: Connection) -> Extractor:
        """The extractor for the profile as it is now (one indexed query when unchanged)."""
        if storage.revision_key(conn, self.follow) == self.key:
            return self.current
        with self.db.session() as session:
            row = storage.get_profile(session, self.follow)
            fresh = for_settings(views.provider_settings(row), self.current.vocabulary,
                                 self.models_dir)
            runs.record_profile(session, self.run_id, views.snapshot(fresh.settings))
        log.info("run %d: profile %s revision %d now serves the next chunks (%s %s)",
                 self.run_id, row.name, row.revision, fresh.settings.provider,
                 fresh.settings.model)
        self._retire(self.current)
        self.current, self.key = fresh, (row.id, row.revision)
        return fresh

    def acquire(self, extractor: Extractor) -> None:
        self._in_flight[id(extractor)] = self._in_flight.get(id(extractor), 0) + 1

    def release(self, extractor: Extractor) -> None:
        left = self._in_flight[id(extractor)] - 1
        self._in_flight[id(extractor)] = left
        if left == 0 and id(extractor) in self._retired:
            self._close(self._retired.pop(id(extractor)))

    def _retire(self, extractor: Extractor) -> None:
        if self._in_flight.get(id(extractor), 0) == 0:
            self._close(extractor)
        else:
            self._retired[id(extractor)] = extractor

    def _close(self, extractor: Extractor) -> None:
        self._in_flight.pop(id(extractor), None)
        log.debug("closing the provider of revision %d", extractor.settings.revision)
        extractor.close()

    def close(self) -> None:
        """Close every extractor no request is using (at the end, that is all of them);
        calling it again does nothing."""
        for extractor in [self.current, *self._retired.values()]:
            if self._in_flight.get(id(extractor), 0) == 0:
                extractor.close()
        self._retired.clear()


class Reads:
    """The request loop's reads (the profile's revision before each round, chunk texts) on one
    connection kept for the run, in autocommit: one round trip per read, where a connection
    from the pool costs a ping, a BEGIN and a ROLLBACK besides (and each round trip, under
    load, waits for the GIL to come back). No snapshot is held between reads, so SQLite's
    writers are not held back. A connection that broke is replaced once, as the pool would."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.conn: Connection | None = None

    def __call__(self, read: Callable[[Connection], T]) -> T:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self.db.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            try:
                return read(self.conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
                self.close()
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class CommitThread(threading.Thread):
    """Commits what has landed, in groups, while requests keep flowing."""

    def __init__(self, writer: GraphWriter, run_id: int, tracker: ProgressTracker,
                 after_commit: Callable[[], None] | None = None) -> None:
        super().__init__(name="kg-commit", daemon=True)
        self.writer = writer
        self.run_id = run_id
        self.tracker = tracker
        self.after_commit = after_commit  # more writes for this thread (the call cache's)
        self.error: BaseException | None = None
        # Bounded: if the database falls behind, the request loop waits (memory stays flat).
        self.queue: queue.Queue[tuple[ChunkRef, ChunkOutcome] | None] = queue.Queue(
            maxsize=COMMIT_QUEUE)

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
        """Commit everything queued, stop, and re-raise the thread's failure if any."""
        if self.is_alive():
            self.queue.put(None)
            self.join()
        self.raise_if_failed()

    def run(self) -> None:
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
                    if outcome.fatal is None:
                        group.append((ref, outcome))
                    elif outcome.attempts:  # the chunk stays pending; its requests still count
                        self.writer.record_calls(self.run_id, ref, outcome)
                if group:
                    # Everything that landed meanwhile commits together, each chunk whole.
                    results = self.writer.commit(self.run_id, group)
                    for (ref, outcome), committed in zip(group, results, strict=True):
                        self.tracker.landed(ref, outcome, committed)
                if self.after_commit is not None:
                    self.after_commit()
        except BaseException as exc:  # handed to the request loop, which re-raises it
            self.error = exc
        finally:
            self.writer.close()  # the connection it kept between commits


@dataclass
class Job:
    ref: ChunkRef
    extractor: Extractor
    text: str
    fallback: bool = False  # sent to the primary's fallback profile
    rule_id: int | None = None  # the routing rule that chose its profile


@dataclass(frozen=True)
class Limits:
    """How the scheduler paces itself (from the ingest request)."""

    backoff_s: float = 1.0
    heartbeat_s: float = 5.0
    breaker_failures: int = FAILURES
    breaker_window_s: float = WINDOW_S


class Scheduler:
    """Runs the pending chunks of one run; returns the error that stopped it, if any."""

    def __init__(self, db: Database, run_id: int, live: LiveExtractor, writer: GraphWriter,
                 limits: Limits, *, half_open: bool = False,
                 fallbacks: Fallbacks | None = None, router: Router | None = None,
                 cache: CallCache | None = None) -> None:
        self.db = db
        self.run_id = run_id
        self.live = live
        self.writer = writer
        self.limits = limits
        self.half_open = half_open
        self.breakers: dict[str, CircuitBreaker] = {}
        self.fallbacks = fallbacks
        self.router = router
        self.cache = cache

    def route(self, primary: Extractor) -> tuple[Extractor, bool]:
        """The extractor for the next chunks: the primary, or its fallback while the
        primary's circuit is open (True when it is the fallback)."""
        if self.fallbacks is None or not self.breaker(primary).is_open:
            return primary, False
        if not fallback.covers_open_circuit(primary.settings):
            return primary, False
        spare = self.fallbacks.for_primary(primary.settings)
        return (spare, True) if spare is not None else (primary, False)

    def fallback_for(self, job: Job, outcome: ChunkOutcome) -> Extractor | None:
        """Where a chunk the primary could not serve goes next, if anywhere."""
        if job.fallback or self.fallbacks is None:
            return None
        kind = fallback.failure_kind(outcome)
        if fallback.is_open_circuit(outcome):
            wanted = fallback.covers_open_circuit(job.extractor.settings)
        else:
            wanted = fallback.wanted(job.extractor.settings, kind)
        if not wanted:
            return None
        spare = self.fallbacks.for_primary(job.extractor.settings)
        if spare is not None and kind == "unreachable" and outcome.fatal is not None:
            # No point knocking on a closed door for every chunk: the rest go straight over.
            self.breaker(job.extractor).trip(outcome.fatal)
        return spare

    def breaker(self, extractor: Extractor) -> CircuitBreaker:
        """One breaker per endpoint; a resumed run starts each one half-open (a probe)."""
        endpoint = extractor.endpoint
        if endpoint not in self.breakers:
            threshold = max(self.limits.breaker_failures, extractor.settings.max_parallel + 1)
            self.breakers[endpoint] = CircuitBreaker(
                endpoint, threshold=threshold, window_s=self.limits.breaker_window_s,
                half_open=self.half_open)
        return self.breakers[endpoint]

    def run(self, work: Pending, tracker: ProgressTracker) -> ProviderError | None:
        pending = work.chunks
        in_flight: dict[Future[ChunkOutcome], Job] = {}
        fatal: ProviderError | None = None
        last_beat = time.monotonic()
        if self.cache is not None:
            self.cache.flush_when_full = False  # the commit thread writes it, between commits
        commit = CommitThread(self.writer, self.run_id, tracker,
                              self.cache.flush_if_full if self.cache is not None else None)
        pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="kg-chunk")
        reads = Reads(self.db)
        texts: dict[int, str] = {}  # read ahead: chunk id -> text
        revision_read = -REVISION_FRESH_S  # when the profile's revision was last read

        def room(extractor: Extractor) -> int:
            limit = extractor.settings.max_parallel
            return self.breaker(extractor).capacity(limit) - len(in_flight)

        def submit(extractor: Extractor, ref: ChunkRef, text: str, spare: bool,
                   rule_id: int | None = None) -> None:
            backoff, breaker = self.limits.backoff_s, self.breaker(extractor)
            future = (pool.submit(self.cache.extract, extractor, ref.id, text,
                                  backoff_s=backoff, breaker=breaker)
                      if self.cache is not None
                      else pool.submit(extractor.extract, ref.id, text, backoff_s=backoff,
                                       breaker=breaker))
            in_flight[future] = Job(ref, extractor, text, spare, rule_id)
            self.live.acquire(extractor)

        def refill() -> None:
            nonlocal fatal, revision_read
            if not pending or fatal is not None:
                return
            if room(self.route(self.live.current)[0]) <= 0:
                return
            # Hot reload: the revision is read right before this round is sent (or was, less
            # than REVISION_FRESH_S ago), so every chunk goes out with the settings current
            # at that time.
            started = time.monotonic()
            try:
                if started - revision_read >= REVISION_FRESH_S:
                    live = reads(self.live.refresh)
                    revision_read = started
                else:
                    live = self.live.current
                extractor, spare = self.route(live)
            except ProviderError as exc:
                fatal = exc
                return
            free = room(extractor)
            batch = [pending.popleft() for _ in range(min(max(free, 0), len(pending)))]
            missing = [ref.id for ref in batch if ref.id not in texts]
            if missing:
                ahead = missing + [ref.id for ref in itertools.islice(pending, TEXTS_AHEAD)]
                texts.update(reads(lambda conn: conn.execute(select(
                    CHUNKS.c.id, CHUNKS.c.text).where(CHUNKS.c.id.in_(ahead))).all()))
            for ref in batch:
                text = texts.pop(ref.id, "")
                routed = self.router.route(text, ref.document_id) if self.router else None
                if routed is None:
                    submit(extractor, ref, text, spare)
                else:  # a routing rule picked another profile for this chunk
                    chosen, chosen_spare = self.route(routed[0])
                    submit(chosen, ref, text, chosen_spare, routed[1])

        commit.start()
        try:
            while in_flight or (pending and fatal is None):
                refill()
                if not in_flight:
                    break
                finished, _ = wait(list(in_flight), timeout=self.limits.heartbeat_s,
                                   return_when=FIRST_COMPLETED)
                for future in finished:
                    job = in_flight.pop(future)
                    self.live.release(job.extractor)
                    outcome = future.result()
                    outcome.endpoint, outcome.fallback = job.extractor.endpoint, job.fallback
                    outcome.rule_id = job.rule_id
                    spare = self.fallback_for(job, outcome)
                    if spare is not None:
                        log.info("run %d: chunk %d goes to fallback profile %s (%s)",
                                 self.run_id, job.ref.id, spare.settings.profile_name,
                                 fallback.failure_kind(outcome))
                        if outcome.attempts:  # the primary's requests still count as calls
                            commit.put(job.ref, replace(outcome, validation=None, fatal=(
                                fallback.FellBack("served by the fallback"))))
                        submit(spare, job.ref, job.text, True, job.rule_id)
                        continue
                    if outcome.fatal is not None and fatal is None:
                        log.info("run %d stops: %s", self.run_id, outcome.fatal.message)
                    fatal = fatal or outcome.fatal
                    commit.put(job.ref, outcome)  # blocks when the database lags
                commit.raise_if_failed()
                if time.monotonic() - last_beat >= self.limits.heartbeat_s:
                    runs.heartbeat(self.db, self.run_id)
                    last_beat = time.monotonic()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            reads.close()
            commit.close()  # what already landed is complete: it still commits
            self.live.close()
            self._close_extras()
            raise
        reads.close()
        pool.shutdown(wait=True)
        commit.close()
        self.live.close()
        self._close_extras()
        return fatal

    def _close_extras(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        if self.fallbacks is not None:
            self.fallbacks.close()
        if self.router is not None:
            self.router.close()
