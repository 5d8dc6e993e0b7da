"""Operating the models: preflight a profile, reload (switch) models, list what backends have."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from kg import config
from kg.db.models import Call
from kg.errors import ModelNotFound, ProviderError, ThinkingUnsupported
from kg.extraction.schema import Bounds, item_models, output_schema
from kg.providers import build_provider
from kg.providers.base import CheckResult, Provider, ProviderSettings
from kg.providers.ollama import OllamaProvider
from kg.providers.openai_compat import OpenAICompatProvider

T = TypeVar("T")
PROBE_TEXT = "Marie Curie discovered polonium in Paris."
PROBE_BOUNDS = Bounds(max_concepts=2, max_relationships=1)
PROBE_MESSAGES = [
    {"role": "system", "content": "Extract concepts and relationships from the text as JSON. "
                                  "Quotes are copied from the text."},
    {"role": "user", "content": f"Text:\n{PROBE_TEXT}"},
]


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def _probe(provider: Provider) -> tuple[Check, Check]:
    """One tiny schema-constrained request: is the schema honoured, how fast does it decode?"""
    completion = provider.complete(PROBE_MESSAGES, output_schema(PROBE_BOUNDS))
    try:
        data = json.loads(completion.content, strict=False)
        for rel in data.get("relationships", []) if isinstance(data, dict) else []:
            if isinstance(rel, dict) and isinstance(rel.get("confidence"), int | float):
                rel["confidence"] = min(max(rel["confidence"], 0), 1)
        item_models(PROBE_BOUNDS)[2].model_validate(data)
        schema = Check("schema", "ok", f"reply matches the JSON Schema "
                                       f"({completion.completion_tokens} tokens, finish "
                                       f"{completion.finish_reason})")
    except ValueError as exc:
        detail = str(exc).splitlines()[0][:160]
        schema = Check("schema", "fail", f"reply does not match the JSON Schema: {detail}; the "
                                         "server may ignore structured output")
    tps = completion.decode_tokens_per_s
    speed = Check("speed", "ok" if tps else "warn",
                  f"decode {tps:.1f} tokens/s, {completion.latency_s * 1000:.0f} ms for the probe"
                  if tps else "the server reported no token timings")
    return schema, speed


def _context_check(provider: Provider, settings: ProviderSettings) -> Check | None:
    if isinstance(provider, OllamaProvider):
        trained = provider.context_length()
        if trained is None:
            return Check("context", "warn", "the model does not report its context length")
        if settings.context_window > trained:
            return Check("context", "warn",
                         f"context_window {settings.context_window} exceeds the model's trained "
                         f"context {trained}; Ollama will use {trained} and truncate longer "
                         f"prompts: set --context-window {trained}")
        return Check("context", "ok", f"num_ctx {settings.context_window} is sent on every "
                                      f"request (model trained on {trained}; Ollama's own "
                                      "default can be as low as 4096)")
    if isinstance(provider, OpenAICompatProvider):
        served = {m.name: m for m in provider.models()}
        entry = served.get(settings.model)
        limit = entry.details.get("max_model_len") if entry else None
        if limit and settings.context_window > limit:
            return Check("context", "warn",
                         f"context_window {settings.context_window} exceeds the server's "
                         f"max_model_len {limit}; set --context-window {limit}")
        return Check("context", "ok", f"server max_model_len {limit or 'unknown'}, "
                                      f"context_window {settings.context_window}")
    return Check("context", "ok", f"n_ctx {settings.context_window} (the model is loaded with it)")


def preflight(session: Session, name: str | None, models_dir: Path | None) -> list[Check]:
    """Every check a long run depends on, one line each; stops at the first fatal failure."""
    profile = config.get_profile(session, name)
    settings = config.provider_settings(profile)
    checks: list[Check] = []
    provider = build_provider(settings, models_dir)
    try:
        try:
            results: list[CheckResult] = provider.check()
        except ProviderError as exc:
            checks.append(Check(_failed_step(exc), "fail", exc.message))
            return checks
        checks += [Check(r.name, "ok" if r.ok else "fail", r.detail) for r in results]
        context = _context_check(provider, settings)
        if context:
            checks.append(context)
        try:
            checks += _probe(provider)
        except ProviderError as exc:
            checks.append(Check("schema", "fail", exc.message))
    finally:
        provider.close()
    return checks


def _failed_step(exc: ProviderError) -> str:
    if isinstance(exc, ModelNotFound):
        return "model"
    if isinstance(exc, ThinkingUnsupported):
        return "thinking"
    return "server"


@dataclass
class ReloadResult:
    provider: str
    model: str
    unloaded: str | None
    load_s: float
    probe_s: float
    note: str

    @property
    def total_s(self) -> float:
        return self.load_s + self.probe_s


def previous_model(session: Session, provider: str, model: str) -> str | None:
    """The model this provider served last, if it is not the one now configured."""
    last = session.scalar(select(Call.model).where(Call.provider == provider)
                          .order_by(Call.id.desc()).limit(1))
    return last if last and last != model else None


def reload(session: Session, models_dir: Path | None) -> ReloadResult:
    """Unload the previous model where the backend allows, preload the active one, probe it."""
    profile = config.get_active(session)
    settings = config.provider_settings(profile)
    provider = build_provider(settings, models_dir)
    try:
        unloaded = None
        note = ""
        if isinstance(provider, OllamaProvider):
            old = previous_model(session, "ollama", settings.model)
            if old:
                previous = build_provider(_with_model(settings, old), models_dir)
                try:
                    previous.unload()
                    unloaded = old
                except ProviderError as exc:
                    note = f"could not unload {old}: {exc.message}; "
                finally:
                    previous.close()
        elif isinstance(provider, OpenAICompatProvider):
            note = ("a vLLM server serves the model it was started with: kg cannot switch it; "
                    "checked that the endpoint serves the configured model; ")
        else:
            note = ("the embedded model lives inside each kg process: a running ingestion "
                    "loads the new file before its next chunk; loaded here to check it; ")
        provider.check()
        started = time.perf_counter()
        provider.load()
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        provider.complete(PROBE_MESSAGES, output_schema(PROBE_BOUNDS))
        probe_s = time.perf_counter() - started
    finally:
        provider.close()
    return ReloadResult(settings.provider, settings.model, unloaded, load_s, probe_s,
                        note.rstrip("; "))


def _with_model(settings: ProviderSettings, model: str) -> ProviderSettings:
    return replace(settings, model=model)


def _ask_active(session: Session, models_dir: Path, ask: Callable[[Provider], T]
                ) -> tuple[ProviderSettings, T]:
    """Build the active profile's provider, ask it one thing, close it."""
    settings = config.provider_settings(config.get_active(session))
    provider = build_provider(settings, models_dir)
    try:
        return settings, ask(provider)
    finally:
        provider.close()


def _gb(size: int | None) -> float | None:
    return round(size / 1e9, 2) if size else None


def models_list(session: Session, models_dir: Path) -> list[dict[str, Any]]:
    """What the active profile's backend can serve."""
    settings, entries = _ask_active(session, models_dir, lambda p: p.models())
    return [{"name": e.name, "size_gb": _gb(e.size_bytes), "active": e.name == settings.model,
             **_flat(e.details)} for e in entries]


def models_status(session: Session, models_dir: Path) -> list[dict[str, Any]]:
    """What the active profile's backend has loaded now."""
    _settings, loaded = _ask_active(session, models_dir, lambda p: p.status())
    return [{"name": m.name, "size_gb": _gb(m.size_bytes), "vram_gb": _gb(m.vram_bytes),
             "context_length": m.context_length, "expires_at": m.expires_at} for m in loaded]


def _flat(details: dict[str, Any]) -> dict[str, Any]:
    keep = ("parameter_size", "quantization_level", "family", "max_model_len", "path")
    return {k: details[k] for k in keep if k in details}
