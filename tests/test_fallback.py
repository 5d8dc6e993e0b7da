"""Hybrid fallback: chunks the primary profile cannot serve go to its fallback profile."""

from __future__ import annotations

import json

import pytest

from tests.fakes import FakeModel, FakeOllama, FakeVLLM, Reply, chunk_of, graph_reply
from tests.test_ingest import paragraphs, rows, small_chunks, write
from tests.test_providers import free_port


@pytest.fixture
def local():
    """The fallback: an Ollama that answers every chunk well."""
    with FakeOllama(models=[FakeModel("qwen3:8b", ["completion"])],
                    responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        yield server


def profile(kg, name: str, *args: str) -> None:
    result = kg("admin", "extraction", "set", "--profile", name, "--max-retries", "1",
                "--timeout", "5", *args)
    assert result.exit_code == 0, result.stderr


def with_fallback(kg, primary_url: str, local: FakeOllama, *args: str,
                  provider: str = "vllm", model: str = "Qwen/Qwen3-8B") -> None:
    profile(kg, "cloud", "--provider", "ollama", "--model", "qwen3:8b", "--base-url", local.url)
    profile(kg, "gpu", "--provider", provider, "--model", model, "--base-url", primary_url,
            "--fallback-profile", "cloud", "--activate", *args)


def test_primary_down_every_chunk_is_served_by_the_fallback(kg, db, local, tmp_path) -> None:
    with_fallback(kg, f"http://127.0.0.1:{free_port()}/v1", local, "--max-parallel", "1")
    result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(5))), *small_chunks(), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["chunks_failed"] == 0
    chunks = summary["chunks_total"]
    assert chunks >= 4
    served = [(name, bool(fell), status, n) for name, fell, status, n in rows(
        db, "SELECT profile_name, fallback, status, count(*) FROM calls "
            "GROUP BY profile_name, fallback, status ORDER BY profile_name")]
    # The first chunk found the primary down (one refused request, kept as a call); every
    # chunk was then served by the fallback in one call, and none went to the primary again.
    assert served == [("cloud", True, "ok", chunks), ("gpu", False, "error", 1)]
    assert len(local.chat_bodies()) == chunks
    endpoints = rows(db, "SELECT DISTINCT endpoint FROM calls WHERE fallback = :t", t=True)
    assert endpoints == [(local.url,)]
    # Analytics: the fallback rate and its cost, per profile and per endpoint.
    assert kg("admin", "prices", "set", "qwen3:8b", "--prompt", "1", "--completion",
              "2").exit_code == 0
    by_profile = {r["profile"]: r for r in json.loads(kg(
        "admin", "extraction", "analytics", "--by", "profile", "--json").stdout)}
    assert by_profile["cloud"]["fallback_rate"] == 1.0
    assert by_profile["cloud"]["fallback_calls"] == chunks
    assert by_profile["cloud"]["fallback_cost"] == by_profile["cloud"]["cost"]
    assert by_profile["gpu"]["fallback_calls"] == 0
    by_endpoint = {r["endpoint"]: r["calls"] for r in json.loads(kg(
        "admin", "extraction", "analytics", "--by", "endpoint", "--json").stdout)}
    assert by_endpoint[local.url] == chunks and sum(by_endpoint.values()) == chunks + 1


def test_server_errors_after_retries_go_to_the_fallback(kg, db, local, tmp_path) -> None:
    with FakeVLLM(responder=lambda b: Reply(status=500, error="engine died")) as gpu:
        with_fallback(kg, gpu.base_url, local)
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(3))), *small_chunks(),
                    "--retry-backoff", "0", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed"
    assert rows(db, "SELECT count(*) FROM calls WHERE fallback = :t AND status = 'ok'",
                t=True) == [(summary["chunks_total"],)]
    assert rows(db, "SELECT count(*) FROM calls WHERE profile_name = 'gpu'")[0][0] >= 2


def test_invalid_replies_fall_back_only_when_asked(kg, db, local, tmp_path) -> None:
    with FakeVLLM(responder=lambda b: Reply("not json at all")) as gpu:
        with_fallback(kg, gpu.base_url, local)  # default: unreachable, timeout, error
        first = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(2))), *small_chunks(),
                   "--json")
        assert json.loads(first.stdout)["chunks_failed"] >= 1
        assert local.chat_bodies() == []
        profile(kg, "gpu", "--fallback-on", "invalid,error")
        second = kg("ingest", str(write(tmp_path, "b.txt", paragraphs(2))), *small_chunks(),
                    "--json")
    summary = json.loads(second.stdout)
    assert summary["status"] == "completed" and summary["chunks_failed"] == 0
    assert len(local.chat_bodies()) == summary["chunks_total"]


def test_fallback_settings_are_checked(kg, db) -> None:
    bad = kg("admin", "extraction", "set", "--fallback-on", "sometimes")
    assert bad.exit_code == 2
    assert "fallback_on must be one or more of unreachable, timeout, invalid, error" in bad.stderr
    good = kg("admin", "extraction", "set", "--fallback-on", "error, timeout", "--json")
    assert good.exit_code == 0, good.stderr
    assert rows(db, "SELECT fallback_on FROM extraction_profiles WHERE active = :t",
                t=True) == [("timeout,error",)]
