"""What runs and calls rows mean to every reader: statuses, liveness, call totals.

Below both the engine (which writes runs) and the read side (`kg runs`, the server's run views
and metrics), so neither has to import the other to tell a live run from a dead one.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kg.db.models import Call, utcnow
from kg.errors import ConflictError

# A run that has not written a heartbeat for this long has lost its process.
STALE_AFTER = timedelta(seconds=60)
HOST = socket.gethostname()


class RunStatus(StrEnum):
    """`runs.status` (the strings are the database's, see ck_run_status)."""

    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class DocumentStatus(StrEnum):
    """`documents.status`: whether every chunk of the document is in the graph (any run)."""

    PENDING = "pending"
    INGESTED = "ingested"
    PARTIAL = "partial"
    FAILED = "failed"


class ChunkStatus(StrEnum):
    """`chunk_extractions.status`: the chunk committed whole, or was recorded as failed."""

    OK = "ok"
    FAILED = "failed"


class CallTotals(NamedTuple):
    """What a run's `calls` rows add up to."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    thinking_tokens: int
    latency_ms: float


class RunLike(Protocol):
    """The columns liveness is judged from (an ORM Run or a Core row)."""

    @property
    def status(self) -> str: ...
    @property
    def heartbeat_at(self) -> datetime: ...
    @property
    def pid(self) -> int: ...
    @property
    def host(self) -> str: ...


def call_totals(session: Session, run_id: int) -> CallTotals:
    """Calls, tokens and LLM latency of a run, summed from its calls rows."""
    row = session.execute(select(
        func.count(Call.id), func.coalesce(func.sum(Call.prompt_tokens), 0),
        func.coalesce(func.sum(Call.completion_tokens), 0),
        func.coalesce(func.sum(Call.thinking_tokens), 0),
        func.coalesce(func.sum(Call.latency_ms), 0)).where(Call.run_id == run_id)).one()
    return CallTotals(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]))


def effective_status(run: RunLike, now: datetime | None = None) -> RunStatus:
    """A 'running' run whose process is gone (or silent) is reported as interrupted."""
    if run.status != RunStatus.RUNNING:
        return RunStatus(run.status)
    now = now or utcnow()
    beat = run.heartbeat_at if run.heartbeat_at.tzinfo else run.heartbeat_at.replace(tzinfo=UTC)
    if now - beat > STALE_AFTER:
        return RunStatus.INTERRUPTED
    if run.host == HOST and run.pid != os.getpid() and not _alive(run.pid):
        return RunStatus.INTERRUPTED
    return RunStatus.RUNNING


def check_resumable(run: RunLike, run_id: int) -> None:
    """Refuse to resume a run that a live process owns or that has nothing left to do."""
    status = effective_status(run)
    if status == RunStatus.RUNNING:
        raise ConflictError(f"run {run_id} is still running (pid {run.pid} on {run.host}); "
                            "wait for it or stop it first")
    if status == RunStatus.COMPLETED:
        raise ConflictError(f"run {run_id} is completed: nothing to resume; to extract its "
                            "documents again, ingest them with --force")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
