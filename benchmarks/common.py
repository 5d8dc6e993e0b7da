"""Shared set-up for benchmarks: throwaway databases, profiles pointed at test servers, corpora."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kg.db import Database, migrate  # noqa: E402
from kg.profiles import storage  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "KG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CONSONANTS = "bcdfghjklmnprstvz"
VOWELS = "aeiou"
ROLES = ["Agent", "Director", "Professor", "Captain", "Doctor", "Senator", "Judge", "Pilot",
         "Engineer", "Baron"]


@contextmanager
def fake_server(kind: str = "ollama", delay: float = 0.0, slots: int = 64,
                capacity: int | None = None) -> Iterator[str]:
    """A protocol-exact test server in its own process (so it does not share our GIL)."""
    extra = ["--capacity", str(capacity)] if capacity is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", kind, "--delay", str(delay), "--slots", str(slots),
         *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def temp_database(dialect: str, revision: str = "head") -> Iterator[Database]:
    """An empty database migrated to `revision`, removed afterwards."""
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{tmp}/bench.db")
            migrate.upgrade(db, revision)
            yield db
            db.dispose()
        return
    name = f"kgbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    db = Database(f"{base}/{name}")
    try:
        migrate.upgrade(db, revision)
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def point_at(db: Database, url: str, provider: str = "ollama", model: str = "qwen3:8b",
             **fields: object) -> None:
    """Create and activate a profile that talks to a test server."""
    with db.session() as session:
        storage.set_profile(session, {"provider": provider, "model": model, "base_url": url,
                                      "max_retries": 0, **fields},
                            name="bench", activate=True, by="benchmark")


def tag(i: int) -> str:
    """A capitalised pseudo-word unique to i, unlike its neighbours (no accidental fuzzy merges)."""
    rng = random.Random(i)
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(4)).capitalize()


def corpus_text(chunks: int, words_per_chunk: int = 110) -> str:
    """One paragraph per chunk, each naming ten distinct people (-> ten concepts)."""
    filler = " ".join(["the", "meeting", "went", "on", "for", "hours"] * (words_per_chunk // 6))
    paragraphs = []
    for i in range(chunks):
        names = ", ".join(f"{role} {tag(i)}" for role in ROLES)
        paragraphs.append(f"{names} met in the hall. {filler}.")
    return "\n\n".join(paragraphs) + "\n"
