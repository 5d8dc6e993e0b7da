"""Where kg keeps its data, read from the environment (KG_HOME, KG_DATABASE_URL)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; everything about the LLM lives in the database instead."""

    home: Path
    database_url: str

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read KG_HOME (default ~/.kg) and KG_DATABASE_URL (default: SQLite file in KG_HOME)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("KG_HOME") or Path.home() / ".kg").expanduser()
    url = env.get("KG_DATABASE_URL") or f"sqlite:///{home / 'kg.db'}"
    return Settings(home=home, database_url=url)
