"""Schema, migrations, profiles and the `kg admin extraction` commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from kg.db import Database
from kg.db import migrate as kg_migrate

PROFILE_INSERT = """
INSERT INTO extraction_profiles (name, provider, model, base_url, api_key_env, temperature,
  top_p, thinking_mode, gpu_layers, num_threads, context_window, max_output_tokens,
  max_parallel, max_retries, timeout_s, keep_alive, active, revision, updated_at, updated_by)
VALUES (:name, :provider, 'm', 'http://x', NULL, :temperature, 0.9, :thinking_mode, -1, NULL, 4096,
  1024, :max_parallel, 2, 60, NULL, :active, 1, CURRENT_TIMESTAMP, 'sql')
"""


def _insert(db: Database, **overrides: object) -> None:
    params = {"name": "raw", "provider": "ollama", "temperature": 0.1, "max_parallel": 1,
              "active": False, "thinking_mode": "off", **overrides}
    with db.engine.begin() as conn:
        conn.execute(text(PROFILE_INSERT), params)


def snapshot(db: Database) -> tuple[list, list]:
    with db.engine.connect() as conn:
        profiles = conn.execute(text("SELECT * FROM extraction_profiles ORDER BY id")).all()
        changes = conn.execute(text("SELECT * FROM profile_changes ORDER BY id")).all()
    return [tuple(r) for r in profiles], [tuple(r) for r in changes]


# -- migrations --------------------------------------------------------------------------

def test_migrations_up_down_to_base_and_up_again(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    before, after = kg_migrate.upgrade(db)
    assert (before, after) == (None, kg_migrate.head_revision())
    tables = set(inspect(db.engine).get_table_names())
    assert {"extraction_profiles", "profile_changes", "relationship_types", "calls", "runs",
            "concepts", "evidence"} <= tables
    kg_migrate.downgrade(db, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    assert kg_migrate.current_revision(db) is None
    kg_migrate.upgrade(db)
    assert kg_migrate.current_revision(db) == kg_migrate.head_revision()
    db.dispose()


def test_migration_0005_leaves_provider_names_to_the_registry(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    kg_migrate.upgrade(db, "0004")
    with pytest.raises(IntegrityError):
        _insert(db, name="plugin", provider="canned")
    kg_migrate.upgrade(db, "0005")
    _insert(db, name="plugin", provider="canned")  # a provider registered at run time
    _insert(db, name="second", provider="canned")  # inactive rows: the partial index allows them
    with pytest.raises(IntegrityError):
        _insert(db, name="hot", temperature=7)  # every other CHECK is still there
    with pytest.raises(IntegrityError):
        _insert(db, name="two-active", active=True)  # and the one-active index kept its WHERE
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM extraction_profiles WHERE provider = 'canned'"))
    kg_migrate.downgrade(db, "0004")
    with pytest.raises(IntegrityError):
        _insert(db, name="plugin", provider="canned")
    db.dispose()


def test_fresh_database_has_default_embedded_profile_and_vocabulary(db: Database) -> None:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, provider, model, active FROM extraction_profiles")
        ).all()
        categories = conn.execute(
            text("SELECT DISTINCT category FROM relationship_types")
        ).scalars().all()
        count = conn.execute(text("SELECT count(*) FROM relationship_types")).scalar_one()
    assert [(r[0], r[1], r[2], bool(r[3])) for r in rows] == [
        ("default", "llamacpp", "smollm2", True)
    ]
    assert set(categories) == {"logical", "causal", "structural", "evidential", "similarity",
                               "temporal", "functional", "meta"}
    assert 28 <= count <= 36


def test_partial_unique_index_rejects_second_active_profile(db: Database) -> None:
    _insert(db, name="inactive", active=False)  # a second inactive row is fine
    with pytest.raises(IntegrityError):
        _insert(db, name="second-active", active=True)


@pytest.mark.parametrize(
    "overrides",
    [{"temperature": 7}, {"thinking_mode": "max"}, {"max_parallel": 0}, {"max_parallel": 65}],
)
def test_check_constraints_reject_bad_rows_written_by_sql(db: Database, overrides: dict) -> None:
    with pytest.raises(IntegrityError):
        _insert(db, name="bad", **overrides)


# -- schema state errors ------------------------------------------------------------------

def test_unmigrated_database_gives_one_line_error(kg, kg_env, empty_db_url, monkeypatch) -> None:
    monkeypatch.setenv("KG_DATABASE_URL", empty_db_url)
    result = kg("admin", "extraction", "show")
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "run `kg db upgrade`" in result.stderr


def test_outdated_database_names_versions_and_fix(kg, kg_env, empty_db_url, monkeypatch) -> None:
    db = Database(empty_db_url)
    kg_migrate.upgrade(db, "0001")
    db.dispose()
    monkeypatch.setenv("KG_DATABASE_URL", empty_db_url)
    result = kg("admin", "extraction", "list")
    assert result.exit_code == 3
    assert "0001" in result.stderr and kg_migrate.head_revision() in result.stderr
    assert "kg db upgrade" in result.stderr
    up = kg("db", "upgrade")
    assert up.exit_code == 0, up.stderr
    assert kg("admin", "extraction", "list").exit_code == 0


def test_db_current_and_bad_downgrade_target(kg) -> None:
    current = kg("db", "current")
    assert "up to date" in current.stdout
    bad = kg("db", "downgrade", "nope")
    assert bad.exit_code == 2
    assert "known revisions" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://u@h/db", "does not support"),
        ("not a url", "not a valid URL"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/x", "cannot connect"),
    ],
)
def test_wrong_database_url(kg, kg_env, monkeypatch, url: str, needle: str) -> None:
    monkeypatch.setenv("KG_DATABASE_URL", url)
    result = kg("admin", "extraction", "show")
    assert result.exit_code == 3
    assert needle in result.stderr
    assert "KG_DATABASE_URL" in result.stderr
    assert result.stderr.count("\n") == 1


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
