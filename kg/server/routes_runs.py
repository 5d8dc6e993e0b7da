"""Runs over HTTP: list, show, start (paths under the allowed roots, or uploaded files),
resume, cancel, and watch as Server-Sent Events; each in one collection (`/c/NAME/runs`, or
default without the prefix): a run started there ingests into it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from kg import queries
from kg.api import FILE_KINDS, ChunkingOptions, IngestRequest, NoRun, discover_files
from kg.db.models import Run
from kg.db.runstate import RunStatus, check_resumable, effective_status
from kg.errors import NotFoundError, UsageError
from kg.server.auth import Admin, Reader
from kg.server.errors import ApiError
from kg.server.jobs import Job
from kg.server.limits import MAX_ID, EventIdQuery, RowId
from kg.server.state import Scoped, ServerState, base_path, json_response

router = APIRouter(prefix="/runs", tags=["runs"])
MAX_FILES = 100
COPY_BLOCK = 1 << 20


class RunBody(BaseModel):
    """`POST /runs` with paths the server can read (under one of its --root folders)."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(min_length=1, max_length=1000,
                             description="Files or folders under one of the server's roots "
                                         "(a relative path is taken from the first root).")
    recursive: bool = False
    profile: str | None = Field(None, max_length=64,
                                description="Profile for this run (default: the active one).")
    force: bool = Field(False, description="Re-extract files even if unchanged.")
    chunking: dict[str, int] | None = Field(
        None, description="target_tokens, min_tokens, max_tokens, overlap_tokens.")


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, max_length=64)


RUN_BODIES: dict[str, Any] = {
    "requestBody": {"content": {
        "application/json": {"schema": RunBody.model_json_schema()},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "profile": {"type": "string"}, "force": {"type": "boolean"},
                "chunking": {"type": "string", "description": "a JSON object, as above"}}}},
    }, "required": True}}


def _chunking(values: Any) -> ChunkingOptions:
    if values is None:
        return ChunkingOptions()
    if not isinstance(values, dict):
        raise UsageError("chunking must be an object of chunk sizes")
    try:
        return ChunkingOptions(**values)
    except (ValidationError, TypeError) as exc:
        detail = (exc.errors()[0]["msg"].removeprefix("Value error, ")
                  if isinstance(exc, ValidationError) else str(exc))
        raise UsageError(f"invalid chunk sizes: {detail}") from None


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def allowed_files(paths: list[str], recursive: bool, roots: tuple[Path, ...]) -> list[Path]:
    """The files a path run may read: every given path and every file found in a folder must
    lie under an allowed root once symlinks are resolved (else 403, nothing read)."""
    if not roots:
        raise ApiError(403, "this server ingests no paths: start it with `kg serve --root DIR`,"
                            " or upload the files")
    given = []
    for raw in paths:
        if not raw or "\x00" in raw:
            raise UsageError("paths must be non-empty text")
        path = Path(raw).expanduser()
        real = path.resolve() if path.is_absolute() else (roots[0] / path).resolve()
        if not _inside(real, roots):
            raise ApiError(403, f"{raw} is outside the folders this server may read "
                                f"({', '.join(map(str, roots))})")
        given.append(real)
    files = discover_files(given, recursive)
    for f in files:
        if not _inside(f.resolve(), roots):
            raise ApiError(403, f"{f} leads outside the folders this server may read (a "
                                "symlink?); remove it or give the files one by one")
    return [f.resolve() for f in files]


