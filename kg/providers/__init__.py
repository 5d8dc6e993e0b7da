"""LLM backends behind one Protocol, found through the registry by the profile's provider name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kg.providers.base import Provider
from kg.providers.registry import ProviderSpec, Reload, Thinking, register, spec

if TYPE_CHECKING:
    from kg.profiles import ProviderSettings


def build_provider(settings: ProviderSettings, models_dir: Path | None = None) -> Provider:
    """A ready provider for the settings of one profile revision."""
    return spec(settings.provider).factory(settings, models_dir)


__all__ = ["Provider", "ProviderSpec", "Reload", "Thinking", "build_provider", "register", "spec"]
