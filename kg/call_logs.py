"""The read side of `kg logs`: stored LLM calls with their prompt, reply, errors and timings.

A call row keeps the reply; the prompt (the user message) is rebuilt from the chunk's stored
text, and a repair attempt also sent back the reply and errors of an earlier call
(`repair_of`). The fixed instructions, the same for every call, are not repeated. Nothing
stored in `calls` is a secret (keys are never stored); URL passwords in errors are masked.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import Call, Chunk, Document, Run
from kg.errors import NotFoundError, UsageError
from kg.text import chunk_prompt
from kg.urls import redact

FAILED = ("invalid", "error")


class CallLog(BaseModel):
    """One LLM request as `kg logs` shows it."""

    id: int
    run_id: int | None
    chunk_id: int | None
    document: str | None
    chunk_ordinal: int | None
    attempt: int
    provider: str
    model: str
    profile_name: str
    profile_revision: int
    status: str
    error_kind: str | None
    error: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    thinking_tokens: int
    latency_ms: float
    load_ms: float | None
    prompt_eval_ms: float | None
    eval_ms: float | None
    started_at: datetime
    prompt: str | None
    repair_of: int | None
    response: str | None


class CallFilter(BaseModel):
    """Which calls were asked for; `run_id` is filled in with the last run by default."""

    run_id: int | None = None
    chunk_id: int | None = None
    failed: bool = False
    profile: str | None = None
    every_run: bool = False
    limit: int | None = None


def last_run_id(session: Session) -> int | None:
    """The newest run, or None before the first `kg ingest`."""
    return session.scalar(select(Run.id).order_by(Run.id.desc()).limit(1))


def resolve_scope(session: Session, scope: CallFilter) -> CallFilter:
    """Check the filters; without --run, --chunk or --all the scope is the last run."""
    if scope.limit is not None and scope.limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {scope.limit})")
    if scope.run_id is not None and session.get(Run, scope.run_id) is None:
        raise NotFoundError(f"no run {scope.run_id}; see `kg runs list`")
    if scope.chunk_id is not None and session.get(Chunk, scope.chunk_id) is None:
        raise NotFoundError(f"no chunk {scope.chunk_id}; chunk ids are in `kg runs show RUN` "
                            "and in `kg logs --json`")
    if scope.run_id is None and scope.chunk_id is None and not scope.every_run:
        return scope.model_copy(update={"run_id": last_run_id(session)})
    return scope


def list_calls(session: Session, scope: CallFilter) -> list[CallLog]:
    """Calls in `scope`, newest first (resolve the scope first with `resolve_scope`)."""
    if (scope.run_id is None and scope.chunk_id is None and not scope.every_run):
        return []  # no run yet
    query = (
        select(Call, Chunk.text, Chunk.ordinal, Document.path)
        .outerjoin(Chunk, Chunk.id == Call.chunk_id)
        .outerjoin(Document, Document.id == Chunk.document_id)
    )
    if scope.run_id is not None:
        query = query.where(Call.run_id == scope.run_id)
    if scope.chunk_id is not None:
        query = query.where(Call.chunk_id == scope.chunk_id)
    if scope.failed:
        query = query.where(Call.status.in_(FAILED))
    if scope.profile:
        query = query.where(Call.profile_name == scope.profile)
    query = query.order_by(Call.id.desc())
    if scope.limit is not None:
        query = query.limit(scope.limit)
    rows = session.execute(query).all()
    repairs = _repairs(session, [r[0] for r in rows])
    return [_log(call, text, ordinal, path, repairs.get(call.id))
            for call, text, ordinal, path in rows]


def _repairs(session: Session, calls: list[Call]) -> dict[int, int]:
    """For each repair attempt, the id of the invalid call whose reply and errors it sent back.

    A retry after a transport error resends the same messages, so the answer is the newest
    invalid attempt of the same chunk in the same series (a series restarts at attempt 1).
    """
    chunk_ids = {c.chunk_id for c in calls if c.attempt > 1 and c.chunk_id is not None}
    if not chunk_ids:
        return {}
    found: dict[int, int] = {}
    last_invalid: dict[tuple[int | None, int | None], int | None] = {}
    for call in session.scalars(select(Call).where(Call.chunk_id.in_(chunk_ids))
                                .order_by(Call.id)):
        key = (call.run_id, call.chunk_id)
        if call.attempt == 1:
            last_invalid[key] = None
        elif last_invalid.get(key) is not None:
            found[call.id] = last_invalid[key]  # type: ignore[assignment]
        if call.status == "invalid":
            last_invalid[key] = call.id
    return found


def _log(call: Call, text: str | None, ordinal: int | None, path: str | None,
         repair_of: int | None) -> CallLog:
    prompt = None if text is None else chunk_prompt(text)
    return CallLog(
        id=call.id, run_id=call.run_id, chunk_id=call.chunk_id, document=path,
        chunk_ordinal=ordinal, attempt=call.attempt, provider=call.provider, model=call.model,
        profile_name=call.profile_name, profile_revision=call.profile_revision,
        status=call.status, error_kind=call.error_kind,
        error=redact(call.error) if call.error else None, finish_reason=call.finish_reason,
        prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
        thinking_tokens=call.thinking_tokens, latency_ms=call.latency_ms, load_ms=call.load_ms,
        prompt_eval_ms=call.prompt_eval_ms, eval_ms=call.eval_ms, started_at=call.started_at,
        prompt=prompt, repair_of=repair_of, response=call.response,
    )
