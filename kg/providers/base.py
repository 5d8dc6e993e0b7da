"""The one small interface every LLM backend implements, and the plain data it exchanges."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}

# Extra output budget granted when a model thinks, so that the answer still fits after it.
THINKING_BUDGET = {"off": 0, "low": 1024, "medium": 4096, "high": 8192}


@dataclass(frozen=True)
class ProviderSettings:
    """Everything a provider needs, copied out of an extraction profile row."""

    profile_name: str
    revision: int
    provider: str
    model: str
    base_url: str | None
    api_key_env: str | None
    temperature: float
    top_p: float
    thinking_mode: str
    gpu_layers: int
    num_threads: int | None
    context_window: int
    max_output_tokens: int
    max_parallel: int
    max_retries: int
    timeout_s: float
    keep_alive: str | None

    def api_key(self) -> str | None:
        """The key from the environment variable the profile names (never stored anywhere)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def output_budget(self) -> int:
        """max_output_tokens plus room for thinking, never beyond half the context."""
        extra = THINKING_BUDGET.get(self.thinking_mode, 0)
        if extra == 0:
            return self.max_output_tokens
        return max(self.max_output_tokens, min(self.max_output_tokens + extra,
                                               self.context_window // 2))


@dataclass
class Completion:
    """One model reply with the figures the backend reported (seconds, tokens)."""

    content: str
    thinking: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thinking_tokens: int = 0
    latency_s: float = 0.0
    load_s: float | None = None
    prompt_eval_s: float | None = None
    eval_s: float | None = None
    finish_reason: str | None = None
    model: str = ""

    @property
    def decode_tokens_per_s(self) -> float | None:
        if self.eval_s and self.completion_tokens:
            return self.completion_tokens / self.eval_s
        if self.latency_s and self.completion_tokens:
            return self.completion_tokens / self.latency_s
        return None


@dataclass
class ModelEntry:
    """A model the backend can serve."""

    name: str
    size_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A model currently in memory."""

    name: str
    size_bytes: int | None = None
    vram_bytes: int | None = None
    context_length: int | None = None
    expires_at: str | None = None


@dataclass
class CheckResult:
    """Outcome of a preflight check: one line per item, ok or not."""

    name: str
    ok: bool
    detail: str


@runtime_checkable
class Provider(Protocol):
    """What the engine calls. Implementations must be safe to call from several threads."""

    settings: ProviderSettings

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        """One schema-constrained chat request; raises kg.errors.ProviderError subclasses."""
        ...

    def check(self) -> list[CheckResult]:
        """Reachable, model present, thinking supported: raises the fatal error if not."""
        ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def status(self) -> list[LoadedModel]: ...

    def models(self) -> list[ModelEntry]: ...

    def close(self) -> None: ...


# Words split into pieces of at most 6 characters, plus each punctuation mark: close to what
# BPE tokenizers give for English prose and code, and it grows with long unbroken strings.
# CJK ideographs and kana count one token each.
_PIECES = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w{1,6}|[^\w\s]", re.UNICODE
)


def estimate_tokens(text: str) -> int:
    """A local token estimate (no tokenizer download, so it works air-gapped)."""
    if not text:
        return 0
    return max(1, sum(1 for _ in _PIECES.finditer(text)))


_THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


def split_think_tags(content: str) -> tuple[str, str]:
    """Split a leading <think>...</think> (or an unopened ...</think>) off the content.

    Servers without a reasoning parser leave the model's thinking inside the content.
    Returns (content, thinking).
    """
    match = _THINK_BLOCK.match(content)
    if match:
        return content[match.end():], match.group(1).strip()
    if "</think>" in content and "<think>" not in content:
        thinking, _, rest = content.partition("</think>")
        return rest.lstrip(), thinking.strip()
    return content, ""
