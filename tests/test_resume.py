"""A run killed with SIGKILL loses no committed chunk; resuming it yields the same graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from kg.cli.main import cli
from kg.db import Database
from kg.db import migrate as kg_migrate
from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
from tests.test_ingest import paragraphs, small_chunks

ROOT = Path(__file__).resolve().parent.parent


def graph(url: str) -> dict[str, object]:
    """The graph as comparable sets: labels, aliases, typed edges, evidence spans."""
    db = Database(url)
    with db.engine.connect() as conn:
        def q(sql: str) -> list[tuple]:
            return sorted(tuple(r) for r in conn.execute(text(sql)))

        result = {
            "concepts": q("SELECT label FROM concepts"),
            "aliases": q("SELECT alias FROM concept_aliases"),
            "edges": q("""SELECT a.label, t.name, b.label FROM relationships r
                          JOIN concepts a ON a.id = r.source_id
                          JOIN concepts b ON b.id = r.target_id
                          JOIN relationship_types t ON t.id = r.type_id"""),
            "evidence": q("SELECT quote, char_start, char_end FROM evidence"),
        }
    db.dispose()
    return result


def cli_run(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def long_document(tmp_path: Path) -> Path:
    doc = tmp_path / "long.txt"
    doc.write_text(paragraphs(24), encoding="utf-8")
    return doc


def slow_server() -> FakeOllama:
    """A fake Ollama answering every chunk validly after 0.15 s (time to kill a run mid-way)."""
    return FakeOllama(responder=lambda body: Reply(graph_reply(chunk_of(body)), delay=0.15))


def use_ollama(db_url: str, tmp_path: Path, url: str) -> dict[str, str]:
    """The environment of a kg process whose active profile talks to the server at `url`."""
    env = {**os.environ, "KG_DATABASE_URL": db_url, "KG_HOME": str(tmp_path / "home")}
    setup = cli_run(env, "admin", "extraction", "set", "--profile", "t", "--provider",
                    "ollama", "--model", "qwen3:8b", "--base-url", url,
                    "--max-parallel", "2", "--activate")
    assert setup.exit_code == 0, setup.stderr
    return env


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(db_url: str, tmp_path: Path) -> None:
    doc = long_document(tmp_path)
    with slow_server() as server:
        env = use_ollama(db_url, tmp_path, server.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kg.cli", "ingest", str(doc), *small_chunks()],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        db = Database(db_url)
        committed = _kill_after(proc, db, 5)  # SIGKILL: no cleanup of any kind
        assert committed >= 5
        with db.engine.connect() as conn:
            kept = conn.execute(text(
                "SELECT count(*) FROM chunk_extractions WHERE status = 'ok'")).scalar_one()
            total = conn.execute(text("SELECT chunks_total FROM runs")).scalar_one()
        assert committed <= kept < total  # nothing committed was lost, work remains
        runs = json.loads(cli_run(env, "runs", "list", "--json").stdout)
        assert runs[0]["status"] == "interrupted"
        resumed = cli_run(env, "ingest", "--resume", str(runs[0]["id"]), "--json")
        assert resumed.exit_code == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["status"] == "completed" and summary["chunks_ok"] == total
        with db.engine.connect() as conn:
            per_chunk = conn.execute(text(
                "SELECT count(*) FROM chunk_extractions GROUP BY chunk_id")).scalars().all()
        assert len(per_chunk) == total and set(per_chunk) == {1}
        db.dispose()

        reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
        ref = Database(reference_url)
        kg_migrate.upgrade(ref)
        ref.dispose()
        ref_env = {**env, "KG_DATABASE_URL": reference_url}
        cli_run(ref_env, "admin", "extraction", "set", "--profile", "t", "--provider", "ollama",
                "--model", "qwen3:8b", "--base-url", server.url, "--max-parallel", "2",
                "--activate")
        server.responder = lambda body: Reply(graph_reply(chunk_of(body)))
        straight = cli_run(ref_env, "ingest", str(doc), *small_chunks(), "--json")
        assert json.loads(straight.stdout)["status"] == "completed"
    assert graph(db_url) == graph(reference_url)


def test_resuming_a_live_run_is_refused(kg, db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (status, started_at, heartbeat_at, pid, host, profile_name, "
            "profiles_used, options, documents, chunks_total, chunks_ok, chunks_failed) VALUES "
            "('running', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :pid, :host, 'default', '[]', "
            "'{}', 0, 0, 0, 0)"), {"pid": os.getpid(), "host": os.uname().nodename})
    result = kg("ingest", "--resume", "1")
    assert result.exit_code == 2 and "still running" in result.stderr
    missing = kg("ingest", "--resume", "99")
    assert missing.exit_code == 2 and "no run 99" in missing.stderr
    both = kg("ingest", "--resume", "1", "x.txt")
    assert both.exit_code == 2 and "takes no paths" in both.stderr


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(db_url: str, tmp_path: Path) -> None:
    doc = tmp_path / "long.txt"
    doc.write_text(paragraphs(16), encoding="utf-8")
    responder = lambda body: Reply(graph_reply(chunk_of(body)), delay=0.2)  # noqa: E731
    with FakeOllama(responder=responder) as server:
        env = {**os.environ, "KG_DATABASE_URL": db_url, "KG_HOME": str(tmp_path / "home")}
        setup = cli_run(env, "admin", "extraction", "set", "--profile", "t", "--provider",
                        "ollama", "--model", "qwen3:8b", "--base-url", server.url,
                        "--max-parallel", "1", "--activate")
        assert setup.exit_code == 0, setup.stderr
        proc = subprocess.Popen(
            [sys.executable, "-m", "kg.cli", "ingest", str(doc), *small_chunks()],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        db = Database(db_url)
        committed = 0
        deadline = time.monotonic() + 60
        while committed < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            with db.engine.connect() as conn:
                committed = conn.execute(text(
                    "SELECT count(*) FROM chunk_extractions")).scalar_one()
        proc.terminate()  # SIGTERM, as `docker stop` or systemd send it
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors == ["error: interrupted; committed chunks are kept; resume with "
                          "`kg ingest --resume 1`"]
        assert "Traceback" not in err
        with db.engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM runs")).scalar_one()
            kept = conn.execute(text("SELECT count(*) FROM chunk_extractions")).scalar_one()
        assert status == "interrupted" and kept >= committed
        server.responder = lambda body: Reply(graph_reply(chunk_of(body)))
        resumed = cli_run(env, "ingest", "--resume", "1", "--json")
        assert resumed.exit_code == 0, resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "completed"
        db.dispose()


def _kill_after(proc: subprocess.Popen, db: Database, chunks: int) -> int:
    """SIGKILL `proc` once `chunks` chunks have committed; returns how many had."""
    committed = 0
    deadline = time.monotonic() + 60
    while committed < chunks and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        with db.engine.connect() as conn:
            committed = conn.execute(text(
                "SELECT count(*) FROM chunk_extractions WHERE status = 'ok'")).scalar_one()
    proc.kill()
    proc.wait(10)
    return committed


@pytest.mark.slow
def test_resume_beside_a_new_run_of_the_same_file_extracts_no_chunk_twice(
        db_url: str, tmp_path: Path) -> None:
    """Issue 19, finding 3: `kg ingest F` killed, `kg ingest F &`, `kg ingest --resume 1`."""
    doc = long_document(tmp_path)
    with slow_server() as server:
        env = use_ollama(db_url, tmp_path, server.url)
        ingest = [sys.executable, "-m", "kg.cli", "ingest", str(doc), *small_chunks()]
        first = subprocess.Popen(ingest, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        db = Database(db_url)
        assert _kill_after(first, db, 3) >= 3
        second = subprocess.Popen([*ingest, "--json"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the new run has planned the file
            with db.engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 2:
                    break
            time.sleep(0.05)
        resumed = cli_run(env, "ingest", "--resume", "1", "--json")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert resumed.exit_code == 0, resumed.stderr
        with db.engine.connect() as conn:
            total = conn.execute(text("SELECT chunk_count FROM documents")).scalar_one()
            per_chunk = conn.execute(text(
                "SELECT count(*) FROM chunk_extractions WHERE status = 'ok' "
                "GROUP BY chunk_id")).scalars().all()
            run1 = conn.execute(text("SELECT status FROM runs WHERE id = 1")).scalar_one()
            twice = conn.execute(text(
                "SELECT chunk_id FROM calls WHERE chunk_id IS NOT NULL GROUP BY chunk_id "
                "HAVING count(DISTINCT run_id) > 1")).scalars().all()
            evidence = conn.execute(text("SELECT count(*) FROM evidence")).scalar_one()
        db.dispose()
        # Every chunk committed exactly once, and no chunk was sent by both runs.
        assert len(per_chunk) == total and set(per_chunk) == {1}
        assert twice == []
        assert run1 == "completed"
        assert "being ingested by run 2" in resumed.stderr
        assert json.loads(out)["status"] == "completed"
    # The same evidence as one uninterrupted run (no double counting).
    assert evidence == len(graph(db_url)["evidence"])


def test_resuming_a_completed_run_is_refused_and_changes_nothing(kg, db: Database,
                                                                  tmp_path: Path) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (status, started_at, finished_at, heartbeat_at, pid, host, "
            "profile_name, profiles_used, options, documents, chunks_total, chunks_ok, "
            "chunks_failed) VALUES ('completed', CURRENT_TIMESTAMP, '2026-01-01 00:00:00', "
            "CURRENT_TIMESTAMP, 4242, 'elsewhere', 'default', '[]', '{}', 0, 0, 0, 0)"))
    result = kg("ingest", "--resume", "1")
    assert result.exit_code == 2
    assert "run 1 is completed: nothing to resume" in result.stderr
    assert "Traceback" not in result.stderr
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT status, pid, host, finished_at FROM runs")).one()
    assert (row.status, row.pid, row.host) == ("completed", 4242, "elsewhere")
    assert str(row.finished_at).startswith("2026-01-01")
