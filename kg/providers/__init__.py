"""LLM backends behind one Protocol; `build_provider` picks one by the profile's provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kg.errors import UsageError
from kg.providers.base import Provider, ProviderSettings


def _ollama(settings: ProviderSettings, _models_dir: Path | None) -> Provider:
    from kg.providers.ollama import OllamaProvider

    return OllamaProvider(settings)


def _openai(settings: ProviderSettings, _models_dir: Path | None) -> Provider:
    from kg.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(settings)


def _llamacpp(settings: ProviderSettings, models_dir: Path | None) -> Provider:
    from kg.providers.llamacpp import LlamaCppProvider

    return LlamaCppProvider(settings, models_dir)


# A new backend is one module plus one line here.
REGISTRY: dict[str, Callable[[ProviderSettings, Path | None], Provider]] = {
    "ollama": _ollama,
    "vllm": _openai,
    "openai": _openai,
    "llamacpp": _llamacpp,
}


def build_provider(settings: ProviderSettings, models_dir: Path | None = None) -> Provider:
    """A ready provider for the settings of one profile revision."""
    try:
        factory = REGISTRY[settings.provider]
    except KeyError:
        raise UsageError(
            f"unknown provider {settings.provider!r}; use one of {', '.join(REGISTRY)}"
        ) from None
    return factory(settings, models_dir)


__all__ = ["REGISTRY", "Provider", "ProviderSettings", "build_provider"]
