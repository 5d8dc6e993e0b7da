"""`kg ask`: an answer written by the profile's model from the retrieved evidence only, every
sentence citing the evidence ids it rests on.

Grounded like extraction: the output schema's citation field is an enum of the ids actually
retrieved, so a model that follows the schema cannot cite a quote that does not exist, and the
reply is checked again (a server may ignore the schema). "Not in the graph" is an answer.
Every request to the model is a `calls` row of kind `ask` (analytics count it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from kg import retrieval
from kg.db import Database
from kg.db.collections import pins
from kg.db.models import Call, utcnow
from kg.errors import MalformedReply, ProviderError, UsageError
from kg.profiles import storage, views
from kg.profiles.settings import ProviderSettings
from kg.providers import build_provider
from kg.providers.base import Completion, Message, Provider

MAX_QUESTION_BYTES = 100_000
MAX_SENTENCES = 8
MAX_CITATIONS = 6
RESPONSE_KEEP_CHARS = 20_000
NOT_IN_GRAPH = "not in the graph: no evidence in this collection answers the question"
Event = Callable[[str, dict[str, Any]], None]  # stage name, data (for the server's stream)

SYSTEM = """You answer questions from a knowledge graph using ONLY the numbered evidence \
quotes given. Each quote is verbatim text from a document.

Rules:
- Every sentence of the answer must cite, in "citations", the ids of the quotes that support it.
- Use only what the quotes say; do not add outside knowledge.
- If the quotes do not answer the question, set "found" to false and give no sentences.
- Be brief: at most {sentences} sentences."""


class Sentence(BaseModel):
    text: str = Field(min_length=1, max_length=1000)
    citations: list[int] = Field(min_length=1, max_length=MAX_CITATIONS)


class Answer(BaseModel):
    found: bool
    sentences: list[Sentence] = Field(default_factory=list, max_length=MAX_SENTENCES)


def check_question(question: str) -> str:
    """The question, stripped; a UsageError for an empty or oversized one (nothing written)."""
    size = len(question.encode("utf-8", "surrogatepass"))
    if size > MAX_QUESTION_BYTES:
        raise UsageError(f"the question is {size} bytes; keep it under {MAX_QUESTION_BYTES} "
                         "bytes (100 kB)")
    question = question.strip()
    if not question:
        raise UsageError("the question is empty; ask something, e.g. kg ask \"who is X?\"")
    return question


def answer_schema(evidence_ids: list[int]) -> dict[str, Any]:
    """The JSON Schema of an answer whose citations can only be the retrieved evidence ids."""
    return {
        "type": "object",
        "properties": {
            "found": {"type": "boolean"},
            "sentences": {
                "type": "array", "maxItems": MAX_SENTENCES,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 1, "maxLength": 1000},
                        "citations": {"type": "array", "minItems": 1,
                                      "maxItems": MAX_CITATIONS,
                                      "items": {"type": "integer", "enum": evidence_ids}},
                    },
                    "required": ["text", "citations"], "additionalProperties": False,
                },
            },
        },
        "required": ["found", "sentences"], "additionalProperties": False,
    }


def messages_for(question: str, found: dict[str, Any]) -> list[Message]:
    lines = [f"Question: {question}", "", "Evidence quotes (id, about, quote, source):"]
    for e in found["evidence"]:
        lines.append(f"[{e['id']}] about {e['subject']}: \"{e['quote']}\" "
                     f"({Path(e['document']).name})")
    if found["relationships"]:
        lines += ["", "Relationships in the graph around them:"]
        lines += [f"{r['source']} -{r['type']}-> {r['target']}"
                  for r in found["relationships"][:40]]
    if found.get("attributes"):
        lines += ["", "Values in the graph:"]
        lines += [f"{a['concept']} {a['name']} = {a['value']}" for a in found["attributes"]]
    return [{"role": "system", "content": SYSTEM.format(sentences=MAX_SENTENCES)},
            {"role": "user", "content": "\n".join(lines)}]


def validate(content: str, allowed: set[int]) -> Answer:
    """The reply as an Answer, or ValueError with what is wrong (sent back to the model)."""
    try:
        answer = Answer.model_validate(json.loads(content))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not JSON ({exc.msg})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the reply"
        raise ValueError(f"{where}: {first['msg']}") from None
    bad = sorted({c for s in answer.sentences for c in s.citations} - allowed)
    if bad:
        raise ValueError(f"citations {bad} are not ids of the evidence given; cite only those")
    if answer.found and not answer.sentences:
        raise ValueError("found is true but there are no sentences")
    return answer


def settings_for(db: Database, profile: str | None) -> ProviderSettings:
    """The settings of `profile`, else the collection's pinned profile, else the active one."""
    name = profile or pins(db)[0]
    with db.session() as session:
        return views.provider_settings(storage.get_profile(session, name))


