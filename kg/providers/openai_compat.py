"""vLLM and other OpenAI-compatible servers through the official `openai` client."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kg.errors import (
    AuthenticationFailed,
    ContextOverflow,
    MalformedReply,
    MissingApiKey,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ServerBusy,
    ServerFailure,
)
from kg.providers.base import (
    CheckResult,
    CheckStatus,
    Completion,
    Image,
    LoadedModel,
    Message,
    ModelEntry,
    ProviderBase,
    VisionUnsupported,
    estimate_tokens,
    split_think_tags,
    unreadable_detail,
)
from kg.providers.registry import ProviderSpec, Reload, Thinking, register
from kg.providers.styles import MEMO, Style, is_format_rejection, rejected_everywhere
from kg.providers.styles import apply as styles_apply
from kg.urls import redact_url

if TYPE_CHECKING:
    import openai

    from kg.profiles.settings import ProviderSettings

# The client libraries (openai ~0.5 s, httpx) are imported where they are used: registering
# these providers must not cost that to every `kg` command that reads the registry.

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_URL = "http://localhost:8000/v1"
# How the client fails on an HTTP 200 it cannot parse: a body that is not JSON (ValueError), or
# an object without the expected fields (the client builds models without validation, so the
# failure shows up as AttributeError / TypeError / IndexError when the fields are read).
UNREADABLE = (ValueError, TypeError, AttributeError, KeyError, IndexError)


class OpenAICompatProvider(ProviderBase):
    """One OpenAI-compatible endpoint; `vllm` adds vLLM's thinking switch and /health."""

    def __init__(self, settings: ProviderSettings, *, vllm: bool = False) -> None:
        import openai

        self.settings = settings
        self.base_url = (settings.base_url or DEFAULT_URL).rstrip("/")
        self.shown_url = redact_url(self.base_url) or self.base_url
        self.is_vllm = vllm
        key = settings.api_key()
        self.missing_key = settings.api_key_env if settings.api_key_env and not key else None
        self.client = openai.OpenAI(
            base_url=self.base_url,
            # vLLM needs no key unless started with --api-key; the client insists on some string.
            api_key=key or "not-needed",
            timeout=settings.timeout_s,
            max_retries=0,  # kg's engine retries, and records every attempt as a call
        )

    @property
    def server_root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def _require_key(self) -> None:
        if self.missing_key:
            raise MissingApiKey(
                f"the environment variable ${self.missing_key} (named by --api-key-env) is not "
                f"set; export it, or clear the setting with `kg admin extraction set "
                f"--api-key-env ''`"
            )

    def _translate(self, exc: Exception) -> ProviderError:
        import httpx
        import openai

        model, url = self.settings.model, self.shown_url
        if isinstance(exc, openai.NotFoundError):
            return ModelNotFound(
                f"model {model} is not served at {url}; check `kg models list` and fix --model "
                "(a vLLM server serves the model it was started with)"
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            env = self.settings.api_key_env
            hint = (
                f"check the key in ${env}" if env
                else "set --api-key-env to the NAME of the variable holding the key"
            )
            return AuthenticationFailed(f"the server at {url} refused the API key "
                                        f"({exc.status_code}); {hint}")
        if isinstance(exc, openai.BadRequestError):
            message = _error_message(exc)
            if "maximum context length" in message or "context length" in message:
                return ContextOverflow(
                    f"the prompt does not fit the model's context at {url}: {message}; use "
                    "smaller chunks or raise the server's --max-model-len"
                )
            return ProviderError(f"the server at {url} rejected the request (400): {message}")
        if isinstance(exc, openai.RateLimitError):
            return ServerBusy(f"the server at {url} is busy (429): {_error_message(exc)}")
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code == 503:
                return ServerBusy(f"the server at {url} is busy (503): {_error_message(exc)}")
            if exc.status_code >= 500:
                return ServerFailure(
                    f"the server at {url} failed ({exc.status_code}): {_error_message(exc)}"
                )
            return ProviderError(
                f"the server at {url} rejected the request ({exc.status_code}): "
                f"{_error_message(exc)}"
            )
        if isinstance(exc, openai.APITimeoutError):
            return ProviderTimeout(
                f"the server at {url} did not answer within {self.settings.timeout_s:g}s; raise "
                "--timeout or lower --max-parallel"
            )
        if isinstance(exc, openai.APIConnectionError | httpx.ConnectError):
            return ProviderUnavailable(
                f"no OpenAI-compatible server at {url}; start it or fix --base-url"
            )
        if isinstance(exc, (openai.APIResponseValidationError, *UNREADABLE)):
            return _malformed(url, exc)
        return ProviderError(f"unexpected failure talking to {url}: {exc}")

    def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import httpx
        import openai

        try:
            return func(*args, **kwargs)
        except (openai.OpenAIError, httpx.HTTPError, *UNREADABLE) as exc:
            raise self._translate(exc) from None

    @property
    def style(self) -> Style:
        """How this endpoint takes structured output (json_schema until it refuses it)."""
        return MEMO.get(self.base_url, self.settings.model) or Style.JSON_SCHEMA

    def request_body(self, messages: list[Message], json_schema: dict[str, Any],
                     style: Style | None = None) -> dict[str, Any]:
        """The keyword arguments for chat.completions.create (in the endpoint's style)."""
        s = self.settings
        extra_body: dict[str, Any] = {}
        body: dict[str, Any] = styles_apply(style or self.style, {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.output_budget,
        }, json_schema)
        if self.is_vllm:
            extra_body["chat_template_kwargs"] = {"enable_thinking": s.thinking_mode != "off"}
        if s.thinking_mode != "off":
            body["reasoning_effort"] = s.thinking_mode
        if extra_body:
            body["extra_body"] = extra_body
        return body

    def _send(self, body: dict[str, Any]) -> Any:
        """One chat request; a refusal of the structured-output style raises _Rejected."""
        import httpx
        import openai

        try:
            return self.client.chat.completions.create(**body)
        except openai.APIStatusError as exc:
            message = _error_message(exc)
            if is_format_rejection(exc.status_code, message):
                raise _Rejected(f"{exc.status_code}: {message}") from None
            raise self._translate(exc) from None
        except (openai.OpenAIError, httpx.HTTPError, *UNREADABLE) as exc:
            raise self._translate(exc) from None

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        self._require_key()
        style = self.style
        while True:
            started = time.perf_counter()
            try:
                reply = self._send(self.request_body(messages, json_schema, style))
                break
            except _Rejected as rejected:
                # A malformed-request answer is permanent: retrying the chunk cannot help, the
                # next style might. The same request goes out again at once in that style.
                following = MEMO.advance(self.base_url, self.settings.model, style,
                                         rejected.detail)
                if following is None:
                    raise rejected_everywhere(self.shown_url, self.settings.model,
                                              rejected.detail) from None
                log.info("%s refused structured output as %s (%s); using %s", self.shown_url,
                         style.value, rejected.detail, following.value)
                style = following
        latency = time.perf_counter() - started
        try:
            return self._completion(reply, latency)
        except UNREADABLE as exc:
            raise _malformed(self.shown_url, exc) from None

    def _completion(self, reply: Any, latency: float) -> Completion:
        from openai.types.chat import ChatCompletion

        if not isinstance(reply, ChatCompletion):
            raise TypeError(f"the body is {type(reply).__name__}, not a chat completion")
        if not reply.choices:
            raise ValueError("the reply has no choices")
        choice = reply.choices[0]
        message = choice.message
        extra = message.model_extra or {}
        thinking = extra.get("reasoning") or extra.get("reasoning_content") or ""
        content = message.content or ""
        if not isinstance(content, str) or not isinstance(thinking, str):
            raise TypeError("message content and reasoning must be strings")
        if not thinking:
            content, thinking = split_think_tags(content)
        usage = reply.usage
        prompt_tokens = int(usage.prompt_tokens or 0) if usage else 0
        completion_tokens = int(usage.completion_tokens or 0) if usage else 0
        thinking_tokens = 0
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        if details is not None and getattr(details, "reasoning_tokens", None):
            thinking_tokens = int(details.reasoning_tokens)
        elif thinking:
            thinking_tokens = min(completion_tokens, estimate_tokens(thinking))
        return Completion(
            content=content,
            thinking=thinking,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens - thinking_tokens,
            thinking_tokens=thinking_tokens,
            latency_s=latency,
            finish_reason=choice.finish_reason,
            model=reply.model if isinstance(reply.model, str) and reply.model
            else self.settings.model,
        )

    def describe(self, prompt: str, image: Image) -> Completion:
        return self._describe(prompt, image, self.settings.output_budget)

    def _describe(self, prompt: str, image: Image, max_tokens: int) -> Completion:
        import httpx
        import openai

        self._require_key()
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            # OpenAI's content parts: the image as a data: URL (no URL kg would have to host).
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": image.data_url()}}]}],
            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": max_tokens,
        }
        if self.is_vllm:
            body["extra_body"] = {"chat_template_kwargs": {"enable_thinking":
                                                           s.thinking_mode != "off"}}
        started = time.perf_counter()
        try:
            reply = self.client.chat.completions.create(**body)
        except openai.APIStatusError as exc:
            message = _error_message(exc)
            if exc.status_code in (400, 500) and is_image_refusal(message):
                raise VisionUnsupported(
                    f"model {s.model} at {self.shown_url} cannot see images ({message}); "
                    "serve a vision model (llama.cpp: with --mmproj)") from None
            raise self._translate(exc) from None
        except (openai.OpenAIError, httpx.HTTPError, *UNREADABLE) as exc:
            raise self._translate(exc) from None
        latency = time.perf_counter() - started
        try:
            return self._completion(reply, latency)
        except UNREADABLE as exc:
            raise _malformed(self.shown_url, exc) from None

    def vision_check(self) -> CheckResult:
        # The OpenAI API has no capability listing: a one-token request with a tiny image
        # is the only honest test.
        self._describe("What colour is this image? One word.", Image(TINY_PNG), 8)
        return CheckResult("vision", CheckStatus.OK,
                           f"{self.settings.model} answered a request with an image")

    def _health(self) -> None:
        import httpx

        try:
            response = httpx.get(f"{self.server_root}/health",
                                 timeout=min(10.0, self.settings.timeout_s))
        except httpx.HTTPError as exc:
            raise self._translate(exc) from None
        if response.status_code != 200:
            raise ServerFailure(
                f"vLLM at {redact_url(self.server_root)} is unhealthy (/health answered "
                f"{response.status_code}); check the server log"
            )

    def check(self) -> list[CheckResult]:
        self._require_key()
        results = []
        if self.is_vllm:
            self._health()
            results.append(CheckResult("server", CheckStatus.OK,
                                       f"vLLM healthy at {redact_url(self.server_root)}"))
        served = self.models()
        if not self.is_vllm:
            results.append(CheckResult("server", CheckStatus.OK,
                                       f"answering at {self.shown_url}"))
        names = [m.name for m in served]
        if self.settings.model not in names:
            raise ModelNotFound(
                f"model {self.settings.model} is not served at {self.shown_url} (served: "
                f"{', '.join(names) or 'none'}); fix --model"
            )
        entry = next(m for m in served if m.name == self.settings.model)
        limit = entry.details.get("max_model_len")
        results.append(CheckResult("model", CheckStatus.OK, f"{self.settings.model} is served"
                                   + (f" (max_model_len {limit})" if limit else "")))
        return results

    def context_check(self) -> CheckResult:
        window = self.settings.context_window
        served = {m.name: m for m in self.models()}
        entry = served.get(self.settings.model)
        limit = entry.details.get("max_model_len") if entry else None
        if limit and window > limit:
            return CheckResult("context", CheckStatus.WARN,
                               f"context_window {window} exceeds the server's max_model_len "
                               f"{limit}; set --context-window {limit}")
        return CheckResult("context", CheckStatus.OK,
                           f"server max_model_len {limit or 'unknown'}, context_window {window}")

    def load(self) -> None:
        # A vLLM server serves one base model for its life: "loading" means checking it.
        self.check()

    def status(self) -> list[LoadedModel]:
        return [
            LoadedModel(name=m.name, context_length=m.details.get("max_model_len"))
            for m in self.models()
        ]

    def models(self) -> list[ModelEntry]:
        page = self._call(self.client.models.list)
        try:
            entries = []
            for m in page.data:
                extra = m.model_extra or {}
                details: dict[str, Any] = {k: extra[k] for k in ("max_model_len", "root", "parent")
                                           if k in extra}
                details["owned_by"] = m.owned_by
                if not isinstance(m.id, str):
                    raise TypeError("a model without an id")
                entries.append(ModelEntry(name=m.id, details=details))
            return entries
        except UNREADABLE as exc:
            raise _malformed(f"{self.shown_url} (/models)", exc) from None

    def close(self) -> None:
        self.client.close()


