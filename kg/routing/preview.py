"""`kg admin routing test`: the chunks of some files, their features and the profile each gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from kg.extraction import loaders, plan
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.profiles import storage
from kg.routing.rules import choose, features, rules


def preview(session: Session, paths: list[Path], recursive: bool = False,
            profile: str | None = None,
            chunking: ChunkingOptions | None = None) -> list[dict[str, Any]]:
    """One row per chunk: path, ordinal, features, matching rule and profile."""
    table = rules(session)
    default = storage.get_profile(session, profile).name
    rows: list[dict[str, Any]] = []
    for path in plan.discover(paths, recursive):
        loaded = loaders.load(path)
        if isinstance(loaded, loaders.Skipped):
            rows.append({"path": str(path), "chunk": None, "rule": None,
                         "profile": f"skipped: {loaded.reason}"})
            continue
        for chunk in chunk_text(loaded.text, chunking or ChunkingOptions(), loaded.boundaries):
            found = features(chunk.text, str(path.resolve()), loaded.kind)
            rule = choose(table, found)
            rows.append({"path": str(path), "chunk": chunk.ordinal, **found.as_dict(),
                         "rule": rule.id if rule else None,
                         "profile": rule.profile if rule else default})
    return rows
