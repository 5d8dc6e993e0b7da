"""The one small interface every LLM backend implements, and the plain data it exchanges."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

# The settings are declared once, in kg.profiles.settings (which imports nothing from here);
# providers only read them.
from kg.errors import ProviderError
from kg.profiles.settings import ProviderSettings

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


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
    endpoint: str | None = None  # which server answered, when a profile has several

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


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    """One line of a preflight: what was checked, how it went, and the detail to show."""

    name: str
    status: CheckStatus
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail}


@runtime_checkable
class Provider(Protocol):
    """What the engine calls. Implementations must be safe to call from several threads."""

    settings: ProviderSettings

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        """One schema-constrained chat request; raises kg.errors.ProviderError subclasses.

        A reply the provider cannot read (HTTP 200 with a body that is not the protocol's
        shape) raises kg.errors.MalformedReply, never a parsing exception.
        """
        ...

    def check(self) -> list[CheckResult]:
        """Reachable, model present, thinking supported: raises the fatal error if not."""
        ...

    def context_check(self) -> CheckResult:
        """Whether context_window fits what the model or server allows."""
        ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def status(self) -> list[LoadedModel]: ...

    def models(self) -> list[ModelEntry]: ...

    def close(self) -> None: ...


class VisionUnsupported(ProviderError):
    """The model (or its provider) cannot take images: a vision profile needs one that can."""


@dataclass(frozen=True)
class Image:
    """One image for a vision model: the encoded bytes and their media type (image/png...)."""

    data: bytes
    media_type: str = "image/png"

    def base64(self) -> str:
        import base64

        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{self.base64()}"


class ProviderBase:
    """Defaults for the optional parts of the Provider protocol; backends override what they can."""

    settings: ProviderSettings

    def describe(self, prompt: str, image: Image) -> Completion:
        """One plain-text chat request about an image (vision profiles); VisionUnsupported
        when the backend cannot carry images."""
        raise VisionUnsupported(
            f"provider {self.settings.provider} cannot send images; give the vision profile a "
            "provider that can (ollama, vllm, openai)")

    def vision_check(self) -> CheckResult:
        """Whether the configured model can see: raises VisionUnsupported if not."""
        self.describe("", Image(b""))  # raises for providers without images
        return CheckResult("vision", CheckStatus.OK, f"{self.settings.model} takes images")

    def context_check(self) -> CheckResult:
        return CheckResult("context", CheckStatus.OK,
                           f"context_window {self.settings.context_window}")

    def load(self) -> None:
        """Nothing to preload."""

    def unload(self) -> None:
        """Nothing to unload."""

    def status(self) -> list[LoadedModel]:
        return []

    def models(self) -> list[ModelEntry]:
        return []

    def close(self) -> None:
        """Nothing to release."""


def unreadable_detail(exc: BaseException) -> str:
    """One short line saying why a reply could not be read (for MalformedReply messages)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        return f"{where}: {first['msg']}"[:160]
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


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
