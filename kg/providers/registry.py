"""One registry of providers: each backend module describes itself with a ProviderSpec.

Profiles, operations and the CLI read the registry instead of knowing backends by name, so a
new backend is one module that calls `register(...)` (built in: listed in BUILTIN; outside kg:
an entry point in the `kg.providers` group, or a `register` call before kg runs).
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.errors import UsageError
from kg.profiles.settings import PROVIDER_SPECIFIC_SETTINGS

if TYPE_CHECKING:
    from kg.profiles.settings import ProviderSettings
    from kg.providers.base import Provider

log = logging.getLogger(__name__)

BUILTIN = ("kg.providers.ollama", "kg.providers.openai_compat", "kg.providers.llamacpp")
# Listing order of the built-ins (messages and help read best in this order); others follow.
BUILTIN_NAMES = ("ollama", "vllm", "openai", "llamacpp")
ENTRY_POINT_GROUP = "kg.providers"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")  # the provider column is 16 characters


class Reload(StrEnum):
    """What `kg admin extraction reload` can do with a backend."""

    SERVER = "server"  # the server loads and unloads models on request (Ollama)
    SERVES_ONE_MODEL = "serves-one-model"  # the server keeps the model it started with (vLLM)
    IN_PROCESS = "in-process"  # the model lives inside each kg process (llama.cpp)


class Thinking(StrEnum):
    """How a backend is asked to think (or not)."""

    NONE = "none"  # the backend cannot think: thinking_mode must be off
    OLLAMA_THINK = "ollama-think"  # `think`: bool, or a level for gpt-oss
    TEMPLATE_KWARGS = "template-kwargs"  # chat_template_kwargs.enable_thinking + reasoning_effort
    REASONING_EFFORT = "reasoning-effort"  # OpenAI's reasoning_effort only


Factory = Callable[["ProviderSettings", Path | None], "Provider"]


@dataclass(frozen=True)
class ProviderSpec:
    """Everything kg needs to know about a backend without talking to it."""

    name: str
    factory: Factory
    summary: str
    # Settings a new profile of this provider starts from (others: the profile model's defaults).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # The provider-specific settings it puts on the wire (see Declared.provider_specific in
    # kg.profiles.settings); `kg admin extraction set` refuses the others for this provider.
    settings: frozenset[str] = frozenset()
    needs_base_url: bool = True
    # Where the requests go when the profile has no base URL (shown by `show`).
    base_url_fallback: str | None = None
    structured_output: str = "JSON Schema"
    thinking: Thinking = Thinking.NONE
    reload: Reload = Reload.IN_PROCESS
    uses_api_key: bool = False
    reload_note: str = ""
    # Whether its wire protocol can carry images (a vision profile must use such a provider;
    # whether the configured model can see is asked of the server by `vision_check`).
    images: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "summary": self.summary, "needs_base_url": self.needs_base_url,
            "base_url_fallback": self.base_url_fallback,
            "structured_output": self.structured_output, "thinking": self.thinking.value,
            "reload": self.reload.value, "uses_api_key": self.uses_api_key,
            "settings": sorted(self.settings), "defaults": dict(self.defaults),
            "images": self.images,
        }


_specs: dict[str, ProviderSpec] = {}
_lock = threading.RLock()
_loaded = False


def register(spec: ProviderSpec, *, replace: bool = False) -> ProviderSpec:
    """Add a backend; a name already taken is refused unless replace=True."""
    if not NAME.match(spec.name):
        raise UsageError(
            f"provider name {spec.name!r} is not allowed; use 1 to 16 lower-case letters, "
            "digits, '_' or '-', starting with a letter"
        )
    unknown = sorted(set(spec.settings) - set(PROVIDER_SPECIFIC_SETTINGS))
    if unknown:
        raise UsageError(
            f"provider {spec.name} lists {', '.join(unknown)} in its settings, but only "
            f"provider-specific settings belong there ({', '.join(PROVIDER_SPECIFIC_SETTINGS)})"
        )
    unused = sorted((set(spec.defaults) & set(PROVIDER_SPECIFIC_SETTINGS)) - set(spec.settings))
    if unused:
        raise UsageError(f"provider {spec.name} gives a default for {', '.join(unused)}, which "
                         "it does not use; add it to its settings or drop the default")
    with _lock:
        if spec.name in _specs and not replace and _specs[spec.name] is not spec:
            raise UsageError(f"provider {spec.name!r} is already registered")
        _specs[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a backend (tests, plug-ins being unloaded)."""
    with _lock:
        _specs.pop(name, None)


def _load() -> None:
    """Import the built-in modules (they register themselves) and entry-point plug-ins, once."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        for module in BUILTIN:
            importlib.import_module(module)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                target = entry.load()
            except Exception as exc:  # a broken plug-in must not break kg
                log.warning("provider plug-in %s could not be loaded: %s", entry.name, exc)
                continue
            if isinstance(target, ProviderSpec):
                try:
                    register(target, replace=True)
                except UsageError as exc:  # a badly declared plug-in must not break kg either
                    log.warning("provider plug-in %s was not registered: %s", entry.name, exc)


def names() -> list[str]:
    """Registered provider names, built-ins first."""
    return [s.name for s in specs()]


def specs() -> list[ProviderSpec]:
    """Registered specs: the built-ins in their usual order, then the others by name."""
    _load()
    with _lock:
        found = list(_specs.values())
    rank = {name: i for i, name in enumerate(BUILTIN_NAMES)}
    return sorted(found, key=lambda s: (rank.get(s.name, len(rank)), s.name))


def spec(name: str) -> ProviderSpec:
    """The spec of a registered provider, or a one-line UsageError listing the known ones."""
    _load()
    with _lock:
        found = _specs.get(name)
        if found is None:
            raise UsageError(f"provider must be one of {', '.join(_specs)} (got {name!r})")
        return found


def is_registered(name: str) -> bool:
    _load()
    with _lock:
        return name in _specs
