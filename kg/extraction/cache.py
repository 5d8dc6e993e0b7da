"""Call cache: a request answered before with a valid reply is answered from the table.

Content-addressed: the key is the SHA-256 of (every setting declared to change the model's
output, the output budget, schema, messages), so any change to the prompt, the ontology, the
chunk or such a setting is a different key. Only replies that validated are stored (confirmed after
validation), across documents and runs. A hit sends no request; it is still a `calls` row
(`cached` true, endpoint `cache`, no tokens, zero latency). `kg ingest --no-cache` neither
reads nor writes it; `--force` asks the model again (no lookup) and stores the new replies.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite

from kg.db import Database
from kg.db.models import DEFAULT_COLLECTION_ID, CachedReply, utcnow
from kg.extraction.extract import CallStatus, ChunkOutcome
from kg.extraction.extractor import Extractor
from kg.profiles.settings import ProviderSettings, output_settings
from kg.providers.base import Completion, Message, Provider

CACHE_ENDPOINT = "cache"  # the endpoint recorded for a call answered from the cache
REPLIES = cast(Table, CachedReply.__table__)
FLUSH_EVERY = 64


def request_key(settings: ProviderSettings, messages: list[Message],
                schema: dict[str, Any], collection_id: int = DEFAULT_COLLECTION_ID) -> str:
    """The content address of one request, within one collection (a reply is reused only
    where it was made: the same text in another team's collection costs its own call)."""
    # The settings come from their declaration (Declared.changes_output), so a new setting
    # that changes the reply cannot be forgotten here; the budget is what goes on the wire.
    data = {"settings": output_settings(settings), "budget": settings.output_budget,
            "schema": schema, "messages": messages}
    if collection_id != DEFAULT_COLLECTION_ID:  # keys of `default` stay as they were
        data["collection"] = collection_id
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode()).hexdigest()


class CallCache:
    """The cache as one run uses it: lookups from worker threads, stores confirmed replies."""

    def __init__(self, db: Database, *, lookup: bool = True) -> None:
        self.db = db
        self.lookup = lookup
        self._confirmed: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        # False: whoever owns the cache writes it (`flush_if_full`); the scheduler's commit
        # thread does, between commits: a request thread writing it would wait on SQLite's
        # one writer, the commit thread, for up to a second.
        self.flush_when_full = True

    def wrap(self, extractor: Extractor) -> Extractor:
        """Route the extractor's requests through the cache (once)."""
        if not isinstance(extractor.provider, CachingProvider):
            extractor.provider = CachingProvider(extractor.provider, self)
        return extractor

    def get(self, key: str) -> str | None:
        # Autocommit: one read needs no BEGIN and ROLLBACK (two round trips per chunk less).
        with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.scalar(select(REPLIES.c.content).where(REPLIES.c.key == key))

    def offer(self, key: str, model: str, completion: Completion) -> None:
        """A reply from the server, remembered by the thread that asked; stored only if its
        chunk confirms it valid."""
        self._local.last = (key, model, completion)

    def forget_last(self) -> None:
        self._local.last = None

    def confirm(self, outcome: ChunkOutcome) -> None:
        """In the worker thread that extracted the chunk: store the reply that made it
        succeed (the last one this thread got from a server, not one from the cache)."""
        found = getattr(self._local, "last", None)
        self._local.last = None
        if found is None or not outcome.ok or not outcome.attempts:
            return
        last = outcome.attempts[-1]
        key, model, completion = found
        if last.status != CallStatus.OK or last.response != completion.content:
            return
        with self._lock:
            self._confirmed.append({
                "key": key, "model": model, "content": completion.content,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "created_at": utcnow()})
            full = len(self._confirmed) >= FLUSH_EVERY
        if full and self.flush_when_full:
            self.flush()

    def extract(self, extractor: Extractor, chunk_id: int, text: str,
                **options: Any) -> ChunkOutcome:
        """Extract one chunk through the cache (runs in a worker thread)."""
        self.wrap(extractor)
        self.forget_last()
        outcome = extractor.extract(chunk_id, text, **options)
        self.confirm(outcome)
        return outcome

    def flush_if_full(self) -> None:
        with self._lock:
            full = len(self._confirmed) >= FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the confirmed replies (a key already stored by another run is kept as is)."""
        with self._lock:
            rows, self._confirmed = self._confirmed, []
        if not rows:
            return
        with self.db.transaction() as conn:
            dialect_insert = (postgresql.insert if conn.dialect.name == "postgresql"
                              else sqlite.insert)
            conn.execute(dialect_insert(REPLIES).on_conflict_do_nothing(
                index_elements=["key"]), rows)


class CachingProvider:
    """A provider whose requests are looked up first; everything else is the inner one's."""

    def __init__(self, inner: Provider, cache: CallCache) -> None:
        self.inner = inner
        self.cache = cache
        self.settings = inner.settings

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        key = request_key(self.settings, messages, json_schema, self.cache.db.collection_id)
        if self.cache.lookup:
            content = self.cache.get(key)
            if content is not None:
                return Completion(content=content, finish_reason="stop",
                                  model=self.settings.model, endpoint=CACHE_ENDPOINT)
        completion = self.inner.complete(messages, json_schema)
        self.cache.offer(key, self.settings.model, completion)
        return completion

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def hits(db: Database, keys: list[str]) -> int:
    """How many of these request keys the cache would answer (for the dry run)."""
    found = 0
    with db.engine.connect() as conn:
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            found += len(conn.execute(select(REPLIES.c.key).where(
                REPLIES.c.key.in_(batch))).all())
    return found
