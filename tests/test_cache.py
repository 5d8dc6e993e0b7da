"""Call cache: identical requests answered before are answered from the table, not the server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kg.extraction.cache import request_key
from kg.profiles.settings import DECLARED, FIELDS, ProviderSettings
from tests.fakes import FakeOllama
from tests.test_ingest import ollama, paragraphs, rows, small_chunks, use_server, write
from tests.test_providers import settings

__all__ = ["ollama"]  # the fixture

SCHEMA = {"type": "object"}
MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "Text:\nx"}]


def test_the_key_covers_model_options_schema_and_messages() -> None:
    base = request_key(settings(), MESSAGES, SCHEMA)
    assert base == request_key(settings(), [dict(m) for m in MESSAGES], dict(SCHEMA))
    assert base != request_key(settings(temperature=0.5), MESSAGES, SCHEMA)
    assert base != request_key(settings(model="llama3.2:3b"), MESSAGES, SCHEMA)
    assert base != request_key(settings(), MESSAGES, {"type": "object", "required": []})
    assert base != request_key(settings(), [MESSAGES[0], {"role": "user", "content": "y"}],
                               SCHEMA)


# Values the declaration alone cannot invent (formats checked by validators, names).
SPECIAL = {"provider": "vllm", "base_url": "http://other:8000/v1", "api_key_env": "OTHER_API_KEY",
           "keep_alive": "5m", "fallback_on": "timeout", "fallback_profile": "other"}


def changed(base: ProviderSettings, name: str) -> ProviderSettings:
    """`base` with one setting moved to another valid value, found from its declaration."""
    value = getattr(base, name)
    info = type(base).model_fields[name]
    candidates: list[Any] = [SPECIAL[name]] if name in SPECIAL else []
    if isinstance(value, bool) or value is None:
        candidates += ["other", 1]
    elif isinstance(value, int | float):
        candidates += [value + 1, value / 2, value - 1, 1]
    elif isinstance(value, str):
        choices = getattr(info.annotation, "__members__", {})
        candidates += [str(c) for c in choices.values() if c != value] + [value + "-other"]
    for candidate in candidates:
        try:
            return type(base).model_validate({**base.model_dump(), name: candidate})
        except ValueError:
            continue
    raise AssertionError(f"no other valid value found for {name}; add one to SPECIAL")


@pytest.mark.parametrize("name", FIELDS)
def test_the_key_changes_with_each_setting_that_changes_output_and_no_other(name: str) -> None:
    """A new setting declared to change output is in the key, without editing the cache."""
    base = settings()
    other = changed(base, name)
    assert getattr(other, name) != getattr(base, name)
    moved = request_key(other, MESSAGES, SCHEMA) != request_key(base, MESSAGES, SCHEMA)
    assert moved == DECLARED[name].changes_output, name


def ingest(kg, path, *extra: str) -> dict:
    result = kg("ingest", str(path), *small_chunks(), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_repeated_chunks_cost_no_request(kg, db, ollama: FakeOllama, tmp_path) -> None:
    use_server(kg, ollama.url)
    text = paragraphs(5)
    first = ingest(kg, write(tmp_path, "a.txt", text))
    sent = len(ollama.chat_bodies())
    assert sent == first["calls"] == first["chunks_total"]
    # The same paragraphs in another file (not the same bytes, which would reuse the first
    # file's facts outright, see test_versions.py): every chunk is answered by the cache.
    copy = ingest(kg, write(tmp_path, "copy.txt", text + "\n"))
    assert copy["status"] == "completed" and copy["chunks_failed"] == 0
    assert len(ollama.chat_bodies()) == sent  # not one request
    cached = rows(db, "SELECT endpoint, latency_ms, prompt_tokens, status FROM calls "
                      "WHERE cached = :t", t=True)
    assert len(cached) == copy["chunks_total"]
    assert {c for c in cached} == {("cache", 0.0, 0, "ok")}
    assert rows(db, "SELECT count(*) FROM evidence e JOIN chunks c ON c.id = e.chunk_id "
                    "JOIN documents d ON d.id = c.document_id WHERE d.path LIKE :p",
                p="%copy.txt")[0][0] > 0  # the graph got its evidence all the same
    # The dry run knows: all of a third copy would come from the cache.
    found = json.loads(kg("ingest", "--dry-run", str(write(tmp_path, "third.txt", text)),
                          *small_chunks(), "--json").stdout)
    assert found["cache_hits"] == found["chunks"] and found["calls"] == 0
    # Analytics: the hit rate.
    by_profile = json.loads(kg("admin", "extraction", "analytics", "--by", "profile",
                               "--json").stdout)
    assert by_profile[0]["cache_hit_rate"] == 0.5


def test_no_cache_and_force_ask_the_model_again(kg, db, ollama: FakeOllama, tmp_path) -> None:
    use_server(kg, ollama.url)
    text = paragraphs(3)
    path = write(tmp_path, "a.txt", text)
    first = ingest(kg, path)
    sent = len(ollama.chat_bodies())
    ingest(kg, write(tmp_path, "b.txt", text + "\n"), "--no-cache")
    assert len(ollama.chat_bodies()) == 2 * sent
    forced = ingest(kg, path, "--force")  # re-extract: the model is asked, not the cache
    assert len(ollama.chat_bodies()) == 3 * sent
    assert forced["calls"] == first["calls"]
    assert rows(db, "SELECT count(*) FROM calls WHERE cached = :t", t=True) == [(0,)]
