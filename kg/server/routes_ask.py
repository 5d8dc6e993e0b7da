"""Search and questions over HTTP, for one collection (`/c/NAME/...`; without: default):
`GET /search` (full text, ranked, with snippets) and `POST /ask` (the answer streamed as
Server-Sent Events: `retrieved`, then `answer`, or `error`; then `done`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from kg import ask as kg_ask
from kg import retrieval
from kg import search as kg_search
from kg.errors import KgError
from kg.server.auth import read_access
from kg.server.events import sse
from kg.server.limits import RowId
from kg.server.state import Scoped, json_response
from kg.settings import load_settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["ask"], dependencies=[Depends(read_access)])
_DONE = object()


@router.get("/search", summary="Full-text search: concepts (labels, aliases, descriptions), "
            "evidence quotes and chunks, best first, with snippets")
def search(state: Scoped,
           q: Annotated[str, Query(min_length=1, max_length=kg_search.MAX_QUERY_CHARS)],
           limit: Annotated[int, Query(ge=1, le=200)] = 20,
           kind: Annotated[list[str] | None, Query()] = None) -> Response:
    with state.db.session() as session:
        data = kg_search.search(session, q, limit=limit, kinds=kind or kg_search.KINDS)
    return json_response(data)


@router.get("/evidence/{evidence_id}", summary="One evidence quote in the text of its chunk "
            "(`quote_start`/`quote_end`: where it sits in `chunk`), with document and characters")
def evidence(evidence_id: RowId, state: Scoped) -> Response:
    with state.db.session() as session:
        data = retrieval.evidence_in_chunk(session, evidence_id)
    return json_response(data)


class AskRequest(BaseModel):
    question: str = Field(max_length=kg_ask.MAX_QUESTION_BYTES,
                          description="The question (at most 100 kB).")
    profile: str | None = Field(None, max_length=64,
                                description="Answer with this profile (default: the "
                                            "collection's, else the active one).")
    no_llm: bool = Field(False, description="Only the retrieved subgraph and evidence.")
    hops: int = Field(1, ge=0, le=retrieval.MAX_HOPS)
    budget: int = Field(retrieval.DEFAULT_BUDGET, ge=100, le=100_000)


@router.post("/ask", summary="An answer from the graph, each sentence citing verbatim evidence "
             "(Server-Sent Events)", response_class=StreamingResponse,
             description="Events: `retrieved` (concepts, relationships, evidence with document "
                         "and characters), then `answer` (sentences with the evidence ids they "
                         "cite, the cited evidence, the model call) unless `no_llm`, or "
                         "`error` (one line); the stream ends with `done`. A bad question or "
                         "profile is a 4xx before any event.")
async def ask(body: AskRequest, state: Scoped) -> Response:
    question = kg_ask.check_question(body.question)
    if not body.no_llm:  # an unknown profile is a 404 now, not an event later
        await to_thread.run_sync(kg_ask.settings_for, state.db, body.profile)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Any] = asyncio.Queue()

    def emit(name: str, data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (name, data))

    def work() -> None:
        try:
            kg_ask.ask(state.db, question, profile=body.profile, no_llm=body.no_llm,
                       options=retrieval.Options(budget=body.budget, hops=body.hops),
                       models_dir=state.config.models_dir or load_settings().models_dir,
                       on_event=emit)
        except KgError as exc:
            emit("error", {"error": exc.message})
        except Exception as exc:  # the stream must end with a line, not a cut connection
            log.exception("ask failed")
            emit("error", {"error": f"the answer failed: {type(exc).__name__}; see the "
                                    "server log"})
        finally:
            loop.call_soon_threadsafe(events.put_nowait, _DONE)

    async def stream() -> AsyncIterator[str]:
        task = asyncio.ensure_future(to_thread.run_sync(work))
        try:
            while True:
                item = await events.get()
                if item is _DONE:
                    break
                yield sse(*item)
            yield sse("done", {})
        finally:
            await task

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
