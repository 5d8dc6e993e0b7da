"""kg.db: which databases migrate by themselves, which are left alone, and a careful downgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from kg.db import Database, migrate
from tests.terminal import run_in_pty

HEAD = migrate.head_revision()


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A KG_HOME that does not exist yet, with the default database (no KG_DATABASE_URL)."""
    home = tmp_path / "fresh" / "kg-home"
    monkeypatch.delenv("KG_DATABASE_URL", raising=False)
    monkeypatch.setenv("KG_HOME", str(home))
    monkeypatch.setenv("USER", "tester")
    return home


def _run(*args: str):
    from click.testing import CliRunner

    from kg.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _revision(path: Path) -> str | None:
    db = Database(f"sqlite:///{path}")
    try:
        return migrate.current_revision(db)
    finally:
        db.dispose()


# -- the default database migrates itself -----------------------------------------------------

def test_fresh_home_works_without_db_upgrade(fresh_home: Path) -> None:
    first = _run("concepts", "list")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.strip() == "(none)"
    assert first.stderr == f"note: created the kg database {fresh_home / 'kg.db'}\n"
    assert _revision(fresh_home / "kg.db") == HEAD
    again = _run("vocab", "list", "--json")
    assert again.exit_code == 0 and again.stderr == ""  # nothing more to say the second time
    assert len(again.stdout) > 100


