"""Ingestions started through the API: each runs in a background thread of the server.

A run is the engine's ordinary `ingest`, so it plans, commits, heartbeats and finishes exactly
like `kg ingest`, in the collection of the request that started it. Cancelling sets a flag
that the run's progress callbacks check: they raise `Cancelled`, which the engine treats like
Ctrl-C (committed chunks kept, the run marked interrupted, resumable).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kg.api import IngestRequest, IngestSummary, Interrupted, Planning, Progress, ingest
from kg.db import Database
from kg.errors import KgError
from kg.server.errors import ApiError

log = logging.getLogger(__name__)
# How long `POST /runs` waits for planning to give the run its id before it answers 202.
PLANNING_WAIT_S = 60.0


class Cancelled(KeyboardInterrupt):
    """Raised from a cancelled run's callbacks: the engine stops as on Ctrl-C."""


@dataclass
class Job:
    """One ingestion running in this server."""

    request: IngestRequest
    by: str
    db: Database  # the run's own engine, working in the run's collection
    cancel: threading.Event = field(default_factory=threading.Event)
    known: threading.Event = field(default_factory=threading.Event)  # run id known, or ended
    done: threading.Event = field(default_factory=threading.Event)
    run_id: int | None = None
    summary: IngestSummary | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def announce(self, run_id: int) -> None:
        self.run_id = run_id
        self.known.set()

    def check(self, _progress: Progress | Planning) -> None:
        """The progress callback: stop here if someone cancelled the run."""
        if self.cancel.is_set():
            raise Cancelled()


class RunManager:
    """The server's ingestions: start, cancel, and stop them all at shutdown."""

    def __init__(self, db: Database, models_dir: Path | None, max_runs: int = 4) -> None:
        # Runs get their own engine: its connections never wait behind the API's requests
        # (a busy API would otherwise slow every commit of a run down).
        self.db = Database(db.url.render_as_string(hide_password=False))
        self.models_dir = models_dir
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._active: list[Job] = []
        self._by_run: dict[int, Job] = {}

    def start(self, request: IngestRequest, *, by: str, db: Database | None = None,
              wait_s: float = PLANNING_WAIT_S) -> Job:
        """Start an ingestion in `db`'s collection (None: default) and wait until it has a run
        id (or ended: nothing to do, or an error before anything was written, which is
        raised here)."""
        target = self.db if db is None else self.db.scoped(db.collection_id, db.collection,
                                                           enforce=db.enforce)
        job = Job(request, by, target)
        with self._lock:
            if len([j for j in self._active if not j.done.is_set()]) >= self.max_runs:
                raise ApiError(429, f"this server already runs {self.max_runs} ingestions; "
                                    "wait for one to finish")
            self._active.append(job)
        job.thread = threading.Thread(target=self._run, args=(job,), name="kg-api-run",
                                      daemon=True)
        job.thread.start()
        job.known.wait(wait_s)
        if job.run_id is None and job.done.is_set() and job.error is not None:
            raise job.error
        with self._lock:
            if job.run_id is not None and not job.done.is_set():
                self._by_run[job.run_id] = job
        return job

    def _run(self, job: Job) -> None:
        try:
            job.summary = ingest(job.db, job.request, models_dir=self.models_dir,
                                 on_progress=job.check, on_planning=job.check,
                                 on_run=job.announce)
        except (Interrupted, Cancelled) as exc:
            job.error = exc
            log.info("run %s cancelled", job.run_id)
        except KgError as exc:
            job.error = exc
            log.info("run %s stopped: %s", job.run_id, exc.message)
        except BaseException as exc:  # a thread must not die silently
            job.error = exc
            log.exception("run %s failed", job.run_id)
        finally:
            job.done.set()
            job.known.set()
            with self._lock:
                if job in self._active:
                    self._active.remove(job)
                if job.run_id is not None:
                    self._by_run.pop(job.run_id, None)

    def job(self, run_id: int, collection_id: int | None = None) -> Job | None:
        """The live job of a run started by this server (in that collection, if given), if it
        is still going."""
        with self._lock:
            job = self._by_run.get(run_id)
        if job is None or job.done.is_set():
            return None
        return job if collection_id in (None, job.db.collection_id) else None

    def cancel(self, run_id: int, collection_id: int | None = None) -> bool:
        """Ask a run of this server (in that collection, if given) to stop; False if this
        server does not run it."""
        job = self.job(run_id, collection_id)
        if job is None:
            return False
        job.cancel.set()
        return True

    def cancel_all(self) -> None:
        """Ask every run of this server to stop (safe from any thread)."""
        with self._lock:
            jobs = list(self._active)
        for job in jobs:
            job.cancel.set()

    def shutdown(self, timeout_s: float = 15.0) -> None:
        """Cancel every run (they end interrupted and resumable) and wait for them."""
        self.cancel_all()
        with self._lock:
            jobs = list(self._active)
        deadline = time.monotonic() + timeout_s
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
        self.db.dispose()
