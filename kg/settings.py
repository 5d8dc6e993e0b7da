"""Process settings read from the environment: KG_HOME, KG_DATABASE_URL, KG_LOG_LEVEL, ...."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kg.log import parse_level

DATABASE_FILE = "kg.db"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; everything about the LLM lives in the database instead."""

    home: Path
    database_url: str
    log_level: str | None = None
    ollama_host: str | None = None  # OLLAMA_HOST, for Ollama profiles without a base URL
    profile: str | None = None  # KG_PROFILE: the profile one command uses instead of the active
    collection: str | None = None  # KG_COLLECTION: the collection commands work in (else default)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def default_database(self) -> Path:
        """The SQLite file kg owns (and migrates by itself): KG_HOME/kg.db."""
        return self.home / DATABASE_FILE


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read KG_HOME (default ~/.kg), KG_DATABASE_URL (default: SQLite file in KG_HOME),
    KG_LOG_LEVEL (a bad level is a UsageError), OLLAMA_HOST, KG_PROFILE and KG_COLLECTION."""
    env = os.environ if environ is None else environ
    home = Path(env.get("KG_HOME") or Path.home() / ".kg").expanduser()
    url = env.get("KG_DATABASE_URL") or f"sqlite:///{home / DATABASE_FILE}"
    raw_level = env.get("KG_LOG_LEVEL")
    level = parse_level(raw_level) if raw_level else None
    return Settings(home=home, database_url=url, log_level=level,
                    ollama_host=env.get("OLLAMA_HOST") or None,
                    profile=env.get("KG_PROFILE") or None,
                    collection=env.get("KG_COLLECTION") or None)
