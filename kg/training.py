"""Fine-tuning data: chat-format JSON Lines built from what the graph holds.

One example per chunk whose latest extraction validated with every quote written by the model
(no quote recovered from a label or a sentence): the system prompt and user message exactly as
ingestion sends them, and as the assistant reply the extraction as the graph now holds it, so
curation applies (deleted concepts are gone, merged ones carry the surviving concept's label
where the text supports it). Each reply is checked by the same validator an ingest uses and
must come back clean, or the chunk is left out and counted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kg.db import Database
from kg.db.models import (
    Chunk,
    ChunkExtraction,
    Concept,
    ConceptAlias,
    Evidence,
    Relationship,
    RelationshipType,
)
from kg.errors import UsageError
from kg.extraction.prompt import messages_for, system_prompt
from kg.extraction.schema import OutputBounds, bounds_for_budget
from kg.extraction.validate import find_mention, label_grounded, validate_reply, words_of
from kg.extraction.vocabulary import Vocabulary
from kg.profiles import storage

BATCH = 500
# Quotes the validator recovered for the model: such a chunk does not teach verbatim quoting.
RECOVERED = ("quote_from_label", "quote_from_sentence")


@dataclass
class TrainingResult:
    path: str | None
    examples: int = 0
    chunks: int = 0
    skipped_recovered_quotes: int = 0
    skipped_invalid: int = 0
    relationships_below_confidence: int = 0
    seconds: float = 0.0


@dataclass
class _Prompt:
    system: str
    bounds: OutputBounds
    vocabulary: Vocabulary


def _prompt(session: Session, profile: str | None) -> _Prompt:
    vocabulary = Vocabulary.load(session)
    bounds = bounds_for_budget(storage.get_profile(session, profile).max_output_tokens)
    return _Prompt(system_prompt(vocabulary, bounds), bounds, vocabulary)


def _latest_ok(session: Session, after: int, limit: int) -> list[tuple[int, int, str, Any]]:
    """(chunk id, run id, chunk text, dropped counts) of each chunk's newest ok extraction."""
    newest = (select(func.max(ChunkExtraction.id)).where(ChunkExtraction.status == "ok")
              .group_by(ChunkExtraction.chunk_id))
    rows = session.execute(
        select(ChunkExtraction.chunk_id, ChunkExtraction.run_id, Chunk.text,
               ChunkExtraction.dropped)
        .join(Chunk, Chunk.id == ChunkExtraction.chunk_id)
        .where(ChunkExtraction.id.in_(newest), ChunkExtraction.chunk_id > after)
        .order_by(ChunkExtraction.chunk_id).limit(limit))
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _label_in(text_words: set[str], text: str, label: str, aliases: list[str]) -> str | None:
    """The concept's label if the text supports it, else an alias the text writes."""
    if label_grounded(label, text_words):
        return label
    for alias in aliases:
        if find_mention(alias, text) is not None:
            return alias
    return None


def _reply(session: Session, chunk_id: int, run_id: int, text: str, bounds: OutputBounds,
           min_confidence: float | None, result: TrainingResult) -> dict[str, Any]:
    """The extraction of one chunk in one run as the graph holds it now."""
    words = words_of(text)
    concepts: dict[int, dict[str, Any]] = {}
    for cid, quote, label, description, terms in session.execute(
            select(Evidence.concept_id, Evidence.quote, Concept.label, Concept.description,
                   Concept.search_terms)
            .join(Concept, Concept.id == Evidence.concept_id)
            .where(Evidence.chunk_id == chunk_id, Evidence.run_id == run_id)
            .order_by(Evidence.id)):
        if cid is None or cid in concepts or len(concepts) >= bounds.max_concepts:
            continue
        aliases = list(session.scalars(select(ConceptAlias.alias).where(
            ConceptAlias.concept_id == cid).order_by(ConceptAlias.id)))
        shown = _label_in(words, text, label, aliases)
        if shown is None or len(shown) > bounds.label_len:
            continue
        concepts[cid] = {
            "label": shown, "description": (description or "")[:bounds.description_len],
            "search_terms": [t[:bounds.term_len] for t in (terms or [])][:bounds.max_terms],
            "quote": quote[:bounds.quote_len]}
    relationships: list[dict[str, Any]] = []
    for source, target, type_name, confidence, quote in session.execute(
            select(Relationship.source_id, Relationship.target_id, RelationshipType.name,
                   Relationship.confidence, Evidence.quote)
            .join(Relationship, Relationship.id == Evidence.relationship_id)
            .join(RelationshipType, RelationshipType.id == Relationship.type_id)
            .where(Evidence.chunk_id == chunk_id, Evidence.run_id == run_id)
            .order_by(Evidence.id)):
        if source not in concepts or target not in concepts:
            continue
        if min_confidence is not None and confidence < min_confidence:
            result.relationships_below_confidence += 1
            continue
        if len(relationships) < bounds.max_relationships:
            relationships.append({
                "source": concepts[source]["label"], "type": type_name,
                "target": concepts[target]["label"], "confidence": round(confidence, 3),
                "quote": quote[:bounds.quote_len]})
    return {"concepts": list(concepts.values()), "relationships": relationships}


def examples(session: Session, *, min_confidence: float | None = None,
             profile: str | None = None,
             result: TrainingResult | None = None) -> Iterator[dict[str, Any]]:
    """Chat examples ({"messages": [system, user, assistant]}), one per usable chunk."""
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise UsageError(f"--min-confidence must be between 0 and 1 (got {min_confidence})")
    result = result or TrainingResult(None)
    prompt = _prompt(session, profile)
    after = 0
    while batch := _latest_ok(session, after, BATCH):
        for chunk_id, run_id, text, dropped in batch:
            result.chunks += 1
            if any((dropped or {}).get(reason, 0) for reason in RECOVERED):
                result.skipped_recovered_quotes += 1
                continue
            reply = _reply(session, chunk_id, run_id, text, prompt.bounds, min_confidence,
                           result)
            content = json.dumps(reply, ensure_ascii=False)
            verdict = validate_reply(content, text, prompt.vocabulary, prompt.bounds)
            if not verdict.usable or any(verdict.dropped.values()):
                result.skipped_invalid += 1
                continue
            result.examples += 1
            yield {"messages": [*messages_for(prompt.system, text),
                                {"role": "assistant", "content": content}]}
        after = batch[-1][0]


def export_training(db: Database, path: Path | None = None, *, stream: TextIO | None = None,
                    min_confidence: float | None = None,
                    profile: str | None = None) -> TrainingResult:
    """Write the examples as JSON Lines to `path` (complete or not at all) or to `stream`."""
    started = time.perf_counter()
    result = TrainingResult(str(path) if path else None)
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial") if path else None
    try:
        with db.session() as session:
            out = partial.open("w", encoding="utf-8") if partial else stream
            if out is None:
                raise UsageError("give a path or a stream to write the training data to")
            try:
                for example in examples(session, min_confidence=min_confidence,
                                        profile=profile, result=result):
                    out.write(json.dumps(example, ensure_ascii=False) + "\n")
            finally:
                if partial:
                    out.close()
        if partial and path:
            os.replace(partial, path)
    finally:
        if partial:
            partial.unlink(missing_ok=True)
    result.seconds = round(time.perf_counter() - started, 3)
    return result
