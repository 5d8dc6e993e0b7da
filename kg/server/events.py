"""Server-Sent Events of a run, read from the database.

Events come from the `runs` and `chunk_extractions` rows, so a run started by any process (the
CLI, a worker, this server) can be watched. One poller per watched run reads what is new every
`poll_s` and hands it to every client watching that run, so the database sees the same queries
whether one client watches or fifty. A client that connects late, or reconnects with
`Last-Event-ID`, first gets what it missed from the database, then the live events.

Events: `progress` (the run's counts and status), `chunk` (a chunk committed, with its counts),
`chunk_failed` (with the reason), `finished` (final status and totals; the stream then ends).
A `chunk`/`chunk_failed` event's id is its chunk_extractions row id.

A run is watched through its collection's routes only: a feed keeps the (enforced) database
handle of that collection and reads through it, and opening a run of another collection is
a 404 like a run that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection, select

from kg.db import Database
from kg.db.models import Chunk, ChunkExtraction, Document, Run
from kg.db.runstate import RunStatus, call_totals, effective_status
from kg.db.scope import scope_of
from kg.errors import NotFoundError
from kg.jsonable import json_default

log = logging.getLogger(__name__)
PAGE = 500  # rows per catch-up query
KEEP_ALIVE_S = 15.0
QUEUE_MAX = 10_000  # events waiting for one slow client; beyond, it is dropped (and reconnects)
RETRY_MS = 2000


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One Server-Sent Event as text."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, default=json_default, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {body}\n\n"


# -- reading ------------------------------------------------------------------------------------

def read_state(conn: Connection, run_id: int) -> dict[str, Any] | None:
    """The run's status (as other processes judge it) and counts, or None if the connection's
    collection has no such run."""
    # A Core connection: the collection filter is ours to write.
    run = conn.execute(select(Run).where(Run.id == run_id,
                                         Run.collection_id == scope_of(conn))).first()
    if run is None:
        return None
    return {"run_id": run.id, "status": effective_status(run).value,
            "documents": run.documents, "chunks_total": run.chunks_total,
            "chunks_ok": run.chunks_ok, "chunks_failed": run.chunks_failed,
            "profile": run.profile_name, "error": run.error, "started_at": run.started_at,
            "finished_at": run.finished_at}


def read_chunks(conn: Connection, run_id: int, after: int, upto: int | None = None,
                limit: int | None = None) -> list[tuple[int, str]]:
    """(row id, event text) of the run's chunk outcomes with after < id <= upto, by id."""
    query = (select(ChunkExtraction.id, ChunkExtraction.chunk_id, ChunkExtraction.status,
                    ChunkExtraction.attempts, ChunkExtraction.concepts,
                    ChunkExtraction.relationships, ChunkExtraction.error,
                    ChunkExtraction.finished_at, Chunk.ordinal, Document.path)
             .join(Chunk, Chunk.id == ChunkExtraction.chunk_id)
             .join(Document, Document.id == Chunk.document_id)
             .where(ChunkExtraction.run_id == run_id, ChunkExtraction.id > after)
             .order_by(ChunkExtraction.id))
    if upto is not None:
        query = query.where(ChunkExtraction.id <= upto)
    if limit is not None:
        query = query.limit(limit)
    events = []
    for r in conn.execute(query):
        data: dict[str, Any] = {"run_id": run_id, "chunk_id": r.chunk_id, "document": r.path,
                                "ordinal": r.ordinal, "status": r.status,
                                "attempts": r.attempts, "concepts": r.concepts,
                                "relationships": r.relationships, "at": r.finished_at}
        if r.status == "ok":
            events.append((r.id, sse("chunk", data, r.id)))
        else:
            events.append((r.id, sse("chunk_failed", {**data, "error": r.error}, r.id)))
    return events


def last_id(conn: Connection, run_id: int) -> int:
    top = conn.scalar(select(ChunkExtraction.id).where(ChunkExtraction.run_id == run_id)
                      .order_by(ChunkExtraction.id.desc()).limit(1))
    return int(top or 0)


def finished_event(db: Database, state: dict[str, Any]) -> str:
    with db.session() as session:
        totals = call_totals(session, state["run_id"])
    return sse("finished", {**state, "calls": totals.calls,
                            "prompt_tokens": totals.prompt_tokens,
                            "completion_tokens": totals.completion_tokens,
                            "thinking_tokens": totals.thinking_tokens})


def _progress_key(state: dict[str, Any]) -> tuple[Any, ...]:
    return (state["status"], state["documents"], state["chunks_total"], state["chunks_ok"],
            state["chunks_failed"])


# -- one poller per watched run -------------------------------------------------------------------

