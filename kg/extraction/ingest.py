"""One `kg ingest`: find the files, plan the run, schedule its chunks, finish it honestly.

Nothing is written before there is work: unchanged and unreadable files create no run, and the
provider is checked (server, model, thinking) before the run row exists. Every chunk commits
alone, so a killed run loses nothing that committed and `--resume` redoes exactly the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kg.db import Database, collections
from kg.db.runstate import RunStatus
from kg.errors import KgError, ProviderUnavailable, UsageError
from kg.extraction import plan, probes, runs
from kg.extraction.breaker import FAILURES, WINDOW_S
from kg.extraction.cache import CallCache
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.extractor import Extractor, for_settings
from kg.extraction.plan import BusyFile, Planning, SkippedFile
from kg.extraction.scheduler import (
    Limits,
    LiveExtractor,
    Progress,
    ProgressTracker,
    Scheduler,
)
from kg.extraction.store import GraphWriter
from kg.extraction.vocabulary import Vocabulary
from kg.profiles import storage, views
from kg.routing import fallback
from kg.routing.fallback import Fallbacks
from kg.routing.rules import Router

__all__ = ["BusyFile", "IngestRequest", "IngestSummary", "Interrupted", "NoRun", "Planning",
           "Progress", "SkippedFile", "Terminated", "ingest"]


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by a SIGTERM handler: stop like Ctrl-C, exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Interrupted(KgError):
    """The run was stopped by the user (SIGINT) or the system (SIGTERM); it can be resumed."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NoRun(StrEnum):
    """Why an ingest created no run."""

    UNCHANGED = "unchanged"
    NOTHING_TO_DO = "nothing to do"


@dataclass
class IngestRequest:
    """What `kg ingest` asks for."""

    paths: list[Path] = field(default_factory=list)
    recursive: bool = False
    profile: str | None = None  # None: follow whichever profile is active
    force: bool = False
    resume: int | None = None
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    fuzzy_threshold: float = 92.0
    backoff_s: float = 1.0
    heartbeat_s: float = 5.0
    breaker_failures: int = FAILURES
    breaker_window_s: float = WINDOW_S
    cache: bool = True  # reuse valid replies to identical requests (--no-cache: off)
    ontology: str | None = None  # None: the profile's ontology


@dataclass
class IngestSummary:
    run_id: int | None
    status: RunStatus | NoRun
    documents: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    busy: list[BusyFile] = field(default_factory=list)
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


def _interrupted(run_id: int, exc: KeyboardInterrupt) -> Interrupted:
    code = 128 + exc.signum if isinstance(exc, Terminated) else 130
    return Interrupted(f"interrupted; committed chunks are kept; resume with `kg ingest "
                       f"--resume {run_id}`", code)


@dataclass(frozen=True)
class Opened:
    """A checked extractor, the profile (id, revision) it was built from, and its snapshot."""

    extractor: Extractor
    key: tuple[int, int]
    snapshot: dict[str, Any]