class _Rejected(Exception):
    """The server refused the request's structured-output style (status and message)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:  # LM Studio: {"error": "..."}
            return inner
        if body.get("message"):
            return str(body["message"])
    if isinstance(body, str) and body:  # the client unwraps {"error": "..."} (LM Studio)
        return body
    return str(exc.message)


# What servers answer when the model has no vision encoder: vLLM (400 "At most 0 image(s)
# may be provided in one prompt."), llama.cpp's server without --mmproj (400 "image input is
# not supported ..."), LM Studio and others ("does not support images", "not a multimodal
# model").
_IMAGE_REFUSALS = ("at most 0 image", "image input is not supported", "does not support image",
                   "not a multimodal model", "mmproj", "does not support vision",
                   "missing data required for image input")
# An 8 x 8 white PNG (vision_check's probe).
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000008000000080800000000e164e1570000001049444154"
    "789c63fccf00014c0c1431004941010f7960f3f80000000049454e44ae426082")


def is_image_refusal(message: str) -> bool:
    """True when a server's error says the model cannot take images."""
    lowered = message.lower()
    return any(marker in lowered for marker in _IMAGE_REFUSALS)


def _malformed(url: str, exc: BaseException) -> MalformedReply:
    return MalformedReply(f"the server at {url} sent a reply kg cannot read "
                          f"({unreadable_detail(exc)}); check that --base-url points at an "
                          "OpenAI-compatible /v1 endpoint")


