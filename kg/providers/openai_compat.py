"""vLLM and other OpenAI-compatible servers through the official `openai` client."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai

from kg.errors import (
    AuthenticationFailed,
    ContextOverflow,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ServerBusy,
    ServerFailure,
)
from kg.providers.base import (
    CheckResult,
    Completion,
    LoadedModel,
    Message,
    ModelEntry,
    ProviderSettings,
    estimate_tokens,
    split_think_tags,
)


class OpenAICompatProvider:
    """One OpenAI-compatible endpoint; `vllm` adds vLLM's thinking switch and /health."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.base_url = (settings.base_url or "http://localhost:8000/v1").rstrip("/")
        self.is_vllm = settings.provider == "vllm"
        self.client = openai.OpenAI(
            base_url=self.base_url,
            # vLLM needs no key unless started with --api-key; the client insists on some string.
            api_key=settings.api_key() or "not-needed",
            timeout=settings.timeout_s,
            max_retries=0,  # kg's engine retries, and records every attempt as a call
        )

    @property
    def server_root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def _translate(self, exc: Exception) -> ProviderError:
        model, url = self.settings.model, self.base_url
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
        return ProviderError(f"unexpected failure talking to {url}: {exc}")

    def _call(self, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._translate(exc) from None

    def request_body(self, messages: list[Message], json_schema: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for chat.completions.create."""
        s = self.settings
        extra_body: dict[str, Any] = {}
        body: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.output_budget,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "schema": json_schema, "strict": True},
            },
        }
        if self.is_vllm:
            extra_body["chat_template_kwargs"] = {"enable_thinking": s.thinking_mode != "off"}
        if s.thinking_mode != "off":
            body["reasoning_effort"] = s.thinking_mode
        if extra_body:
            body["extra_body"] = extra_body
        return body

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        started = time.perf_counter()
        reply = self._call(
            self.client.chat.completions.create, **self.request_body(messages, json_schema)
        )
        latency = time.perf_counter() - started
        if not reply.choices:
            raise ServerFailure(f"the server at {self.base_url} sent a reply with no choices")
        choice = reply.choices[0]
        message = choice.message
        extra = message.model_extra or {}
        thinking = extra.get("reasoning") or extra.get("reasoning_content") or ""
        content = message.content or ""
        if not thinking:
            content, thinking = split_think_tags(content)
        usage = reply.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        thinking_tokens = 0
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        if details is not None and getattr(details, "reasoning_tokens", None):
            thinking_tokens = int(details.reasoning_tokens)
        elif thinking:
            thinking_tokens = min(completion_tokens, estimate_tokens(thinking))
        return Completion(
            content=content,
            thinking=thinking,
            prompt_tokens=prompt_tokens or 0,
            completion_tokens=(completion_tokens or 0) - thinking_tokens,
            thinking_tokens=thinking_tokens,
            latency_s=latency,
            finish_reason=choice.finish_reason,
            model=reply.model or self.settings.model,
        )

    def _health(self) -> None:
        try:
            response = httpx.get(f"{self.server_root}/health",
                                 timeout=min(10.0, self.settings.timeout_s))
        except httpx.HTTPError as exc:
            raise self._translate(exc) from None
        if response.status_code != 200:
            raise ServerFailure(
                f"vLLM at {self.server_root} is unhealthy (/health answered "
                f"{response.status_code}); check the server log"
            )

    def check(self) -> list[CheckResult]:
        results = []
        if self.is_vllm:
            self._health()
            results.append(CheckResult("server", True, f"vLLM healthy at {self.server_root}"))
        served = self.models()
        if not self.is_vllm:
            results.append(CheckResult("server", True, f"answering at {self.base_url}"))
        names = [m.name for m in served]
        if self.settings.model not in names:
            raise ModelNotFound(
                f"model {self.settings.model} is not served at {self.base_url} (served: "
                f"{', '.join(names) or 'none'}); fix --model"
            )
        entry = next(m for m in served if m.name == self.settings.model)
        results.append(CheckResult("model", True, f"{self.settings.model} is served"
                                   + (f" (max_model_len {entry.details['max_model_len']})"
                                      if entry.details.get("max_model_len") else "")))
        return results

    def load(self) -> None:
        # A vLLM server serves one base model for its life: "loading" means checking it.
        self.check()

    def unload(self) -> None:
        """Nothing to unload from here: the server owns its model."""

    def status(self) -> list[LoadedModel]:
        return [
            LoadedModel(name=m.name, context_length=m.details.get("max_model_len"))
            for m in self.models()
        ]

    def models(self) -> list[ModelEntry]:
        page = self._call(self.client.models.list)
        entries = []
        for m in page.data:
            extra = m.model_extra or {}
            details = {k: extra[k] for k in ("max_model_len", "root", "parent") if k in extra}
            details["owned_by"] = m.owned_by
            entries.append(ModelEntry(name=m.id, details=details))
        return entries

    def close(self) -> None:
        self.client.close()


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(exc.message)
