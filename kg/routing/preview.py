"""`kg admin routing test`: the chunks of some files, their features and the profile each gets.

Files are read by the reader a run of the profile would choose (kg.extraction.vision): OCR is
run; a vision model is not asked (nothing is sent), so the chunks of an image it would describe
are a placeholder as long as its past descriptions: their text features are not the real ones.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from kg.extraction import loaders, plan, vision
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
    reader = vision.RunReader(lambda: contextlib.nullcontext(session), profile, dry=True)
    for path in plan.discover(paths, recursive):
        loaded = reader.load(path)
        read_by = ({"reader": reader.choice.describe_reader()}
                   if reader.choice and isinstance(loaded, loaders.LoadedDocument)
                   and loaded.reads else {})
        if isinstance(loaded, loaders.Skipped):
            rows.append({"path": str(path), "chunk": None, "rule": None,
                         "profile": f"skipped: {loaded.reason}"})
            continue
        for chunk in chunk_text(loaded.text, chunking or ChunkingOptions(), loaded.boundaries):
            found = features(chunk.text, str(path.resolve()), loaded.kind)
            rule = choose(table, found)
            rows.append({"path": str(path), "chunk": chunk.ordinal, **found.as_dict(),
                         "rule": rule.id if rule else None,
                         "profile": rule.profile if rule else default, **read_by})
    return rows
