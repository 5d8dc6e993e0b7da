"""`kg ingest --dry-run`: no call, no write; calls exact and prompt tokens close to the run."""

from __future__ import annotations

import json

from tests.fakes import FakeOllama
from tests.test_ingest import ollama, paragraphs, rows, small_chunks, use_server, write

__all__ = ["ollama"]  # the fixture


def dry_run(kg, *args: str) -> dict:
    result = kg("ingest", "--dry-run", *args, *small_chunks(), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_dry_run_sends_nothing_and_writes_nothing(kg, db, ollama: FakeOllama, tmp_path) -> None:
    use_server(kg, ollama.url)
    path = write(tmp_path, "a.txt", paragraphs(6))
    found = dry_run(kg, str(path))
    assert ollama.chat_bodies() == []
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]
    assert rows(db, "SELECT count(*) FROM documents") == [(0,)]
    assert found["documents"] == 1 and found["chunks"] >= 4
    assert found["calls"] == found["chunks"]
    assert found["prompt_tokens"] > 280 * found["chunks"]  # the instructions alone are ~280
    assert found["seconds"] is None and "no earlier calls" in found["speed_source"]
    # After a real run the file is unchanged: a dry run says so (and --force counts it).
    assert kg("ingest", str(path), *small_chunks()).exit_code == 0
    again = dry_run(kg, str(path))
    assert again["documents"] == 0 and again["unchanged"] == [str(path)]
    assert dry_run(kg, str(path), "--force")["chunks"] == found["chunks"]


def test_estimate_matches_the_real_run(kg, db, ollama: FakeOllama, tmp_path) -> None:
    use_server(kg, ollama.url, "ollama", "qwen3:8b", "--max-parallel", "2")
    first = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(6))), *small_chunks(), "--json")
    assert first.exit_code == 0, first.stderr  # history: how this server counts, how fast
    path = write(tmp_path, "b.txt", paragraphs(9, words=80).replace("Agent", "Officer"))
    found = dry_run(kg, str(path))
    real = json.loads(kg("ingest", str(path), *small_chunks(), "--json").stdout)
    assert found["calls"] == real["calls"] == real["chunks_total"]
    assert abs(found["prompt_tokens"] - real["prompt_tokens"]) <= 0.10 * real["prompt_tokens"]
    assert "earlier calls" in found["prompt_source"]
    assert found["seconds"] is not None and found["completion_tokens"] > 0


def test_cost_against_a_priced_reference(kg, db, ollama: FakeOllama, tmp_path) -> None:
    use_server(kg, ollama.url)
    path = str(write(tmp_path, "a.txt", paragraphs(3)))
    missing = kg("ingest", "--dry-run", path, "--compare-to", "gpt-4o")
    assert missing.exit_code == 2 and "no price named 'gpt-4o'" in missing.stderr
    assert kg("admin", "prices", "set", "gpt-4o", "--prompt", "2.5", "--completion",
              "10").exit_code == 0
    found = dry_run(kg, path, "--compare-to", "gpt-4o")
    expected = round(found["prompt_tokens"] * 2.5 / 1e6 + found["completion_tokens"] * 10 / 1e6,
                     2)
    assert found["reference_cost"] == expected and found["cost"] == 0.0
    text = kg("ingest", "--dry-run", path, "--compare-to", "gpt-4o")
    assert text.exit_code == 0 and "cost at gpt-4o" in text.stdout
    assert kg("ingest", path, "--compare-to", "gpt-4o").exit_code == 2  # only with --dry-run
