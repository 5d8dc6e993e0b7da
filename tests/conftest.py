"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL.

PostgreSQL: KG_TEST_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres) must
answer; a migrated template database is made once per session and each test gets a fresh copy.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from kg.db import Database
from kg.db import migrate as kg_migrate
from tests.fakes import FakeOllama
from tests.graph_seed import fake_ollama, ingest_story, use_server

PG_ADMIN_URL = os.environ.get(
    "KG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SESSION_TAG = f"kgt{os.getpid()}_{uuid.uuid4().hex[:6]}"
_counter = itertools.count()
DIALECTS = ["sqlite", "postgresql"]


def _pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _pg_admin(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"{SESSION_TAG}_tpl"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # pragma: no cover - environment problem, reported loudly
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not usable for tests: {exc}")
    db = Database(_pg_url(name))
    kg_migrate.upgrade(db)
    db.dispose()
    yield name
    _drop_session_databases()


def _drop_session_databases() -> None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": f"{SESSION_TAG}%"},
        ).scalars().all()
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    db = Database(f"sqlite:///{path}")
    kg_migrate.upgrade(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(scope="session")
def kg_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kg's wheel, built once per session (tests/test_wheel.py, tests/test_install.py).

    Built from a copy of exactly what the Dockerfile copies: an in-tree build reuses build/,
    whose leftovers (modules since moved or deleted) would end up in the wheel."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    source = tmp_path_factory.mktemp("source")
    junk = shutil.ignore_patterns("__pycache__", "*.py[co]")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    for name in ("kg", "migrations"):
        shutil.copytree(root / name, source / name, ignore=junk)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(source)], check=True, capture_output=True)
    return next(dist.glob("kg-*.whl"))


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated database of the test's dialect."""
    if dialect == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kg.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"{SESSION_TAG}_{next(_counter)}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database (no schema) of the test's dialect."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("pg_template")  # ensures the server answers
    name = f"{SESSION_TAG}_{next(_counter)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    yield _pg_url(name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@dataclass
class KgResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def kg_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point kg at the test database and a private KG_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("KG_DATABASE_URL", db_url)
    monkeypatch.setenv("KG_HOME", str(home))
    monkeypatch.setenv("USER", "tester")
    return {"KG_DATABASE_URL": db_url, "KG_HOME": str(home)}


@pytest.fixture
def kg(kg_env: dict[str, str]):
    """Run the kg CLI in-process: kg("admin", "extraction", "show") -> KgResult."""
    from kg.cli.main import cli

    def run(*args: str, input: str | None = None) -> KgResult:
        result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
        return KgResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def other_db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second fresh, migrated database of the test's dialect (a serial reference run)."""
    if dialect == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "other.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    name = f"{SESSION_TAG}_{next(_counter)}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _reset_kg_logging() -> Iterator[None]:
    """The CLI configures the `kg` logger per command; in one test process that must not leak
    (a -vv in one test would print debug lines in the next)."""
    import logging

    yield
    logger = logging.getLogger("kg")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    """A fake Ollama server answering every chunk with a valid graph (see tests/graph_seed.py)."""
    with fake_ollama() as server:
        yield server


@pytest.fixture
def seeded(kg, ollama: FakeOllama, tmp_path: Path) -> Path:
    """A graph from the story, ingested by the CLI against the fake Ollama server."""
    use_server(kg, ollama.url)
    return ingest_story(kg, tmp_path)
