"""`kg ingest --dry-run`: what a run would send, without sending or writing anything.

Files are loaded and chunked exactly as an ingest does and each chunk's first request is put
together by the profile's extractor (no server is asked). Prompt tokens are the local estimate
of those messages, scaled by how the profile's model counted earlier prompts when there are
such calls; completion tokens and time come from the model's past calls too. Calls assume one
valid reply per chunk (retries cannot be foreseen), minus the chunks the call cache answers.
Images are read by the reader a run would choose: Tesseract is run (offline, free, the real
text); a vision model is not asked, each description is taken as long as its past ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from kg.db import Database
from kg.db.models import Call, Chunk
from kg.db.prices import cost, money, prices_by_name
from kg.errors import NotFoundError
from kg.extraction import loaders, plan, vision
from kg.extraction.cache import hits as cache_hits
from kg.extraction.cache import request_key
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.extraction.extractor import Extractor, build
from kg.extraction.prompt import messages_for
from kg.providers.base import estimate_tokens

HISTORY = 200  # past calls of the model used to calibrate (the most recent ones)
MIN_HISTORY = 3


@dataclass
class Estimate:
    """What a run over these paths would do (nothing was sent or written)."""

    profile: str
    model: str
    documents: int = 0
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    cache_hits: int = 0  # first requests the call cache would answer (no call)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_source: str = "local estimate"
    completion_source: str = "none: no earlier calls of this model"
    seconds: float | None = None
    speed_source: str = "unknown: no earlier calls of this model"
    cost: float = 0.0
    compare_to: str | None = None
    reference_cost: float | None = None
    # Images and pages without a text layer (issue #25): the reader a run would use, the pages
    # it would read, and (vision model, never asked by a dry run) its estimated tokens.
    reader: str = "none: no images or PDF files"
    reads: int = 0
    read_prompt_tokens: int = 0
    read_completion_tokens: int = 0
    read_source: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return out


def _messages_tokens(extractor: Extractor, text: str) -> int:
    return sum(estimate_tokens(m["content"]) for m in extractor.messages(text))


@dataclass
class _History:
    prompt_ratio: float | None = None  # server-counted / local estimate
    completion_per_call: float | None = None
    seconds_per_call: float | None = None
    calls: int = 0


def _history(session: Session, model: str, system_tokens: int) -> _History:
    """Calibration from the model's recent first, valid calls on stored chunks."""
    rows = session.execute(
        select(Call.prompt_tokens, Call.completion_tokens, Call.thinking_tokens,
               Call.latency_ms, Chunk.text)
        .join(Chunk, Chunk.id == Call.chunk_id)
        .where(Call.model == model, Call.status == "ok", Call.attempt == 1,
               Call.cached.is_(False))
        .order_by(desc(Call.id)).limit(HISTORY)).all()
    found = _History(calls=len(rows))
    if len(rows) < MIN_HISTORY:
        return found
    counted = sum(r.prompt_tokens for r in rows)
    local = sum(system_tokens + estimate_tokens(messages_for("", r.text)[1]["content"])
                for r in rows)
    if counted and local:
        found.prompt_ratio = counted / local
    found.completion_per_call = sum(r.completion_tokens + r.thinking_tokens
                                    for r in rows) / len(rows)
    found.seconds_per_call = sum(r.latency_ms for r in rows) / len(rows) / 1000
    return found


def estimate(db: Database, paths: list[Path], *, recursive: bool = False,
             profile: str | None = None, chunking: ChunkingOptions | None = None,
             force: bool = False, models_dir: Path | None = None,
             compare_to: str | None = None, use_cache: bool = True) -> Estimate:
    """Plan a run over these paths without any LLM call or database write."""
    chunking = chunking or ChunkingOptions()
    files = plan.discover(paths, recursive)
    with db.session() as session, contextlib.ExitStack() as stack:
        extractor = build(session, profile, models_dir, check=False)  # no request is sent
        try:
            settings = extractor.settings
            prices = prices_by_name(session)
            if compare_to is not None and compare_to not in prices:
                raise NotFoundError(f"no price named {compare_to!r} to compare to; add one with "
                                    f"`kg admin prices set {compare_to} --prompt X "
                                    "--completion Y`")
            result = Estimate(settings.profile_name, settings.model, compare_to=compare_to)
            local = 0
            read_cost = Decimal(0)
            # The reader a run would choose (vision profile or OCR); the vision model is not
            # asked: DryDescriber stands in with its past descriptions' length.
            reader = stack.enter_context(vision.reader_for(db, files, models_dir, profile,
                                                           dry=True))
            for path in files:
                sha = loaders.sha256_file(path)
                if sha is not None and not force and plan.is_unchanged(db, path, sha):
                    result.unchanged.append(str(path))
                    continue
                loaded = reader.load(path)
                if reader.choice is not None and vision.needs_reader([path]):
                    result.reader = reader.choice.describe_reader()
                    if isinstance(reader.current, vision.DryDescriber):
                        result.read_source = reader.current.source
                if isinstance(loaded, loaders.Skipped):
                    result.skipped.append((str(path), loaded.reason))
                    continue
                result.reads += len(loaded.reads)
                for read in loaded.reads:
                    result.read_prompt_tokens += read.prompt_tokens
                    result.read_completion_tokens += read.completion_tokens
                    read_cost += cost(read.prompt_tokens, read.completion_tokens,
                                      prices.get(read.model))
                result.documents += 1
                for chunk in chunk_text(loaded.text, chunking, loaded.boundaries):
                    result.chunks += 1
                    tokens = _messages_tokens(extractor, chunk.text)
                    key = request_key(settings, extractor.messages(chunk.text),
                                      extractor.schema_for(chunk.text), db.collection_id)
                    if use_cache and not force and cache_hits(db, [key]):
                        result.cache_hits += 1
                        continue  # answered by the cache: nothing is sent
                    local += tokens
            system_tokens = estimate_tokens(extractor.system)
            history = _history(session, settings.model, system_tokens)
        finally:
            extractor.close()
    result.calls = result.chunks - result.cache_hits
    result.prompt_tokens = local
    if history.prompt_ratio is not None:
        result.prompt_tokens = round(local * history.prompt_ratio)
        result.prompt_source = f"local estimate scaled by {history.calls} earlier calls"
    if history.completion_per_call is not None:
        result.completion_tokens = round(history.completion_per_call * result.calls)
        result.completion_source = f"average of {history.calls} earlier calls"
    if history.seconds_per_call is not None:
        # Requests overlap up to max_parallel; a server slower under load makes this a floor.
        waves = -(-result.calls // settings.max_parallel)
        result.seconds = round(waves * history.seconds_per_call, 1)
        result.speed_source = (f"{history.seconds_per_call:.2f}s per call over {history.calls}"
                               f" earlier calls, {settings.max_parallel} at once")
    result.cost = money(cost(result.prompt_tokens, result.completion_tokens,
                              prices.get(settings.model)) + read_cost)
    if compare_to is not None:
        result.reference_cost = money(cost(result.prompt_tokens, result.completion_tokens,
                                            prices[compare_to]))
    return result