def test_fresh_home_serves_admin_commands_too(fresh_home: Path) -> None:
    shown = _run("admin", "extraction", "show", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "default"
    assert "note: created the kg database" in shown.stderr


def test_outdated_default_database_is_upgraded_with_a_note(fresh_home: Path) -> None:
    db = Database(f"sqlite:///{fresh_home / 'kg.db'}")
    migrate.upgrade(db, "0003")
    db.dispose()
    result = _run("runs", "list")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == (f"note: upgraded the kg database {fresh_home / 'kg.db'} "
                                     f"from schema 0003 to {HEAD}")
    assert _revision(fresh_home / "kg.db") == HEAD


def test_downgraded_default_database_comes_back_up(fresh_home: Path) -> None:
    assert _run("runs", "list").exit_code == 0
    down = _run("db", "downgrade", "0003", "--yes")
    assert down.exit_code == 0, down.stderr
    assert "upgrades it again" in down.stderr
    assert _revision(fresh_home / "kg.db") == "0003"
    again = _run("runs", "list")
    assert again.exit_code == 0 and "from schema 0003 to" in again.stderr


def test_database_from_a_newer_kg_is_refused(fresh_home: Path) -> None:
    assert _run("runs", "list").exit_code == 0
    db = Database(f"sqlite:///{fresh_home / 'kg.db'}")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose()
    result = _run("runs", "list")
    assert result.exit_code == 3
    assert "schema 9999, which is newer than this kg" in result.stderr
    assert result.stderr.count("\n") == 1
    assert _revision(fresh_home / "kg.db") == "9999"


def test_first_commands_started_together_migrate_once(fresh_home: Path) -> None:
    env = {**os.environ, "KG_HOME": str(fresh_home)}
    procs = [subprocess.Popen([sys.executable, "-m", "kg.cli", "runs", "list", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert [out.strip() for _, out, _ in results] == ["[]", "[]", "[]"]
    notes = [err for _, _, err in results if "note: created" in err]
    assert len(notes) == 1, results
    assert _revision(fresh_home / "kg.db") == HEAD


# -- other databases are left alone -----------------------------------------------------------

def test_missing_sqlite_file_named_by_url_is_not_created(fresh_home: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere" / "kg.db"
    monkeypatch.setenv("KG_DATABASE_URL", f"sqlite:///{path}")
    for args in (["concepts", "list"], ["logs", "--json"], ["runs", "show", "1"]):
        result = _run(*args)
        assert result.exit_code == 3, args
        assert result.stderr == (f"error: no kg database at {path} (the file is missing); "
                                 "run `kg db upgrade` to create it\n")
    current = _run("db", "current")
    assert current.exit_code == 0 and "no database yet" in current.stdout
    assert not path.parent.exists()
    assert not fresh_home.exists()
    assert _run("db", "upgrade").exit_code == 0
    assert _run("concepts", "list").stdout.strip() == "(none)"


def test_empty_sqlite_file_named_by_url_is_not_rewritten(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    monkeypatch.setenv("KG_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("KG_HOME", str(tmp_path / "home"))
    result = _run("vocab", "list")
    assert result.exit_code == 3
    assert f"no kg database at {path} (the file is empty)" in result.stderr
    assert "kg db upgrade" in result.stderr
    assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]  # no -wal, no home


def test_other_sqlite_file_is_only_read_before_it_is_migrated(tmp_path: Path,
                                                              monkeypatch) -> None:
    path = tmp_path / "theirs.db"
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body TEXT)"))
    db.dispose()
    before = path.read_bytes()
    monkeypatch.setenv("KG_DATABASE_URL", f"sqlite:///{path}")
    result = _run("concepts", "list")
    assert result.exit_code == 3 and "has no kg schema; run `kg db upgrade`" in result.stderr
    assert path.read_bytes() == before


def test_postgresql_stays_explicit(kg, kg_env, empty_db_url: str, dialect: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if dialect != "postgresql":
        pytest.skip("the SQLite side is covered above")
    monkeypatch.setenv("KG_DATABASE_URL", empty_db_url)
    result = kg("concepts", "list")
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "run `kg db upgrade`" in result.stderr
    db = Database(empty_db_url)
    assert migrate.current_revision(db) is None
    db.dispose()


# -- downgrade asks first ---------------------------------------------------------------------

def test_downgrade_plan_names_revisions_and_tables() -> None:
    plan = migrate.downgrade_plan(HEAD, "0002")
    revisions = [step.revision for step in plan]
    assert revisions == [r for r in reversed(migrate.known_revisions()) if r > "0002"]
    tables = {step.revision: step.tables for step in plan}
    assert tables["0004"] == ("evaluations", "evaluation_documents")
    assert tables["0003"] == ("model_prices",)
    assert "documents" in migrate.downgrade_plan("0002", None)[0].tables
    assert migrate.downgrade_plan("0002", "0002") == []


def test_downgrade_without_terminal_or_yes_refuses(kg, db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO model_prices (name, prompt_per_million, "
                          "completion_per_million, currency, note, updated_at) VALUES "
                          "('m', 1, 2, 'USD', '', CURRENT_TIMESTAMP)"))
    result = kg("db", "downgrade", "0002")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "model_prices (1 row)" in result.stderr and "evaluations (0 rows)" in result.stderr
    assert "--yes" in result.stderr
    assert migrate.current_revision(db) == HEAD
    done = kg("db", "downgrade", "0002", "--yes")
    assert done.exit_code == 0, done.stderr
    assert f"{HEAD} -> 0002" in done.stdout
    assert migrate.current_revision(db) == "0002"
    assert kg("db", "upgrade").exit_code == 0


def test_downgrade_to_where_it_is_changes_nothing(kg) -> None:
    result = kg("db", "downgrade", HEAD)
    assert result.exit_code == 0 and "nothing to undo" in result.stdout


@pytest.mark.slow
def test_downgrade_asks_on_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "kg.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()
    env = {**os.environ, "KG_DATABASE_URL": f"sqlite:///{path}",
           "KG_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    code, screen = run_in_pty(["db", "downgrade", "0003"], env, answers="n\n")
    assert code == 1, screen
    assert "0005" in screen and "0004" in screen and "evaluations (0 rows)" in screen
    assert "The data in the dropped tables is lost." in screen
    assert "Downgrade? [y/N]" in screen and "downgrade cancelled; nothing changed" in screen
    assert _revision(path) == HEAD
    code, screen = run_in_pty(["db", "downgrade", "0003"], env, answers="y\n")
    assert code == 0, screen
    assert _revision(path) == "0003"


# -- pooled connections -----------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_pooled_connection_is_pinged_only_after_sitting_idle(db, monkeypatch) -> None:
    from kg.db import session

    pings: list[object] = []
    real_ping = db.engine.dialect.do_ping
    monkeypatch.setattr(db.engine.dialect, "do_ping",
                        lambda dbapi: pings.append(dbapi) or real_ping(dbapi))

    def backend() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    first = backend()
    assert backend() == first and not pings  # used a moment ago: no round trip for a ping
    killer = Database(db.url.render_as_string(hide_password=False))
    with killer.engine.connect() as conn:  # the server drops it while it sits in the pool
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    killer.dispose()
    monkeypatch.setattr(session, "IDLE_PING_S", 0.0)
    assert backend() != first and pings  # pinged, found dead, replaced: no error
