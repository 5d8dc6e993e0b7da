"""Operating the models: preflight a profile, reload (switch) models, list what backends have.

Backends differ only through the registry's spec (how reload works) and provider methods
(check, context_check, load, unload): nothing here knows a concrete provider class.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db.models import Call
from kg.errors import ModelNotFound, ProviderError, ThinkingUnsupported
from kg.extraction.extractor import Extractor
from kg.extraction.extractor import build as build_extractor
from kg.extraction.schema import item_models
from kg.profiles import storage, views
from kg.profiles.settings import ProviderSettings
from kg.providers import Reload, build_provider, spec
from kg.providers.base import CheckResult, CheckStatus, Provider

T = TypeVar("T")
PROBE_TEXT = "Marie Curie discovered polonium in Paris."

# A preflight line; kept under its old name for callers of this module.
Check = CheckResult


def _probe(extractor: Extractor) -> tuple[CheckResult, CheckResult]:
    """The request ingest would send for a one-sentence chunk: is the schema honoured, how fast
    does the model decode?"""
    completion = extractor.request(PROBE_TEXT)
    try:
        data = json.loads(completion.content, strict=False)
        for rel in data.get("relationships", []) if isinstance(data, dict) else []:
            if isinstance(rel, dict) and isinstance(rel.get("confidence"), int | float):
                rel["confidence"] = min(max(rel["confidence"], 0), 1)
        item_models(extractor.bounds)[2].model_validate(data)
        schema = CheckResult("schema", CheckStatus.OK,
                             f"reply matches the JSON Schema ({completion.completion_tokens} "
                             f"tokens, finish {completion.finish_reason})")
    except ValueError as exc:
        detail = str(exc).splitlines()[0][:160]
        schema = CheckResult("schema", CheckStatus.FAIL,
                             f"reply does not match the JSON Schema: {detail}; the server may "
                             "ignore structured output")
    tps = completion.decode_tokens_per_s
    speed = CheckResult("speed", CheckStatus.OK if tps else CheckStatus.WARN,
                        f"decode {tps:.1f} tokens/s, {completion.latency_s * 1000:.0f} ms for "
                        "the probe" if tps else "the server reported no token timings")
    return schema, speed


def preflight(session: Session, name: str | None, models_dir: Path | None) -> list[CheckResult]:
    """Every check a long run depends on, one line each; stops at the first failure."""
    checks: list[CheckResult] = []
    extractor = build_extractor(session, name, models_dir, check=False)
    provider = extractor.provider
    try:
        try:
            checks += provider.check()
            checks.append(provider.context_check())
        except ProviderError as exc:
            checks.append(CheckResult(_failed_step(exc), CheckStatus.FAIL, exc.message))
            return checks
        try:
            checks += _probe(extractor)
        except ProviderError as exc:
            checks.append(CheckResult("schema", CheckStatus.FAIL, exc.message))
    finally:
        extractor.close()
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


def _unload_previous(session: Session, settings: ProviderSettings,
                     models_dir: Path | None) -> tuple[str | None, str]:
    """(the model unloaded, a note when that failed)."""
    old = previous_model(session, settings.provider, settings.model)
    if not old:
        return None, ""
    previous = build_provider(settings.with_model(old), models_dir)
    try:
        previous.unload()
        return old, ""
    except ProviderError as exc:
        return None, f"could not unload {old}: {exc.message}"
    finally:
        previous.close()


def reload(session: Session, models_dir: Path | None) -> ReloadResult:
    """Unload the previous model where the backend allows, preload the active one, probe it."""
    extractor = build_extractor(session, None, models_dir, check=False)
    settings, provider = extractor.settings, extractor.provider
    backend = spec(settings.provider)
    try:
        unloaded, note = None, backend.reload_note
        if backend.reload is Reload.SERVER:
            unloaded, note = _unload_previous(session, settings, models_dir)
        provider.check()
        started = time.perf_counter()
        provider.load()
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        extractor.request(PROBE_TEXT)
        probe_s = time.perf_counter() - started
    finally:
        extractor.close()
    return ReloadResult(settings.provider, settings.model, unloaded, load_s, probe_s, note)


def _ask_active(session: Session, models_dir: Path, ask: Callable[[Provider], T]
                ) -> tuple[ProviderSettings, T]:
    """Build the active profile's provider, ask it one thing, close it."""
    settings = views.provider_settings(storage.get_active(session))
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