async def _save_uploads(request: Request, folder: Path,
                        created: list[Path]) -> tuple[list[Path], dict[str, Any]]:
    """Uploaded files stored under names the server chooses (their SHA-256: the same content
    uploaded twice is the same document); the client's file names are never used as paths.
    The files this request added (not those already there) are appended to `created`."""
    form = await request.form(max_files=MAX_FILES, max_fields=20)
    options: dict[str, Any] = {}
    uploads: list[tuple[UploadFile, str]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "files":
                raise UsageError(f"upload files in the `files` field (got {key!r})")
            uploads.append((value, _suffix(value)))
        elif key in ("profile", "force", "chunking"):
            options[key] = value
        else:
            raise UsageError(f"unknown form field {key!r}; give files, profile, force, chunking")
    if not uploads:
        raise UsageError("no files were uploaded; send them in the `files` field")
    # Every upload was checked before the first one is kept; copying and hashing happen in
    # a worker thread, not on the event loop.
    saved = [await to_thread.run_sync(_store, upload, suffix, folder, created)
             for upload, suffix in uploads]
    return saved, options


def _suffix(upload: UploadFile) -> str:
    """The file type, the only thing taken from the client's file name."""
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in FILE_KINDS:
        raise UsageError(f"upload {upload.filename!r}: unsupported file type "
                         f"{suffix or '(none)'!r}; kg reads {', '.join(sorted(FILE_KINDS))}")
    return suffix


def _store(upload: UploadFile, suffix: str, folder: Path, created: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256()
    handle, temp = tempfile.mkstemp(prefix=".upload-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            upload.file.seek(0)
            for block in iter(lambda: upload.file.read(COPY_BLOCK), b""):
                digest.update(block)
                out.write(block)
        target = folder / f"{digest.hexdigest()}{suffix}"
        new = not target.exists()
        os.replace(temp, target)
        if new:
            created.append(target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def _discard(created: list[Path], job: Job | None) -> None:
    """Delete what a request uploaded when no run took it (refused, or nothing to do: empty
    or unreadable files). Files that were there before belong to earlier documents: they
    stay, like everything a run that started (or is still planning) may read."""
    taken = job is not None and (job.run_id is not None or job.summary is None)
    if not taken:
        for path in created:
            path.unlink(missing_ok=True)


def _started(job: Job, base: str) -> Response:
    if job.run_id is not None:
        status = (job.summary.status if job.summary is not None else RunStatus.RUNNING)
        return json_response({"run_id": job.run_id, "status": status,
                              "events": f"{base}/runs/{job.run_id}/events"}, 202)
    if job.summary is None:  # planning takes longer than the server waits
        return json_response({"run_id": None, "status": "planning",
                              "note": "the run appears in GET /runs once planned"}, 202)
    s = job.summary
    return json_response({"run_id": None, "status": s.status,
                          "unchanged": s.unchanged,
                          "skipped": [{"path": p, "reason": r} for p, r in s.skipped],
                          "busy": [{"path": p, "run_id": r} for p, r in s.busy]},
                         200 if s.status in (NoRun.UNCHANGED, NoRun.NOTHING_TO_DO) else 202)


@router.get("", summary="Runs, newest first")
def list_runs(state: Scoped, _who: Reader,
              limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Response:
    with state.db.session() as session:
        rows = queries.list_runs(session, limit)
    for row in rows:
        row["cancellable"] = state.jobs.job(row["id"]) is not None
    return json_response(rows)


@router.get("/{run_id}", summary="One run: status, totals from its calls, failed chunks")
def show_run(run_id: RowId, state: Scoped,
             _who: Reader) -> Response:
    with state.db.session() as session:
        data = queries.run_detail(session, run_id)
    data["cancellable"] = state.jobs.job(run_id) is not None
    return json_response(data)


@router.post("", summary="Start an ingestion (paths under the server's roots, or uploads)",
             description="JSON `{\"paths\": [...]}` for files the server can read under one of "
                         "its `--root` folders, or multipart/form-data with `files` (stored "
                         "under names the server chooses). Answers 202 with the run id once "
                         "the files are planned; follow it at /runs/{id}/events.",
             openapi_extra=RUN_BODIES, status_code=202)
async def start_run(request: Request, state: Scoped,
                    who: Admin) -> Response:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        created: list[Path] = []
        job: Job | None = None
        try:
            files, options = await _save_uploads(request, state.upload_dir, created)
            force = str(options.get("force", "false")).lower() in ("1", "true", "yes", "on")
            try:
                chunking_values = (json.loads(options["chunking"]) if "chunking" in options
                                   else None)
            except json.JSONDecodeError:
                raise UsageError("chunking must be a JSON object of chunk sizes") from None
            ingest = IngestRequest(paths=files, profile=options.get("profile") or None,
                                   force=force, chunking=_chunking(chunking_values))
            started = await to_thread.run_sync(
                lambda: state.jobs.start(ingest, by=who.actor, db=state.db))
            job = started
        finally:
            _discard(created, job)
        return _started(started, base_path(request))
    if media not in ("application/json", ""):
        # The request guard refuses these first; the endpoint never reads them as JSON.
        raise ApiError(415, f"POST /runs accepts application/json or multipart/form-data "
                            f"(got {media[:100]})")
    raw = await request.body()
    try:
        body = RunBody.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise UsageError(f"malformed JSON body: {first['msg']}") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, f"body field {where}: {first['msg']}") from None
    files = await to_thread.run_sync(allowed_files, body.paths, body.recursive,
                                     state.config.roots)
    ingest = IngestRequest(paths=files, profile=body.profile, force=body.force,
                           chunking=_chunking(body.chunking))
    job = await to_thread.run_sync(lambda: state.jobs.start(ingest, by=who.actor, db=state.db))
    return _started(job, base_path(request))


@router.post("/{run_id}/resume", summary="Redo what a stopped run did not commit",
             status_code=202)
def resume_run(run_id: RowId, request: Request, state: Scoped, who: Admin,
               body: ResumeBody | None = None) -> Response:
    _stopped(state, run_id)
    ingest = IngestRequest(resume=run_id, profile=body.profile if body else None)
    return _started(state.jobs.start(ingest, by=who.actor, db=state.db), base_path(request))


def _stopped(state: ServerState, run_id: int) -> None:
    with state.db.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}; see GET /runs")
        check_resumable(run, run_id)  # 409 for a running or completed run


@router.post("/{run_id}/cancel", summary="Stop a run this server is running (committed chunks "
             "are kept; it can be resumed)", status_code=202)
def cancel_run(run_id: RowId, state: Scoped,
               _who: Admin) -> Response:
    if state.jobs.cancel(run_id, state.db.collection_id):
        return json_response({"run_id": run_id, "status": "cancelling"}, 202)
    with state.db.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}; see GET /runs")
        status = effective_status(run)
        if status != RunStatus.RUNNING:
            raise ApiError(409, f"run {run_id} is not running (it is {status})")
        raise ApiError(409, f"run {run_id} runs in another process (pid {run.pid} on "
                            f"{run.host}); stop that process (Ctrl-C or SIGTERM)")


@router.get("/{run_id}/events", summary="The run's progress as Server-Sent Events",
            response_class=StreamingResponse,
            description="Events: `progress` (counts, status), `chunk` (a chunk committed, "
                        "with its concept and relationship counts), `chunk_failed` (with the "
                        "reason), `finished` (final status and totals; the stream ends). "
                        "Reconnect with `Last-Event-ID` (or `?after=`) to get only what was "
                        "missed.")
async def run_events(run_id: RowId, state: Scoped, _who: Reader,
                     after: EventIdQuery = 0,
                     last_event_id: Annotated[str | None, Header(max_length=100)] = None
                     ) -> Response:
    last = (last_event_id or "").strip()
    if last.isascii() and last.isdigit():  # anything else is not an id this server sent
        if len(last) > len(str(MAX_ID)) or int(last) > MAX_ID:
            raise ApiError(422, f"header Last-Event-ID: no event has an id that large "
                                f"(got {last[:30]}…)")
        after = max(after, int(last))
    feed = await state.events.open(run_id, state.db)
    return StreamingResponse(state.events.stream(feed, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