class _Ingestion:
    def __init__(self, db: Database, request: IngestRequest, models_dir: Path | None,
                 on_progress: Callable[[Progress], None] | None,
                 on_planning: Callable[[Planning], None] | None,
                 on_run: Callable[[int], None] | None = None) -> None:
        self.db = db
        self.on_run = on_run
        self.request = request
        self.models_dir = models_dir
        self.on_progress = on_progress
        self.on_planning = on_planning
        self.summary = IngestSummary(run_id=None, status=RunStatus.RUNNING)
        self.started = time.perf_counter()

    def _open(self, follow: str | None) -> Opened:
        """Build and check the extractor of the followed profile (fatal errors surface here,
        before anything is written)."""
        with self.db.session() as session:
            row = storage.get_profile(session, follow)
            settings = views.provider_settings(row)
            vocabulary = Vocabulary.load(session, self.request.ontology or row.ontology)
            key = (row.id, row.revision)
        try:
            extractor = for_settings(settings, vocabulary, self.models_dir)
        except ProviderUnavailable:
            if not fallback.wanted(settings, "unreachable"):
                raise
            # The primary is down but has a fallback: the run starts, and its first chunk
            # finds out (fast: connection refused) and sends the rest to the fallback.
            extractor = for_settings(settings, vocabulary, self.models_dir, check=False)
        snapshot = views.snapshot(extractor.settings)
        # The ontology actually used (a --ontology for this run wins over the profile's).
        snapshot.update(ontology=vocabulary.ontology, ontology_revision=vocabulary.revision)
        return Opened(extractor, key, snapshot)

    def _live(self, run_id: int, follow: str | None, opened: Opened) -> LiveExtractor:
        return LiveExtractor(self.db, run_id, follow, self.models_dir, opened.extractor,
                             opened.key)

    def _abandon(self, run_id: int | None, exc: BaseException) -> None:
        """Best effort: a run that stopped on an unexpected error is not left `running`."""
        if run_id is not None:
            with contextlib.suppress(Exception):
                runs.finish(self.db, run_id, RunStatus.FAILED, f"stopped by an error: {exc}")

    # -- a new run ------------------------------------------------------------------------
    def _plan(self, files: list[Path]) -> tuple[int, LiveExtractor] | None:
        """Documents into a new run, one short transaction each; None if nothing to do."""
        request, summary = self.request, self.summary
        run_id: int | None = None
        opened: Opened | None = None

        def start_run() -> int:
            nonlocal run_id, opened
            opened = self._open(request.profile)
            with self.db.session() as session:
                run_id = runs.start(session, profile_name=opened.snapshot["profile"],
                                    snapshot=opened.snapshot, options=self._options())
            return run_id

        try:
            plan.add_files(self.db, files, request.chunking, request.force, summary,
                           start_run, self.on_planning, profile=request.profile)
        except KeyboardInterrupt as exc:
            if opened is not None:
                opened.extractor.close()
            if run_id is None:
                raise
            runs.finish(self.db, run_id, RunStatus.INTERRUPTED, "interrupted while planning")
            raise _interrupted(run_id, exc) from None
        except BaseException as exc:
            if opened is not None:
                opened.extractor.close()
            self._abandon(run_id, exc)
            raise
        if run_id is not None and summary.documents == 0:
            runs.discard(self.db, run_id)  # everything was unchanged or taken meanwhile
            run_id = None
        if run_id is None or opened is None:
            if opened is not None:
                opened.extractor.close()
            return None
        live = self._live(run_id, request.profile, opened)
        if self.on_run:
            self.on_run(run_id)
        return run_id, live

    def _options(self) -> dict[str, Any]:
        r = self.request
        return {"follow_active": r.profile is None, "force": r.force,
                "chunking": r.chunking.model_dump(), "paths": [str(p) for p in r.paths]}

    def _nothing_to_do(self) -> IngestSummary:
        s = self.summary
        if s.skipped and not s.unchanged and not s.busy:
            shown = "; ".join(f"{path}: {reason}" for path, reason in s.skipped[:3])
            more = f" and {len(s.skipped) - 3} more" if len(s.skipped) > 3 else ""
            raise UsageError(f"nothing could be read ({shown}{more}); give .txt, .md, .pdf or "
                             ".html files with text in them")
        s.status = NoRun.UNCHANGED if s.unchanged and not s.busy else NoRun.NOTHING_TO_DO
        return s

    # -- resuming ---------------------------------------------------------------------------
    def _resume(self, run_id: int) -> LiveExtractor:
        with self.db.session() as session:
            run = runs.stopped(session, run_id)
            follow = self.request.profile
            if follow is None and not run.options.get("follow_active", True):
                follow = run.profile_name
        opened = self._open(follow)
        try:
            with self.db.session() as session:
                runs.reopen(session, run)
                runs.record_profile(session, run_id, opened.snapshot)
            self.summary.busy += plan.claim(self.db, run_id)
        except BaseException:
            opened.extractor.close()
            raise
        live = self._live(run_id, follow, opened)
        if self.on_run:
            self.on_run(run_id)
        return live

    # -- the whole thing --------------------------------------------------------------------
    def run(self) -> IngestSummary:
        probes.load(self.db)  # servers probed by earlier runs get their style at once
        try:
            return self._run()
        finally:
            with contextlib.suppress(KgError):
                probes.save(self.db)

    def _run(self) -> IngestSummary:
        request = self.request
        if request.resume is not None:
            run_id = request.resume
            live = self._resume(run_id)
        else:
            files = plan.discover(request.paths, request.recursive)
            if not files:
                raise UsageError("no files found; give files or use --recursive for folders")
            planned = self._plan(files)
            if planned is None:
                return self._nothing_to_do()
            run_id, live = planned
        self.summary.run_id = run_id
        limits = Limits(request.backoff_s, request.heartbeat_s, request.breaker_failures,
                        request.breaker_window_s)
        scheduler = Scheduler(self.db, run_id, live, GraphWriter(self.db, request.fuzzy_threshold),
                              limits, half_open=request.resume is not None,
                              fallbacks=Fallbacks(self.db, self.models_dir),
                              router=Router(self.db, self.models_dir),
                              cache=CallCache(self.db, lookup=not request.force)
                              if request.cache else None)
        try:
            work = plan.pending(self.db, run_id)
            tracker = ProgressTracker(work, self.started, self.on_progress)
            fatal = scheduler.run(work, tracker)
        except KeyboardInterrupt as exc:
            live.close()
            why = ("stopped by signal " + str(exc.signum) if isinstance(exc, Terminated)
                   else "interrupted by the user")
            runs.finish(self.db, run_id, RunStatus.INTERRUPTED, why)
            raise _interrupted(run_id, exc) from None
        except BaseException as exc:
            live.close()
            self._abandon(run_id, exc)
            raise
        if fatal is not None:
            finished = runs.finish(self.db, run_id, RunStatus.FAILED, fatal.message)
            self.summary.error = fatal.message
        else:
            finished = runs.finish(self.db, run_id)
        s = self.summary
        s.status = finished.status
        s.documents = finished.documents
        s.chunks_total = finished.chunks_total
        s.chunks_ok = finished.chunks_ok
        s.chunks_failed = finished.chunks_failed
        s.concepts_new = tracker.concepts
        s.relationships_new = tracker.relationships
        s.calls, s.prompt_tokens, s.completion_tokens, s.thinking_tokens, _ = finished.totals
        s.seconds = time.perf_counter() - self.started
        return s


def ingest(
    db: Database,
    request: IngestRequest,
    *,
    models_dir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_planning: Callable[[Planning], None] | None = None,
    on_run: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Run (or resume) one ingestion and return its summary; `on_run(run_id)` is called once
    the run is planned (or reopened), before its first chunk is sent."""
    return _Ingestion(db, pinned(db, request), models_dir, on_progress, on_planning,
                      on_run).run()


def pinned(db: Database, request: IngestRequest) -> IngestRequest:
    """The request with the collection's pinned profile and ontology where it names none."""
    if request.profile is not None and request.ontology is not None:
        return request
    profile, ontology = collections.pins(db)
    return dataclasses.replace(request, profile=request.profile or profile,
                               ontology=request.ontology or ontology)
