"""kg search: full-text hits over concepts, evidence and chunks on SQLite FTS5 and PostgreSQL
tsvector, kept current by the database through ingest, curation and document deletion, and
inside the command's collection."""

from __future__ import annotations

import json
from pathlib import Path

from kg.db import Database
from kg.db import migrate as kg_migrate
from tests.graph_seed import SMALL_CHUNKS, STORY, ingest_story


def _search(kg, *args: str) -> dict:
    result = kg("search", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _titles(data: dict, kind: str) -> list[str]:
    return [h["title"] for h in data["hits"] if h["kind"] == kind]


def test_search_finds_concepts_quotes_and_chunks_with_snippets(kg, seeded: Path) -> None:
    data = _search(kg, "Moriarty")
    assert data["mode"] == "all"
    assert "Professor Moriarty" in _titles(data, "concept")
    chunks = [h for h in data["hits"] if h["kind"] == "chunk"]
    assert chunks and all(h["document"] == str(seeded) for h in chunks)
    assert all("[Moriarty]" in h["snippet"] for h in chunks)
    quotes = [h for h in data["hits"] if h["kind"] == "evidence"]
    assert quotes and quotes[0]["char_end"] > quotes[0]["char_start"]
    # Stemmed: "serves" is found by "serving".
    assert _search(kg, "serving", "--kind", "chunk")["hits"]


def test_search_falls_back_to_any_word_and_says_nothing_matches(kg, seeded: Path) -> None:
    data = _search(kg, "Moriarty zebra")
    assert data["mode"] == "any" and data["hits"]
    table = kg("search", "zebra unicorn")
    assert table.exit_code == 0 and "nothing matches" in table.stdout
    assert kg("search", "Holmes").stdout.count("Holmes") >= 2  # a rich table


def test_search_treats_operators_and_punctuation_as_words(kg, seeded: Path) -> None:
    for hostile in ('"Holmes', "Holmes OR NOT", "text:Holmes*", "Holmes & | ! ('", "NEAR(a b)"):
        result = kg("search", hostile, "--json")
        assert result.exit_code == 0, (hostile, result.stderr)


def test_search_bad_input_is_one_line(kg, seeded: Path) -> None:
    for bad in ("", "   ", "x" * 1001):
        result = kg("search", bad)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1


def test_search_follows_curation_and_document_deletion(kg, seeded: Path) -> None:
    assert kg("concepts", "rename", "Colonel Moran", "Sebastian Moran").exit_code == 0
    concepts = _titles(_search(kg, "Sebastian", "--kind", "concept"), "concept")
    assert concepts == ["Sebastian Moran"]
    assert kg("concepts", "merge", "Doctor Watson", "Mrs Hudson",
              "--into", "Doctor Watson").exit_code == 0
    assert "Mrs Hudson" not in _titles(_search(kg, "Hudson", "--kind", "concept"), "concept")
    assert kg("concepts", "delete", "Inspector Lestrade").exit_code == 0
    assert not _search(kg, "Lestrade", "--kind", "concept")["hits"]
    assert kg("documents", "delete", str(seeded), "--yes").exit_code == 0
    assert not _search(kg, "Moriarty")["hits"]


def test_search_sees_new_ingests_and_stays_in_its_collection(kg, seeded: Path,
                                                             tmp_path: Path) -> None:
    assert kg("collections", "create", "other").exit_code == 0
    ingest_story(kg, tmp_path, "-o", "other", name="other.md",
                 content="Irene Adler sings at the opera in Warsaw.\n")
    assert not _search(kg, "Irene")["hits"]
    found = _search(kg, "Irene", "--collection", "other")
    assert "Irene Adler" in _titles(found, "concept")
    assert not _search(kg, "Moriarty", "--collection", "other")["hits"]


def test_migration_backfills_and_downgrades(kg, seeded: Path, db_url: str) -> None:
    db = Database(db_url)
    kg_migrate.downgrade(db, "0017")
    kg_migrate.upgrade(db)
    db.dispose()
    assert "Professor Moriarty" in _titles(_search(kg, "Moriarty"), "concept")


def test_search_and_retrieval_see_only_the_live_version(kg, seeded: Path) -> None:
    # A new version without the "Enemies" section: its concepts and quotes are retracted
    # (kept as history), and neither search nor retrieval may offer them.
    seeded.write_text(STORY.split("# Enemies")[0], encoding="utf-8")
    assert kg("ingest", str(seeded), *SMALL_CHUNKS).exit_code == 0
    assert not _search(kg, "Moriarty")["hits"]
    assert "Sherlock Holmes" in _titles(_search(kg, "Holmes", "--kind", "concept"), "concept")
    asked = json.loads(kg("ask", "Who is Moriarty?", "--no-llm", "--json").stdout)
    assert not asked["retrieval"]["evidence"]