def _vllm(settings: ProviderSettings, _models_dir: Path | None) -> OpenAICompatProvider:
    return OpenAICompatProvider(settings, vllm=True)


def _openai(settings: ProviderSettings, _models_dir: Path | None) -> OpenAICompatProvider:
    return OpenAICompatProvider(settings)


# No provider-specific settings: the server decides threads, GPU layers and how long it keeps
# the model (the OpenAI API has no field for them).
_SERVER_DEFAULTS = {"base_url": DEFAULT_URL, "context_window": 8192, "max_output_tokens": 2048,
                    "timeout_s": 300.0}
_ONE_MODEL = ("a vLLM server serves the model it was started with: kg cannot switch it; "
              "checked that the endpoint serves the configured model")

VLLM = register(ProviderSpec(
    name="vllm",
    factory=_vllm,
    summary="vLLM's OpenAI-compatible server (official openai client)",
    defaults={**_SERVER_DEFAULTS, "max_parallel": 8},
    structured_output="response_format json_schema",
    thinking=Thinking.TEMPLATE_KWARGS,
    reload=Reload.SERVES_ONE_MODEL,
    uses_api_key=True,
    reload_note=_ONE_MODEL,
    images=True,  # image_url content parts (a data: URL)
))
OPENAI = register(ProviderSpec(
    name="openai",
    factory=_openai,
    summary="any OpenAI-compatible /v1 server",
    defaults={**_SERVER_DEFAULTS, "max_parallel": 4},
    structured_output="probed: json_schema, json_object+schema, or plain JSON with repair",
    thinking=Thinking.REASONING_EFFORT,
    reload=Reload.SERVES_ONE_MODEL,
    uses_api_key=True,
    reload_note="the server serves the model it was started with: kg cannot switch it; "
                "checked that the endpoint serves the configured model",
    images=True,  # image_url content parts (a data: URL)
))
