"""kg.cli.admin: `kg admin extraction show|set|use|delete|history` on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from kg.db import Database


def snapshot(db: Database) -> tuple[list, list]:
    with db.engine.connect() as conn:
        profiles = conn.execute(text("SELECT * FROM extraction_profiles ORDER BY id")).all()
        changes = conn.execute(text("SELECT * FROM profile_changes ORDER BY id")).all()
    return [tuple(r) for r in profiles], [tuple(r) for r in changes]


# -- profiles through the CLI ---------------------------------------------------------------

def test_show_json_has_every_field(kg) -> None:
    result = kg("admin", "extraction", "show", "--json")
    data = json.loads(result.stdout)
    for field in ("provider", "model", "base_url", "api_key_env", "temperature", "top_p",
                  "thinking_mode", "gpu_layers", "num_threads", "context_window",
                  "max_output_tokens", "max_parallel", "max_retries", "timeout_s", "keep_alive",
                  "revision", "updated_at", "updated_by", "active"):
        assert field in data
    human = kg("admin", "extraction", "show").stdout
    assert "auto (-1)" in human


def test_partial_update_bumps_revision_and_logs_history(kg, db: Database) -> None:
    result = kg("admin", "extraction", "set", "--temperature", "0.3", "--max-retries", "4")
    assert result.exit_code == 0, result.stderr
    assert "temperature: 0.1 -> 0.3" in result.stdout
    data = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert data["temperature"] == 0.3 and data["max_retries"] == 4
    assert data["revision"] == 2
    assert data["model"] == "smollm2"  # untouched
    history = json.loads(kg("admin", "extraction", "history", "--json").stdout)
    fields = {(h["field"], h["old"], h["new"], h["by"]) for h in history}
    assert ("temperature", "0.1", "0.3", "tester") in fields
    assert ("max_retries", "2", "4", "tester") in fields
    unchanged = kg("admin", "extraction", "set", "--temperature", "0.3")
    assert "no changes" in unchanged.stdout
    assert json.loads(kg("admin", "extraction", "show", "--json").stdout)["revision"] == 2


def test_new_profile_gets_provider_defaults_and_can_be_activated(kg) -> None:
    result = kg("admin", "extraction", "set", "--profile", "gpu", "--provider", "ollama",
                "--model", "qwen3:8b", "--thinking-mode", "off", "--by", "ops")
    assert result.exit_code == 0, result.stderr
    gpu = json.loads(kg("admin", "extraction", "show", "--profile", "gpu", "--json").stdout)
    # No base URL stored: the provider uses $OLLAMA_HOST, else http://localhost:11434.
    assert gpu["base_url"] is None and gpu["keep_alive"] == "10m"
    assert "$OLLAMA_HOST" in kg("admin", "extraction", "show", "--profile", "gpu").stdout
    assert gpu["active"] is False and gpu["updated_by"] == "ops"
    vllm = kg("admin", "extraction", "set", "--profile", "v", "--provider", "vllm",
              "--model", "Qwen/Qwen3-8B", "--activate")
    assert vllm.exit_code == 0
    active = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert active["name"] == "v" and active["base_url"] == "http://localhost:8000/v1"
    listed = json.loads(kg("admin", "extraction", "list", "--json").stdout)
    assert [p["name"] for p in listed if p["active"]] == ["v"]


def test_use_and_delete(kg) -> None:
    kg("admin", "extraction", "set", "--profile", "b", "--provider", "ollama", "--model", "m")
    before = json.loads(kg("admin", "extraction", "show", "--profile", "b", "--json").stdout)
    assert kg("admin", "extraction", "use", "b").exit_code == 0
    after = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert after["name"] == "b" and after["revision"] == before["revision"] + 1
    refused = kg("admin", "extraction", "delete", "b")
    assert refused.exit_code == 2 and "is active" in refused.stderr
    assert kg("admin", "extraction", "delete", "default").exit_code == 0
    names = [p["name"] for p in json.loads(kg("admin", "extraction", "list", "--json").stdout)]
    assert names == ["b"]
    missing = kg("admin", "extraction", "use", "nope")
    assert missing.exit_code == 2 and "known profiles: b" in missing.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--provider", "foo"], "provider must be one of ollama, vllm, openai, llamacpp"),
        (["--temperature", "7"], "temperature must be between 0 and 2"),
        (["--top-p", "0"], "top_p must be above 0"),
        (["--max-parallel", "0"], "max_parallel must be between 1 and 64"),
        (["--max-retries", "11"], "max_retries must be between 0 and 10"),
        (["--gpu-layers", "-2"], "gpu_layers must be -1"),
        (["--context-window", "100"], "context_window must be between"),
        (["--max-output-tokens", "9000"], "must be smaller than context_window"),
        (["--thinking-mode", "max"], "thinking_mode must be one of off, low, medium, high"),
        (["--timeout", "0"], "timeout_s must be above 0"),
        (["--keep-alive", "forever"], "keep_alive must be a duration"),
        (["--base-url", "localhost:11434"], "must start with http://"),
        (["--provider", "ollama"], "needs --model"),
        (["--api-key-env", "MY-KEY"], "NAME of an environment variable"),
        (["--temperature", "abc"], "not a valid float"),
        (["--profile", "new", "--model", "x"], "give --provider"),
        (["--profile", "new2", "--provider", "vllm"], "needs --model"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    kg, db: Database, args: list[str], needle: str
) -> None:
    before = snapshot(db)
    result = kg("admin", "extraction", "set", *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "secret", ["sk-proj-abc123def456ghi789", "hf_AbCdEfGh12345678", "abcd1234efgh5678ijkl9012mn"]
)
def test_secret_given_as_variable_name_is_refused_and_never_stored(
    kg, db: Database, secret: str
) -> None:
    before = snapshot(db)
    result = kg("admin", "extraction", "set", "--api-key-env", secret)
    assert result.exit_code == 2
    assert secret not in result.stderr and secret not in result.stdout
    assert snapshot(db) == before
    with db.engine.connect() as conn:
        dump = str(conn.execute(text("SELECT * FROM profile_changes")).all())
        dump += str(conn.execute(text("SELECT * FROM extraction_profiles")).all())
    assert secret not in dump


def test_value_of_a_key_variable_is_refused(kg, db: Database, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "Token123")
    result = kg("admin", "extraction", "set", "--api-key-env", "Token123")
    assert result.exit_code == 2
    ok = kg("admin", "extraction", "set", "--api-key-env", "VLLM_API_KEY")
    assert ok.exit_code == 0
    assert "Token123" not in ok.stdout


def test_history_limit_must_be_positive(kg) -> None:
    result = kg("admin", "extraction", "history", "--limit", "0")
    assert result.exit_code == 2 and "--limit" in result.stderr
