"""One chunk, start to verdict: call, validate, send back the errors, retry. No database here.

Runs in worker threads; everything it learns comes back as a ChunkOutcome that the commit
thread writes in one transaction. Every request sent is one Attempt (one `calls` row), whatever
became of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kg.db.models import utcnow
from kg.errors import MalformedReply, ProviderError
from kg.extraction.breaker import CircuitBreaker
from kg.extraction.grounding import grounded_schema
from kg.extraction.prompt import messages_for, repair_messages
from kg.extraction.schema import OutputBounds, output_schema
from kg.extraction.validate import Validation, validate_reply
from kg.extraction.vocabulary import Vocabulary
from kg.profiles.settings import ProviderSettings
from kg.providers.base import Provider

MAX_BACKOFF_S = 30.0
RESPONSE_KEEP_CHARS = 20_000
MALFORMED = "malformed_reply"  # error_kind of a 200 whose body the provider could not read


class CallStatus(StrEnum):
    """`calls.status`: a usable reply, an unusable one (retried with the errors), or none."""

    OK = "ok"
    INVALID = "invalid"
    ERROR = "error"


@dataclass
class Attempt:
    """One LLM request as it will be stored in `calls`."""

    attempt: int
    status: CallStatus
    started_at: datetime
    model: str
    error_kind: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0
    latency_ms: float = 0.0
    load_ms: float | None = None
    prompt_eval_ms: float | None = None
    eval_ms: float | None = None
    response: str | None = None
    grounding: str | None = None  # on | fallback (free text for this chunk) | off
    endpoint: str | None = None  # the server that answered, when the profile has several


@dataclass
class ChunkOutcome:
    chunk_id: int
    settings: ProviderSettings
    attempts: list[Attempt] = field(default_factory=list)
    validation: Validation | None = None  # set when the chunk succeeded
    error: str | None = None  # set when it failed
    fatal: ProviderError | None = None  # set when the run must stop (chunk stays pending)
    ontology: str | None = None
    ontology_revision: int | None = None
    endpoint: str | None = None  # set by the scheduler: where the requests went
    fallback: bool = False  # set by the scheduler: served by the primary's fallback profile
    rule_id: int | None = None  # set by the scheduler: the routing rule that chose the profile

    @property
    def ok(self) -> bool:
        return self.validation is not None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _elapsed_ms(clock: float) -> float:
    return round((time.perf_counter() - clock) * 1000, 3)


def extract_chunk(
    provider: Provider,
    chunk_id: int,
    chunk: str,
    system: str,
    vocabulary: Vocabulary,
    bounds: OutputBounds,
    *,
    backoff_s: float = 1.0,
    breaker: CircuitBreaker | None = None,
    schema: dict[str, Any] | None = None,
    grounding: bool = False,
    descriptions: str = "generate",
) -> ChunkOutcome:
    """Try up to 1 + max_retries requests; repair invalid replies, back off on busy servers.

    With a breaker, server failures are reported to it, and no request is sent once it is
    open: the outcome is then `fatal` (the chunk stays pending for a resume). With grounding,
    the schema is restricted to the chunk's text; if the server refuses that schema, the chunk
    falls back to free text (validated as before) and the calls say so.
    """
    settings = provider.settings
    outcome = ChunkOutcome(chunk_id, settings, ontology=vocabulary.ontology,
                           ontology_revision=vocabulary.revision)
    free = schema if schema is not None else output_schema(bounds)
    mode = "off"
    schema = free
    if grounding:
        grounded = grounded_schema(free, chunk, max_label=bounds.label_len,
                                   max_quote=bounds.quote_len, kinds=vocabulary.kinds())
        schema, mode = grounded.schema, "on" if grounded.grounded else "fallback"
    base_messages = messages_for(system, chunk)
    messages = base_messages
    last_errors: list[str] = []
    number, last = 0, settings.max_retries + 1
    while number < last:
        number += 1
        if breaker is not None and not breaker.allows():
            outcome.fatal = breaker.error()
            return outcome
        started = utcnow()
        clock = time.perf_counter()
        try:
            completion = provider.complete(messages, schema)
        except MalformedReply as exc:
            # The server answered, but nothing usable: like an invalid extraction, minus a
            # reply to send back. Retried at once (no backoff: the server is not busy).
            if breaker is not None:
                breaker.success()
            outcome.attempts.append(Attempt(
                number, CallStatus.INVALID, started, settings.model, error_kind=MALFORMED,
                error=exc.message, latency_ms=_elapsed_ms(clock), grounding=mode))
            last_errors = [exc.message]
            continue
        except ProviderError as exc:
            outcome.attempts.append(Attempt(
                number, CallStatus.ERROR, started, settings.model,
                error_kind=type(exc).__name__, error=exc.message,
                latency_ms=_elapsed_ms(clock), grounding=mode))
            if exc.fatal:
                outcome.fatal = exc
                return outcome
            last_errors = [exc.message]
            if not exc.transient and mode == "on":
                # The server refused the grounded schema (enum size or count): free text.
                if breaker is not None:
                    breaker.success()
                schema, mode = free, "fallback"
                continue
            if not exc.transient:
                if breaker is not None:
                    breaker.success()  # the server answered; the request was the problem
                break
            if breaker is not None and breaker.overload(exc):
                last += 1  # our own overload (503 while others are served): no repair used up
                continue
            if breaker is not None and breaker.failure(exc):
                outcome.fatal = breaker.error()
                return outcome
            if number < last:
                time.sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (number - 1)))
            continue
        if breaker is not None:
            breaker.success()
        verdict = validate_reply(
            completion.content, chunk, vocabulary, bounds, finish_reason=completion.finish_reason,
            thinking=completion.thinking, budget=settings.output_budget,
            descriptions=descriptions, resolve_ends=True,
        )
        outcome.attempts.append(Attempt(
            number, CallStatus.OK if verdict.usable else CallStatus.INVALID, started,
            completion.model or settings.model,
            error_kind=verdict.kind, error="; ".join(verdict.errors[:8]) or None,
            finish_reason=completion.finish_reason, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            thinking_tokens=completion.thinking_tokens,
            latency_ms=round(completion.latency_s * 1000, 3), load_ms=_ms(completion.load_s),
            prompt_eval_ms=_ms(completion.prompt_eval_s), eval_ms=_ms(completion.eval_s),
            response=completion.content[:RESPONSE_KEEP_CHARS], grounding=mode,
            endpoint=completion.endpoint,
        ))
        if verdict.usable:
            outcome.validation = verdict
            return outcome
        last_errors = verdict.errors
        messages = repair_messages(base_messages, completion.content, verdict.errors)
    outcome.error = "; ".join(last_errors[:4]) or "no usable reply"
    return outcome