def call_row(settings: ProviderSettings, attempt: int, status: str, started: Any,
             latency_ms: float, completion: Completion | None = None,
             error_kind: str | None = None, error: str | None = None, *,
             kind: str = "ask") -> dict[str, Any]:
    """A `calls` row for a request made outside a run (an answer, a same-entity judgement)."""
    c = completion
    return {
        "run_id": None, "chunk_id": None, "attempt": attempt, "kind": kind,
        "provider": settings.provider, "model": (c.model if c and c.model else settings.model),
        "profile_name": settings.profile_name, "profile_revision": settings.revision,
        "status": status, "error_kind": error_kind, "error": error,
        "finish_reason": c.finish_reason if c else None,
        "prompt_tokens": c.prompt_tokens if c else 0,
        "completion_tokens": c.completion_tokens if c else 0,
        "thinking_tokens": c.thinking_tokens if c else 0,
        "latency_ms": latency_ms,
        "load_ms": c.load_s * 1000 if c and c.load_s is not None else None,
        "prompt_eval_ms": c.prompt_eval_s * 1000 if c and c.prompt_eval_s is not None else None,
        "eval_ms": c.eval_s * 1000 if c and c.eval_s is not None else None,
        "response": c.content[:RESPONSE_KEEP_CHARS] if c else None,
        "started_at": started, "grounding": "on", "endpoint": c.endpoint if c else None,
    }


def _record(db: Database, rows: list[dict[str, Any]]) -> None:
    if rows:
        with db.session() as session:
            session.add_all([Call(**row) for row in rows])


def ask(db: Database, question: str, *, profile: str | None = None, no_llm: bool = False,
        options: retrieval.Options | None = None, models_dir: Path | None = None,
        on_event: Event | None = None, provider: Provider | None = None) -> dict[str, Any]:
    """Retrieve, then (unless `no_llm`) have the profile's model answer with citations.
    `provider`: one built for the same profile by the caller, kept open (many questions, one
    model load); else one is built for this question and closed after it."""
    question = check_question(question)
    settings = None if no_llm else settings_for(db, profile)  # a bad profile fails before work
    found = db.read(retrieval.retrieve, question, options)
    if on_event is not None:
        on_event("retrieved", found)
    result: dict[str, Any] = {"question": question, "answer": None, "citations": [],
                              "retrieval": found}
    if settings is None:
        return result
    if not found["evidence"]:
        # Nothing to cite: the model is not asked (it could only guess), no call is made.
        result["answer"] = {"found": False, "text": NOT_IN_GRAPH, "sentences": []}
        return result
    calls: list[dict[str, Any]] = []
    try:
        answer = _generate(settings, question, found, models_dir, calls, provider)
    finally:
        _record(db, calls)  # failed requests count too
    by_id = {e["id"]: e for e in found["evidence"]}
    cited = list(dict.fromkeys(c for s in answer.sentences for c in s.citations))
    sentences: list[dict[str, Any]] = [
        {"text": s.text.strip(), "citations": list(dict.fromkeys(s.citations))}
        for s in answer.sentences]
    result["answer"] = {
        "found": answer.found and bool(sentences),
        "text": (" ".join(s.text.strip() for s in answer.sentences) if answer.found
                 else NOT_IN_GRAPH),
        "sentences": sentences if answer.found else []}
    result["citations"] = [by_id[c] for c in cited] if answer.found else []
    last = calls[-1]
    result["call"] = {"model": last["model"], "attempts": len(calls),
                      "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
                      "completion_tokens": sum(c["completion_tokens"] for c in calls),
                      "latency_ms": round(sum(c["latency_ms"] for c in calls), 1)}
    if on_event is not None:
        on_event("answer", {k: result[k] for k in ("answer", "citations", "call")})
    return result


def _generate(settings: ProviderSettings, question: str, found: dict[str, Any],
              models_dir: Path | None, calls: list[dict[str, Any]],
              shared: Provider | None = None) -> Answer:
    """The model's answer after up to max_retries repairs; a `calls` row per request."""
    ids = [e["id"] for e in found["evidence"]]
    schema = answer_schema(ids)
    messages = messages_for(question, found)
    provider = shared or build_provider(settings, models_dir)
    try:
        error = ""
        for attempt in range(1, settings.max_retries + 2):
            started, clock = utcnow(), time.perf_counter()
            try:
                completion = provider.complete(messages, schema)
            except MalformedReply as exc:
                calls.append(call_row(settings, attempt, "invalid", started, _ms(clock),
                                       error_kind="malformed_reply", error=exc.message))
                error = exc.message
                continue
            except ProviderError as exc:
                calls.append(call_row(settings, attempt, "error", started, _ms(clock),
                                       error_kind=type(exc).__name__, error=exc.message))
                raise
            try:
                answer = validate(completion.content, set(ids))
            except ValueError as exc:
                error = str(exc)
                calls.append(call_row(settings, attempt, "invalid", started, _ms(clock),
                                       completion, error_kind="answer", error=error))
                messages = [*messages, {"role": "assistant", "content": completion.content},
                            {"role": "user", "content": f"That answer is invalid: {error}. "
                                                        "Answer again under the schema."}]
                continue
            calls.append(call_row(settings, attempt, "ok", started, _ms(clock), completion))
            return answer
    finally:
        if shared is None:
            provider.close()
    raise ProviderError(f"{settings.profile_name} ({settings.model}) gave no valid answer in "
                        f"{len(calls)} attempt(s): {error}; try a larger model, or "
                        "`kg ask --no-llm` for the evidence alone")


def _ms(clock: float) -> float:
    return round((time.perf_counter() - clock) * 1000, 1)
