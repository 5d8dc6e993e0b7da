"""LLM backends behind one Protocol, found through the registry by the profile's provider name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kg.providers.base import Provider
from kg.providers.registry import ProviderSpec, Reload, Thinking, register, spec

if TYPE_CHECKING:
    from kg.profiles.settings import ProviderSettings


def build_provider(settings: ProviderSettings, models_dir: Path | None = None) -> Provider:
    """A ready provider for the settings of one profile revision (a pool over several
    endpoints when base_url lists more than one)."""
    from kg.providers.pool import EndpointPool, split_urls

    factory = spec(settings.provider).factory
    if len(split_urls(settings.base_url)) > 1:
        return EndpointPool(settings, lambda one: factory(one, models_dir))
    return factory(settings, models_dir)


__all__ = ["Provider", "ProviderSpec", "Reload", "Thinking", "build_provider", "register", "spec"]
