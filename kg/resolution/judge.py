"""The grey zone's judge: the active profile's model answers yes / no / unsure for one pair.

One request per pair, constrained to that one-word answer by the JSON schema, cached by the
pair's content (the same two descriptions are not asked twice); a reply that does not fit the
schema counts as "unsure". Every request is a `calls` row of kind `resolve`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from kg.ask import call_row
from kg.db.models import utcnow
from kg.errors import MalformedReply, ProviderError
from kg.profiles.settings import ProviderSettings
from kg.providers import build_provider
from kg.providers.base import Completion, Message, Provider

ANSWERS = ("yes", "no", "unsure")
SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["answer"],
    "properties": {"answer": {"type": "string", "enum": list(ANSWERS)}}}
SYSTEM = ("You decide whether two entries of a knowledge graph name the same real-world thing. "
          "Use only what is given: labels, types, other names, descriptions and quotes. "
          'Answer {"answer": "yes"} if they are the same thing, "no" if they are different '
          'things (e.g. a city and a person with one name), "unsure" if the text cannot tell.')


def describe(concept: dict[str, Any]) -> str:
    lines = [f"label: {concept['label']}", f"type: {concept.get('type') or 'unknown'}"]
    if concept.get("aliases"):
        lines.append("other names: " + "; ".join(concept["aliases"]))
    if concept.get("description"):
        lines.append(f"description: {concept['description']}")
    lines += [f"quote: {q}" for q in concept.get("quotes", [])]
    return "\n".join(lines)


class Judge:
    """Asks the model about pairs; `calls` holds the rows to record (the caller stores them
    in its own transaction)."""

    def __init__(self, settings: ProviderSettings, models_dir: Path | None = None,
                 provider: Provider | None = None) -> None:
        self.settings = settings
        self.models_dir = models_dir
        self.provider = provider
        self.cache: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []

    def __call__(self, a: dict[str, Any], b: dict[str, Any]) -> str:
        first, second = sorted((describe(a), describe(b)))
        key = hashlib.sha256(f"{first}\0{second}".encode()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self._ask([
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Entry A:\n{first}\n\nEntry B:\n{second}\n\n"
                                            "Are A and B the same thing?"}])
        return self.cache[key]

    def _ask(self, messages: list[Message]) -> str:
        if self.provider is None:
            self.provider = build_provider(self.settings, self.models_dir)
        started, clock = utcnow(), time.perf_counter()
        try:
            completion = self.provider.complete(messages, SCHEMA)
        except MalformedReply as exc:
            self._row("invalid", started, clock, None, "malformed_reply", exc.message)
            return "unsure"
        except ProviderError as exc:
            self._row("error", started, clock, None, type(exc).__name__, exc.message)
            raise
        try:
            answer = json.loads(completion.content)["answer"]
        except (ValueError, KeyError, TypeError):
            answer = None
        if answer not in ANSWERS:
            self._row("invalid", started, clock, completion, "answer", "not yes/no/unsure")
            return "unsure"
        self._row("ok", started, clock, completion)
        return str(answer)

    def _row(self, status: str, started: Any, clock: float, c: Completion | None,
             error_kind: str | None = None, error: str | None = None) -> None:
        self.calls.append(call_row(self.settings, 1, status, started,
                                   round((time.perf_counter() - clock) * 1000, 1), c,
                                   error_kind, error, kind="resolve"))

    def close(self) -> None:
        if self.provider is not None:
            self.provider.close()
