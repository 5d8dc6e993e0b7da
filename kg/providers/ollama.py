"""Ollama through the official `ollama` client: /api/chat with a JSON Schema `format`."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import ollama

from kg.errors import (
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ServerBusy,
    ServerFailure,
    ThinkingUnsupported,
)
from kg.providers.base import (
    CheckResult,
    Completion,
    LoadedModel,
    Message,
    ModelEntry,
    ProviderSettings,
    estimate_tokens,
)

NS = 1e-9


def is_gpt_oss(model: str, family: str | None = None) -> bool:
    """gpt-oss takes think levels and cannot turn thinking off."""
    return model.lower().startswith("gpt-oss") or (family or "").lower() in ("gptoss", "gpt-oss")


def think_value(mode: str, capable: bool, gpt_oss: bool) -> bool | str | None:
    """The `think` field for a thinking mode: None means the field is left out."""
    if gpt_oss:
        return "low" if mode == "off" else mode
    if not capable:
        return None
    return mode != "off"


def _keep_alive(value: str | None) -> str | float | None:
    if value is None:
        return None
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value


class OllamaProvider:
    """Talks to one Ollama server; thread-safe (httpx.Client is)."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.host = settings.base_url or "http://localhost:11434"
        timeout = httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s))
        # Plain http needs no CA bundle; loading one costs ~70 ms per provider (hot reload).
        verify = self.host.startswith("https://")
        self.client = ollama.Client(host=self.host, timeout=timeout, verify=verify)
        self._show: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------
    def _translate(self, exc: Exception) -> ProviderError:
        model = self.settings.model
        if isinstance(exc, ollama.ResponseError):
            text = str(exc.error)
            if exc.status_code == 404:
                return ModelNotFound(
                    f"model {model} is not available on {self.host}; run `ollama pull {model}`"
                )
            if exc.status_code == 400 and "does not support thinking" in text:
                return ThinkingUnsupported(
                    f"model {model} does not support thinking; set "
                    "`kg admin extraction set --thinking-mode off`"
                )
            if exc.status_code == 503:
                return ServerBusy(f"Ollama at {self.host} is busy (503): {text}")
            if exc.status_code >= 500 or exc.status_code == 499:
                return ServerFailure(f"Ollama at {self.host} failed ({exc.status_code}): {text}")
            return ProviderError(f"Ollama at {self.host} rejected the request "
                                 f"({exc.status_code}): {text}")
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return ProviderUnavailable(
                f"no Ollama at {self.host}; start it or fix --base-url"
            )
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeout(
                f"Ollama at {self.host} did not answer within {self.settings.timeout_s:g}s; "
                "raise --timeout or lower --max-parallel"
            )
        if isinstance(exc, httpx.HTTPError):
            return ProviderUnavailable(f"cannot talk to Ollama at {self.host}: {exc}")
        return ProviderError(f"unexpected reply from Ollama at {self.host}: {exc}")

    def _call(self, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError) as exc:
            raise self._translate(exc) from None

    def show(self) -> dict[str, Any]:
        """Model details and capabilities from /api/show (cached per provider)."""
        with self._lock:
            if self._show is None:
                reply = self._call(self.client.show, self.settings.model)
                self._show = {
                    "capabilities": list(reply.capabilities or []),
                    "family": reply.details.family if reply.details else None,
                    "model_info": dict(reply.modelinfo or {}),
                }
            return self._show

    def context_length(self) -> int | None:
        """The model's trained context length, from model_info (`<arch>.context_length`)."""
        for key, value in self.show()["model_info"].items():
            if key.endswith(".context_length") and isinstance(value, int):
                return value
        return None

    def _think(self) -> bool | str | None:
        info = self.show()
        capable = "thinking" in info["capabilities"]
        gpt_oss = is_gpt_oss(self.settings.model, info["family"])
        mode = self.settings.thinking_mode
        if mode != "off" and not capable and not gpt_oss:
            raise ThinkingUnsupported(
                f"model {self.settings.model} does not support thinking (capabilities: "
                f"{', '.join(info['capabilities']) or 'none'}); set "
                "`kg admin extraction set --thinking-mode off`"
            )
        return think_value(mode, capable, gpt_oss)

    def options(self) -> dict[str, Any]:
        """Explicit options: never rely on Ollama's defaults (num_ctx above all)."""
        s = self.settings
        opts: dict[str, Any] = {
            "temperature": s.temperature,
            "top_p": s.top_p,
            "num_ctx": s.context_window,
            "num_predict": s.output_budget,
            "num_gpu": s.gpu_layers,
        }
        if s.num_threads is not None:
            opts["num_thread"] = s.num_threads
        return opts

    # -- Provider ------------------------------------------------------------------------
    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        think = self._think()
        started = time.perf_counter()
        reply = self._call(
            self.client.chat,
            model=self.settings.model,
            messages=messages,
            format=json_schema,
            options=self.options(),
            think=think,
            keep_alive=_keep_alive(self.settings.keep_alive),
            stream=False,
        )
        latency = time.perf_counter() - started
        thinking = reply.message.thinking or ""
        eval_count = reply.eval_count or 0
        # Ollama counts thinking inside eval_count; split it with a local estimate.
        thinking_tokens = min(eval_count, estimate_tokens(thinking)) if thinking else 0
        return Completion(
            content=reply.message.content or "",
            thinking=thinking,
            prompt_tokens=reply.prompt_eval_count or 0,
            completion_tokens=eval_count - thinking_tokens,
            thinking_tokens=thinking_tokens,
            latency_s=latency,
            load_s=(reply.load_duration or 0) * NS if reply.load_duration is not None else None,
            prompt_eval_s=(reply.prompt_eval_duration or 0) * NS
            if reply.prompt_eval_duration is not None
            else None,
            eval_s=(reply.eval_duration or 0) * NS if reply.eval_duration is not None else None,
            finish_reason=reply.done_reason,
            model=reply.model or self.settings.model,
        )

    def check(self) -> list[CheckResult]:
        results = []
        version = self._call(self.client._client.get, "/api/version")  # reachability
        results.append(CheckResult("server", True, f"Ollama {version.json().get('version', '?')} "
                                                    f"at {self.host}"))
        info = self.show()
        results.append(CheckResult("model", True, f"{self.settings.model} is available"))
        think = self._think()
        results.append(
            CheckResult(
                "thinking",
                True,
                f"thinking_mode {self.settings.thinking_mode} -> think={think!r} "
                f"(capabilities: {', '.join(info['capabilities']) or 'none'})",
            )
        )
        return results

    def load(self) -> None:
        self._call(
            self.client.chat, model=self.settings.model, messages=[],
            keep_alive=_keep_alive(self.settings.keep_alive) or -1,
            options={"num_ctx": self.settings.context_window, "num_gpu": self.settings.gpu_layers},
        )

    def unload(self) -> None:
        self._call(self.client.chat, model=self.settings.model, messages=[], keep_alive=0)

    def status(self) -> list[LoadedModel]:
        reply = self._call(self.client.ps)
        return [
            LoadedModel(
                name=m.model or m.name or "?",
                size_bytes=int(m.size) if m.size is not None else None,
                vram_bytes=int(m.size_vram) if m.size_vram is not None else None,
                context_length=m.context_length,
                expires_at=m.expires_at.isoformat() if m.expires_at else None,
            )
            for m in reply.models
        ]

    def models(self) -> list[ModelEntry]:
        reply = self._call(self.client.list)
        return [
            ModelEntry(
                name=m.model or "?",
                size_bytes=int(m.size) if m.size is not None else None,
                details=m.details.model_dump(exclude_none=True) if m.details else {},
            )
            for m in reply.models
        ]

    def close(self) -> None:
        self.client._client.close()
