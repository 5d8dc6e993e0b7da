"""How an OpenAI-compatible endpoint takes structured output, learnt once per (base URL, model).

Servers that call themselves OpenAI-compatible disagree here: vLLM, SGLang, LM Studio and
current llama-server take `response_format` json_schema; llama-cpp-python's server and older
llama-server builds take only `json_object` (+ a non-standard `schema`) and answer json_schema
with HTTP 500; a plain server takes neither. The first request tries the styles in order; a
rejection moves to the next one, and the answer is remembered here (per process) and in the
`endpoint_styles` table (kg.extraction.probes), so later runs skip the probe.
"""

from __future__ import annotations

import json
import re
import threading
from enum import StrEnum
from typing import Any

from kg.errors import ProviderError


class Style(StrEnum):
    """One way of asking for JSON output, most constrained first."""

    JSON_SCHEMA = "json_schema"  # response_format json_schema (OpenAI, vLLM, SGLang, LM Studio)
    JSON_OBJECT_SCHEMA = "json_object+schema"  # llama-cpp-python's server, llama-server
    PLAIN = "plain"  # no response_format: the schema goes in the prompt, replies are repaired


ORDER = (Style.JSON_SCHEMA, Style.JSON_OBJECT_SCHEMA, Style.PLAIN)

# A rejection of the request's shape names the field it did not like; a rejection for another
# reason (context length, model) must not make kg drop the schema.
_ABOUT_FORMAT = re.compile(r"response_format|json_schema|json_object|grammar|\bschema\b",
                           re.IGNORECASE)
REJECTION_STATUSES = (400, 422, 500)


def is_format_rejection(status: int, message: str) -> bool:
    """True when an error reply says the server does not take this structured-output style."""
    return status in REJECTION_STATUSES and bool(_ABOUT_FORMAT.search(message))


def next_style(style: Style) -> Style | None:
    """The style to try after this one was rejected, or None when none is left."""
    index = ORDER.index(style)
    return ORDER[index + 1] if index + 1 < len(ORDER) else None


def apply(style: Style, body: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The chat.completions keyword arguments for this style (body is not modified)."""
    out = dict(body)
    if style == Style.JSON_SCHEMA:
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "extraction", "schema": schema, "strict": True},
        }
    elif style == Style.JSON_OBJECT_SCHEMA:
        out["response_format"] = {"type": "json_object", "schema": schema}
    else:
        out.pop("response_format", None)
        out["messages"] = with_schema_in_prompt(out["messages"], schema)
    return out


def with_schema_in_prompt(messages: list[dict[str, str]],
                          schema: dict[str, Any]) -> list[dict[str, str]]:
    """The messages with the schema appended to the system prompt (unconstrained servers)."""
    note = ("\n\nAnswer with one JSON object and nothing else. It must match this JSON Schema:\n"
            + json.dumps(schema, separators=(",", ":")))
    out = [dict(m) for m in messages]
    for message in out:
        if message.get("role") == "system":
            message["content"] = message.get("content", "") + note
            return out
    return [{"role": "system", "content": note.strip()}, *out]


class StyleMemo:
    """Thread-safe memory of learnt styles; `learned` lists what is not yet stored."""

    def __init__(self) -> None:
        self._styles: dict[tuple[str, str], Style] = {}
        self._unsaved: dict[tuple[str, str], tuple[Style, str]] = {}
        self._lock = threading.Lock()

    def get(self, base_url: str, model: str) -> Style | None:
        with self._lock:
            return self._styles.get((base_url, model))

    def preload(self, known: dict[tuple[str, str], Style]) -> None:
        """Styles read from the database (they do not count as learnt)."""
        with self._lock:
            for key, style in known.items():
                self._styles.setdefault(key, style)

    def advance(self, base_url: str, model: str, rejected: Style, detail: str) -> Style | None:
        """Record that `rejected` was refused; the style to use now (None: nothing left).

        Several requests in flight may see the same rejection: only the first one moves on.
        """
        key = (base_url, model)
        with self._lock:
            current = self._styles.get(key, ORDER[0])
            if ORDER.index(current) > ORDER.index(rejected):
                return current
            following = next_style(rejected)
            if following is None:
                return None
            self._styles[key] = following
            self._unsaved[key] = (following, detail[:500])
            return following

    def learned(self) -> dict[tuple[str, str], tuple[Style, str]]:
        """Styles learnt since the last call (and forget that they were unsaved)."""
        with self._lock:
            out, self._unsaved = self._unsaved, {}
            return out

    def forget(self) -> None:
        """Drop everything (tests)."""
        with self._lock:
            self._styles.clear()
            self._unsaved.clear()


MEMO = StyleMemo()


def rejected_everywhere(url: str, model: str, detail: str) -> ProviderError:
    """The fatal one-line error when the server refused every style."""
    return StructuredOutputRejected(
        f"the server at {url} rejected every structured-output style kg knows "
        f"({', '.join(s.value for s in ORDER)}) for model {model} (last: {detail[:200]}); "
        "check that --base-url points at an OpenAI-compatible /v1 endpoint"
    )


class StructuredOutputRejected(ProviderError):
    """No way of asking this server for JSON works: retrying chunks cannot help."""

    fatal = True
