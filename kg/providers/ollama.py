"""Ollama through the official `ollama` client: /api/chat with a JSON Schema `format`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from kg.errors import (
    MalformedReply,
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
    CheckStatus,
    Completion,
    Image,
    LoadedModel,
    Message,
    ModelEntry,
    ProviderBase,
    VisionUnsupported,
    estimate_tokens,
    unreadable_detail,
)
from kg.providers.registry import ProviderSpec, Reload, Thinking, register
from kg.settings import load_settings
from kg.urls import redact_url

if TYPE_CHECKING:
    import ollama

    from kg.profiles.settings import ProviderSettings

# The client libraries (httpx, ollama) are imported where they are used: registering this
# provider must not cost their import time to every `kg` command that reads the registry.

T = TypeVar("T")
NS = 1e-9
DEFAULT_PORT = 11434
DEFAULT_HOST = f"http://localhost:{DEFAULT_PORT}"
# Parsing failures of the client on an HTTP 200 (a body that is not JSON, or not the shape the
# client's pydantic models expect): JSONDecodeError and ValidationError are ValueErrors;
# `cls(**body)` on a JSON list or string is a TypeError.
UNREADABLE = (ValueError, TypeError, AttributeError, KeyError)


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


def resolve_host(base_url: str | None) -> str:
    """The profile's base URL; without one, $OLLAMA_HOST (as the ollama CLI does), then the default.

    OLLAMA_HOST may be `host`, `host:port` or a URL: the scheme defaults to http, the port to 11434.
    """
    if base_url:
        return base_url
    value = (load_settings().ollama_host or "").strip().rstrip("/")
    if not value:
        return DEFAULT_HOST
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    if parts.port is None and parts.hostname:
        value = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{DEFAULT_PORT}"))
    return value


class OllamaProvider(ProviderBase):
    """Talks to one Ollama server; thread-safe (httpx.Client is)."""

    def __init__(self, settings: ProviderSettings) -> None:
        import httpx
        import ollama

        self.settings = settings
        self.host = resolve_host(settings.base_url)
        self.shown_host = redact_url(self.host) or self.host
        timeout = httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s))
        # Plain http needs no CA bundle; loading one costs ~70 ms per provider (hot reload).
        verify = self.host.startswith("https://")
        self.client = ollama.Client(host=self.host, timeout=timeout, verify=verify)
        # The client has no call for /api/version (and its httpx client is private).
        self.http = httpx.Client(base_url=self.host, timeout=timeout, verify=verify)
        self._show: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------
    def _translate(self, exc: Exception) -> ProviderError:
        import httpx
        import ollama

        model, host = self.settings.model, self.shown_host
        if isinstance(exc, ollama.ResponseError):
            text = str(exc.error)
            if exc.status_code == 404:
                return ModelNotFound(
                    f"model {model} is not available on {host}; run `ollama pull {model}`"
                )
            if exc.status_code == 400 and "does not support thinking" in text:
                return ThinkingUnsupported(
                    f"model {model} does not support thinking; set "
                    "`kg admin extraction set --thinking-mode off`"
                )
            if exc.status_code == 503:
                return ServerBusy(f"Ollama at {host} is busy (503): {text}")
            if exc.status_code >= 500 or exc.status_code == 499:
                return ServerFailure(f"Ollama at {host} failed ({exc.status_code}): {text}")
            return ProviderError(f"Ollama at {host} rejected the request "
                                 f"({exc.status_code}): {text}")
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return ProviderUnavailable(f"no Ollama at {host}; start it or fix --base-url")
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeout(
                f"Ollama at {host} did not answer within {self.settings.timeout_s:g}s; "
                "raise --timeout or lower --max-parallel"
            )
        if isinstance(exc, httpx.HTTPError):
            return ProviderUnavailable(f"cannot talk to Ollama at {host}: {exc}")
        if isinstance(exc, UNREADABLE):
            return _malformed(f"Ollama at {host}", exc)
        return ProviderError(f"unexpected reply from Ollama at {host}: {exc}")

    def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import httpx
        import ollama

        try:
            return func(*args, **kwargs)
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, *UNREADABLE) as exc:
            raise self._translate(exc) from None

    def show(self) -> dict[str, Any]:
        """Model details and capabilities from /api/show (cached per provider)."""
        with self._lock:
            if self._show is None:
                reply = self._call(self.client.show, self.settings.model)
                info = reply.modelinfo
                if not isinstance(info, dict):
                    raise MalformedReply(
                        f"Ollama at {self.shown_host} answered /api/show for "
                        f"{self.settings.model} without model_info; upgrade Ollama or check "
                        "that --base-url points at Ollama"
                    )
                self._show = {
                    "capabilities": list(reply.capabilities or []),
                    "family": reply.details.family if reply.details else None,
                    "model_info": dict(info),
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
        try:
            return self._completion(reply, latency)
        except UNREADABLE as exc:
            raise _malformed(f"Ollama at {self.shown_host}", exc) from None

    def _completion(self, reply: ollama.ChatResponse, latency: float) -> Completion:
        message = reply.message
        content = message.content or ""
        thinking = message.thinking or ""
        if not isinstance(content, str) or not isinstance(thinking, str):
            raise TypeError("message.content and message.thinking must be strings")
        eval_count = int(reply.eval_count or 0)
        # Ollama counts thinking inside eval_count; split it with a local estimate.
        thinking_tokens = min(eval_count, estimate_tokens(thinking)) if thinking else 0
        return Completion(
            content=content,
            thinking=thinking,
            prompt_tokens=int(reply.prompt_eval_count or 0),
            completion_tokens=eval_count - thinking_tokens,
            thinking_tokens=thinking_tokens,
            latency_s=latency,
            load_s=_seconds(reply.load_duration),
            prompt_eval_s=_seconds(reply.prompt_eval_duration),
            eval_s=_seconds(reply.eval_duration),
            finish_reason=reply.done_reason,
            model=reply.model or self.settings.model,
        )

    def _blind(self, detail: str) -> VisionUnsupported:
        return VisionUnsupported(
            f"model {self.settings.model} on {self.shown_host} cannot see images ({detail}); "
            "give the vision profile a vision model (e.g. `ollama pull qwen2.5vl:7b`)")

    def vision_check(self) -> CheckResult:
        capabilities = self.show()["capabilities"]
        if "vision" not in capabilities:
            raise self._blind(f"capabilities: {', '.join(capabilities) or 'none'}")
        return CheckResult("vision", CheckStatus.OK,
                           f"{self.settings.model} lists vision in its capabilities")

    def describe(self, prompt: str, image: Image) -> Completion:
        import ollama

        # /api/show first: a text-only model would otherwise fail only after loading it.
        self.vision_check()
        think = self._think()
        started = time.perf_counter()
        try:
            # `images` holds plain base64 (no data: prefix); the client encodes bytes so.
            reply = self.client.chat(
                model=self.settings.model,
                messages=[{"role": "user", "content": prompt, "images": [image.data]}],
                options=self.options(), think=think,
                keep_alive=_keep_alive(self.settings.keep_alive), stream=False)
        except ollama.ResponseError as exc:
            if "image input" in str(exc.error) or "does not support vision" in str(exc.error):
                raise self._blind(str(exc.error)) from None
            raise self._translate(exc) from None
        except Exception as exc:
            import httpx

            if isinstance(exc, ConnectionError | httpx.HTTPError | UNREADABLE):
                raise self._translate(exc) from None
            raise
        latency = time.perf_counter() - started
        try:
            return self._completion(reply, latency)
        except UNREADABLE as exc:
            raise _malformed(f"Ollama at {self.shown_host}", exc) from None

    def _version(self) -> str:
        response = self._call(self.http.get, "/api/version")
        if response.status_code != 200:
            raise ServerFailure(f"Ollama at {self.shown_host} answered /api/version with "
                                f"{response.status_code}; check that --base-url points at Ollama")
        try:
            return str(response.json()["version"])
        except UNREADABLE as exc:
            raise _malformed(f"the server at {self.shown_host} (/api/version)", exc) from None

    def check(self) -> list[CheckResult]:
        results = [CheckResult("server", CheckStatus.OK,
                               f"Ollama {self._version()} at {self.shown_host}")]
        info = self.show()
        results.append(CheckResult("model", CheckStatus.OK, f"{self.settings.model} is available"))
        think = self._think()
        results.append(CheckResult(
            "thinking", CheckStatus.OK,
            f"thinking_mode {self.settings.thinking_mode} -> think={think!r} "
            f"(capabilities: {', '.join(info['capabilities']) or 'none'})",
        ))
        return results

    def context_check(self) -> CheckResult:
        window = self.settings.context_window
        trained = self.context_length()
        if trained is None:
            return CheckResult("context", CheckStatus.WARN,
                               "the model does not report its context length")
        if window > trained:
            return CheckResult("context", CheckStatus.WARN,
                               f"context_window {window} exceeds the model's trained context "
                               f"{trained}; Ollama will use {trained} and truncate longer "
                               f"prompts: set --context-window {trained}")
        return CheckResult("context", CheckStatus.OK,
                           f"num_ctx {window} is sent on every request (model trained on "
                           f"{trained}; Ollama's own default can be as low as 4096)")

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
        try:
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
        except UNREADABLE as exc:
            raise _malformed(f"Ollama at {self.shown_host} (/api/ps)", exc) from None

    def models(self) -> list[ModelEntry]:
        reply = self._call(self.client.list)
        try:
            return [
                ModelEntry(
                    name=m.model or "?",
                    size_bytes=int(m.size) if m.size is not None else None,
                    details=m.details.model_dump(exclude_none=True) if m.details else {},
                )
                for m in reply.models
            ]
        except UNREADABLE as exc:
            raise _malformed(f"Ollama at {self.shown_host} (/api/tags)", exc) from None

    def close(self) -> None:
        self.http.close()
        self.client.close()


def _seconds(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds * NS


def _malformed(source: str, exc: BaseException) -> MalformedReply:
    return MalformedReply(f"{source} sent a reply kg cannot read ({unreadable_detail(exc)}); "
                          "check that --base-url points at Ollama and that it is up to date")


def _factory(settings: ProviderSettings, _models_dir: Path | None) -> OllamaProvider:
    return OllamaProvider(settings)


SPEC = register(ProviderSpec(
    name="ollama",
    factory=_factory,
    summary="Ollama server (/api/chat through the official client)",
    defaults={"base_url": None, "context_window": 8192, "max_output_tokens": 2048,
              "max_parallel": 2, "keep_alive": "10m", "timeout_s": 300.0},
    settings=frozenset({"gpu_layers", "num_threads", "keep_alive"}),  # num_gpu, num_thread
    needs_base_url=False,
    base_url_fallback=f"$OLLAMA_HOST, else {DEFAULT_HOST}",
    structured_output="`format`: JSON Schema",
    thinking=Thinking.OLLAMA_THINK,
    reload=Reload.SERVER,
    reload_note="",
    images=True,  # `images` (base64) on a message; /api/show says whether the model sees
))
