"""The one place an extractor is put together: provider, vocabulary, bounds, prompt, schema.

`kg ingest`, `kg eval` and `kg admin extraction test` all extract through this, so what a
preflight or an evaluation measures is exactly what an ingest sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from kg.extraction.breaker import CircuitBreaker
from kg.extraction.extract import ChunkOutcome, extract_chunk
from kg.extraction.grounding import grounded_schema
from kg.extraction.prompt import messages_for, system_prompt, triples_prompt
from kg.extraction.schema import (
    OutputBounds,
    bounds_for_budget,
    output_schema,
    triples_schema,
)
from kg.extraction.vocabulary import Vocabulary
from kg.profiles import storage, views
from kg.profiles.settings import ProviderSettings
from kg.providers import build_provider
from kg.providers.base import Completion, Message, Provider
from kg.urls import redact_url


@dataclass
class Extractor:
    """Everything needed to turn a chunk into a verdict, for one profile revision."""

    provider: Provider
    vocabulary: Vocabulary
    bounds: OutputBounds
    system: str
    schema: dict[str, Any]
    closed: bool = False

    @property
    def settings(self) -> ProviderSettings:
        return self.provider.settings

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages and the circuit breaker (no credentials)."""
        s = self.settings
        return redact_url(s.base_url) or f"{s.provider} {s.model}"

    @property
    def grounding(self) -> bool:
        return self.settings.grounding == "on"

    def schema_for(self, text: str) -> dict[str, Any]:
        """The schema the first request for this chunk carries (grounded when enabled)."""
        if not self.grounding:
            return self.schema
        return grounded_schema(self.schema, text, max_label=self.bounds.label_len,
                               max_quote=self.bounds.quote_len,
                               kinds=self.vocabulary.kinds()).schema

    def request(self, text: str) -> Completion:
        """One raw request exactly as extraction sends it (no validation, no retry): what a
        preflight should probe."""
        return self.provider.complete(self.messages(text), self.schema_for(text))

    def messages(self, text: str) -> list[Message]:
        """The exact first request for a chunk of text."""
        return messages_for(self.system, text)

    def extract(self, chunk_id: int, text: str, *, backoff_s: float = 1.0,
                breaker: CircuitBreaker | None = None) -> ChunkOutcome:
        """Call, validate, repair and retry one chunk (no database)."""
        return extract_chunk(self.provider, chunk_id, text, self.system, self.vocabulary,
                             self.bounds, backoff_s=backoff_s, breaker=breaker,
                             schema=self.schema, grounding=self.grounding,
                             descriptions=self.settings.descriptions)

    def with_vocabulary(self, vocabulary: Vocabulary) -> Extractor:
        """The same provider with another ontology (an evaluation record brings its own)."""
        return Extractor(self.provider, vocabulary, self.bounds,
                         *_prompt_and_schema(self.settings, vocabulary, self.bounds))

    def close(self) -> None:
        """Release the provider (connections, an in-process model); only the first call acts."""
        if not self.closed:
            self.closed = True
            self.provider.close()


def for_settings(settings: ProviderSettings, vocabulary: Vocabulary,
                 models_dir: Path | None = None, *, check: bool = True) -> Extractor:
    """An extractor for these settings; `check` raises the fatal ProviderError (no server,
    unknown model, ...) before any chunk is sent."""
    provider = build_provider(settings, models_dir)
    if check:
        try:
            provider.check()
        except BaseException:
            provider.close()
            raise
    bounds = bounds_for_budget(settings.max_output_tokens)
    return Extractor(provider, vocabulary, bounds,
                     *_prompt_and_schema(settings, vocabulary, bounds))


def _prompt_and_schema(settings: ProviderSettings, vocabulary: Vocabulary,
                       bounds: OutputBounds) -> tuple[str, dict[str, Any]]:
    """The system prompt and output schema of the profile's shape (graph or triples)."""
    strict_types = tuple(vocabulary.types) if vocabulary.strict else ()
    if settings.shape == "triples":
        return triples_prompt(vocabulary, bounds), triples_schema(bounds, strict_types)
    return (system_prompt(vocabulary, bounds, settings.descriptions),
            output_schema(bounds, settings.descriptions, tuple(vocabulary.concept_types),
                          strict_types))


def build(session: Session, profile: str | None = None, models_dir: Path | None = None, *,
          vocabulary: Vocabulary | None = None, check: bool = True) -> Extractor:
    """The extractor of a named profile (or the active one), with its ontology."""
    settings = views.provider_settings(storage.get_profile(session, profile))
    return for_settings(settings, vocabulary or Vocabulary.load(session, settings.ontology),
                        models_dir, check=check)
