"""Hybrid fallback: a chunk the primary profile cannot serve goes to its `fallback_profile`.

Which failures count is the primary's `fallback_on` (any of unreachable, timeout, invalid,
error). One level only: a fallback's own fallback is not followed, so a chain cannot loop.
The primary's requests stay `calls` rows; the fallback's calls carry `fallback = true` and
the profile that served them, which is what analytics count.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kg.db import Database
from kg.errors import KgError, ProviderError, ProviderTimeout, ProviderUnavailable
from kg.extraction.breaker import CircuitOpen
from kg.extraction.extract import CallStatus, ChunkOutcome
from kg.extraction.extractor import Extractor, build
from kg.profiles.settings import ProviderSettings

log = logging.getLogger(__name__)


class FellBack(ProviderError):
    """Marks the primary's outcome of a chunk that went to the fallback: only its calls are
    stored (the commit thread treats it like a stopped chunk: calls kept, chunk pending)."""


def failure_kind(outcome: ChunkOutcome) -> str | None:
    """unreachable | timeout | invalid | error for a chunk the primary did not serve."""
    if outcome.ok:
        return None
    last = outcome.attempts[-1] if outcome.attempts else None
    if isinstance(outcome.fatal, ProviderUnavailable):
        return "unreachable"
    if last is not None and last.error_kind == ProviderTimeout.__name__:
        return "timeout"
    if outcome.fatal is None and last is not None and last.status == CallStatus.INVALID:
        return "invalid"
    return "error"


def wanted(settings: ProviderSettings, kind: str | None) -> bool:
    """Whether this failure of the primary sends the chunk to its fallback."""
    return (kind is not None and bool(settings.fallback_profile)
            and kind in settings.fallback_on.split(","))


def covers_open_circuit(settings: ProviderSettings) -> bool:
    """Whether chunks go straight to the fallback while the primary's circuit is open."""
    return bool(settings.fallback_profile) and bool(
        {"unreachable", "timeout", "error"} & set(settings.fallback_on.split(",")))


def is_open_circuit(outcome: ChunkOutcome) -> bool:
    return isinstance(outcome.fatal, CircuitOpen)


class Fallbacks:
    """The fallback extractors of one run, built (and checked) on first need."""

    def __init__(self, db: Database, models_dir: Path | None) -> None:
        self.db = db
        self.models_dir = models_dir
        self._built: dict[str, Extractor | None] = {}

    def for_primary(self, primary: ProviderSettings) -> Extractor | None:
        """The primary's fallback extractor; None when it has none or it cannot serve."""
        name = primary.fallback_profile
        if not name or name == primary.profile_name:
            return None
        if name not in self._built:
            try:
                with self.db.session() as session:
                    self._built[name] = build(session, name, self.models_dir)
                log.info("fallback profile %s ready for %s", name, primary.profile_name)
            except KgError as exc:  # its server is down too, or the profile is gone
                log.warning("fallback profile %s cannot serve: %s", name, exc)
                self._built[name] = None
        return self._built[name]

    def close(self) -> None:
        for extractor in self._built.values():
            if extractor is not None:
                extractor.close()
        self._built.clear()
