"""kg.db.migrate and the schema: migrations up and down, CHECKs, one active profile, and the
one-line errors for unmigrated, outdated or unreachable databases (SQLite and PostgreSQL)."""

from __future__ import annotations

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