@dataclass(eq=False)
class Watcher:
    """One client's queue of event texts; `None` ends its stream."""

    queue: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_MAX))
    dropped: bool = False

    def put(self, text: str | None) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            # Too slow: end its stream; the browser reconnects with Last-Event-ID and
            # catches up from the database.
            self.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class RunFeed:
    """Polls one run and fans its new events out to every watcher."""

    def __init__(self, hub: EventHub, db: Database, run_id: int, state: dict[str, Any],
                 cursor: int) -> None:
        self.hub = hub
        self.db = db
        self.run_id = run_id
        self.state = state
        self.cursor = cursor
        self.final: str | None = None  # the finished event, once the run is over
        self.watchers: set[Watcher] = set()
        self.task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.final is not None

    def _read(self) -> tuple[dict[str, Any] | None, list[tuple[int, str]], str | None]:
        # The state first: a run that is over committed every chunk before it finished, so
        # the rows read after it are complete.
        with self.db.transaction() as conn:
            state = read_state(conn, self.run_id)
            rows = read_chunks(conn, self.run_id, self.cursor)
        final = None
        if state is not None and state["status"] != RunStatus.RUNNING:
            final = finished_event(self.db, state)
        return state, rows, final

    async def run(self) -> None:
        try:
            while self.watchers and not self.finished:
                await asyncio.sleep(self.hub.poll_s)
                state, rows, final = await to_thread.run_sync(self._read)
                if state is None:  # the run was deleted meanwhile
                    final = sse("finished", {**self.state, "status": "deleted"})
                    state = self.state
                texts = [text for _id, text in rows]
                if rows:
                    self.cursor = rows[-1][0]
                if _progress_key(state) != _progress_key(self.state) or rows:
                    texts.append(sse("progress", state))
                self.state = state
                if final is not None:
                    texts.append(final)
                    self.final = final
                for watcher in list(self.watchers):
                    for text in texts:
                        watcher.put(text)
                    if final is not None:
                        watcher.put(None)
        except Exception:
            log.exception("watching run %d failed", self.run_id)
            for watcher in list(self.watchers):
                watcher.put(None)
        finally:
            self.hub.forget(self)


class EventHub:
    """The run feeds of one server."""

    def __init__(self, db: Database, poll_s: float = 0.5) -> None:
        self.db = db
        self.poll_s = poll_s
        self.feeds: dict[int, RunFeed] = {}
        self.closing = False

    def forget(self, feed: RunFeed) -> None:
        if self.feeds.get(feed.run_id) is feed:
            del self.feeds[feed.run_id]

    def _start(self, db: Database, run_id: int) -> tuple[dict[str, Any], int, str | None]:
        with db.transaction() as conn:
            state = read_state(conn, run_id)
            if state is None:
                raise NotFoundError(f"no run {run_id}; see GET /runs")
            cursor = last_id(conn, run_id)
        final = None
        if state["status"] != RunStatus.RUNNING:
            final = finished_event(db, state)
        return state, cursor, final

    def _live(self, run_id: int, db: Database) -> RunFeed | None:
        feed = self.feeds.get(run_id)
        if feed is None or feed.finished:
            return None
        if feed.db.collection_id != db.collection_id:
            raise NotFoundError(f"no run {run_id}; see GET /runs")
        return feed

    async def open(self, run_id: int, db: Database | None = None) -> RunFeed:
        """The feed of a run of `db`'s collection (None: the hub's; 404 if it has no such
        run), started if nobody watched it."""
        db = db or self.db
        feed = self._live(run_id, db)
        if feed is not None:
            return feed
        state, cursor, final = await to_thread.run_sync(self._start, db, run_id)
        feed = self._live(run_id, db)  # another client may have opened it meanwhile
        if feed is not None:
            return feed
        feed = RunFeed(self, db, run_id, state, cursor)
        feed.final = final
        if final is None:
            self.feeds[run_id] = feed
        return feed

    async def stream(self, feed: RunFeed, after: int) -> AsyncIterator[str]:
        """One client's events: what it missed (from the database), then live ones."""
        watcher = Watcher()
        # No await between reading the feed's position and joining it: nothing is missed
        # (rows up to `upto` come from the catch-up, later ones through the queue).
        upto, state, final = feed.cursor, feed.state, feed.final
        if final is None:
            feed.watchers.add(watcher)
            if feed.task is None or feed.task.done():
                # New, or its poller stopped (nobody watched) since `open` returned it.
                self.feeds.setdefault(feed.run_id, feed)
                feed.task = asyncio.create_task(feed.run())
        try:
            yield f"retry: {RETRY_MS}\n\n"
            yield sse("progress", state)
            cursor = after
            while cursor < upto:
                rows = await to_thread.run_sync(self._page, feed, cursor, upto)
                for row_id, text in rows:
                    cursor = row_id
                    yield text
                if len(rows) < PAGE:
                    break
            if final is not None:
                yield final
                return
            while not self.closing:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), KEEP_ALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            feed.watchers.discard(watcher)

    def _page(self, feed: RunFeed, after: int, upto: int) -> list[tuple[int, str]]:
        with feed.db.transaction() as conn:
            return read_chunks(conn, feed.run_id, after, upto, PAGE)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self.closing = True
        for feed in list(self.feeds.values()):
            for watcher in list(feed.watchers):
                watcher.put(None)
