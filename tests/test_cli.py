"""The kg command itself: tables that fit, machine outputs, logging, completion, signals."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kg.db import Database
from kg.db.models import Concept, Run
from kg.log import configure
from kg.urls import redact

LONG_LABEL = "Extraordinarily" * 13  # 195 characters, no space to break at
DESCRIPTION = "First line of the description.\nSecond line\nthird line " + "word " * 60


@pytest.fixture(autouse=True)
def _quiet_after() -> Iterator[None]:
    """-v in one in-process command must not leave later tests' library calls verbose."""
    yield
    configure("WARNING")


@pytest.fixture
def concepts(db: Database) -> None:
    with db.session() as s:
        s.add(Concept(label=LONG_LABEL, norm_label=LONG_LABEL.casefold(),
                      description=DESCRIPTION, search_terms=[]))
        s.add(Concept(label="Baker Street", norm_label="baker street",
                      description="A street in London.", search_terms=["221B"]))


# -- tables and outputs -----------------------------------------------------------------------

def test_concepts_list_fits_columns_with_long_and_multiline_cells(
        kg, concepts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    result = kg("concepts", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].split() == ["ID", "LABEL", "DESCRIPTION", "MENTIONS", "RELATIONSHIPS"]
    # The description's newlines stay inside its column: no line starts with its text.
    assert not any(line.startswith(("Second line", "third line")) for line in lines)
    second = next(line for line in lines if "Second line" in line)
    assert second.index("Second line") == lines[0].index("DESCRIPTION")
    assert "Baker Street" in result.stdout and "…" in result.stdout  # cut, not lost
    narrow = kg("runs", "list")
    assert narrow.exit_code == 0


def test_every_list_has_json_jsonl_and_csv(kg, concepts) -> None:
    for command in (["concepts", "list"], ["runs", "list"], ["vocab", "list"],
                    ["vocab", "proposals"]):
        as_json = kg(*command, "--json")
        assert as_json.exit_code == 0, (command, as_json.stderr)
        rows = json.loads(as_json.stdout)
        jsonl = [json.loads(line) for line in kg(*command, "--jsonl").stdout.splitlines()]
        assert jsonl == rows, command
        parsed = list(csv.DictReader(io.StringIO(kg(*command, "--csv").stdout)))
        assert len(parsed) == len(rows), command
    rows = json.loads(kg("concepts", "list", "--json").stdout)
    assert {r["label"]: r["description"] for r in rows}[LONG_LABEL] == DESCRIPTION
    parsed = list(csv.DictReader(io.StringIO(kg("concepts", "list", "--csv").stdout)))
    # newlines survive CSV quoting
    assert {r["label"]: r["description"] for r in parsed}[LONG_LABEL] == DESCRIPTION


def test_show_commands_fit_too(kg, concepts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    shown = kg("concepts", "show", "baker street")
    assert shown.exit_code == 0, shown.stderr
    assert "A street in London." in shown.stdout and "221B" in shown.stdout
    long = kg("concepts", "show", LONG_LABEL)
    assert max(len(line) for line in long.stdout.splitlines()) <= 60
    data = json.loads(kg("concepts", "show", "Baker Street", "--json").stdout)
    assert data["label"] == "Baker Street"


# -- logging ----------------------------------------------------------------------------------

def test_verbose_and_log_level(kg) -> None:
    quiet = kg("runs", "list")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    info = kg("-v", "db", "downgrade", "0004", "--yes")
    assert info.exit_code == 0
    assert "INFO kg.db.migrate: migrated" in info.stderr and "DEBUG" not in info.stderr
    debug = kg("-vv", "db", "upgrade")
    assert "DEBUG kg.db.session: database" in debug.stderr
    assert "INFO kg.db.migrate: migrated" in debug.stderr


def test_log_level_from_the_environment(kg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_LOG_LEVEL", "debug")
    assert "DEBUG kg.db.session" in kg("runs", "list").stderr
    monkeypatch.setenv("KG_LOG_LEVEL", "loud")
    bad = kg("runs", "list")
    assert bad.exit_code == 2
    assert bad.stderr == ("error: KG_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR "
                          "(got 'loud')\n")


def test_logs_never_show_a_password(kg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_DATABASE_URL",
                       "postgresql+psycopg://postgres:pa55word-xyz@127.0.0.1:1/kg")
    result = kg("-vv", "runs", "list")
    assert result.exit_code == 3
    assert "DEBUG kg.db.session: database postgresql+psycopg://postgres:***@" in result.stderr
    assert "pa55word-xyz" not in result.stderr


def test_redact_masks_url_passwords_and_secret_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", "abcd-1234-efgh")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask without hurting the text
    text = "GET http://u:p4ss@host:8000/v1 with abcd-1234-efgh and abc"
    assert redact(text) == "GET http://u:***@host:8000/v1 with *** and abc"
    assert redact("http://host:8000/v1 user@example.org") == "http://host:8000/v1 user@example.org"


# -- completion -------------------------------------------------------------------------------

def _complete(env: dict[str, str], words: str) -> list[str]:
    parts = words.split(" ")
    result = subprocess.run(
        [sys.executable, "-m", "kg.cli"],
        env={**os.environ, **env, "_KG_COMPLETE": "bash_complete", "COMP_WORDS": words,
             "COMP_CWORD": str(len(parts) - 1)},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # bash_complete prints "type,value" lines.
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


@pytest.mark.slow
def test_completion_of_commands_run_ids_and_profile_names(kg_env, db: Database,
                                                          tmp_path: Path) -> None:
    with db.session() as s:
        s.add_all([Run(pid=1, host="h", profile_name="default", status="completed")
                   for _ in range(3)])
    assert _complete(kg_env, "kg lo") == ["logs"]
    assert _complete(kg_env, "kg runs show ") == ["3", "2", "1"]
    assert _complete(kg_env, "kg logs --profile d") == ["default"]
    missing = tmp_path / "nowhere" / "kg.db"
    # A database that is not there completes nothing, says nothing and is not created.
    assert _complete({**kg_env, "KG_DATABASE_URL": f"sqlite:///{missing}"},
                     "kg logs --profile ") == []
    assert not missing.parent.exists()


def test_complete_profile_names_directly(kg_env, db: Database) -> None:
    import click

    from kg.cli.context import complete_profile_names

    ctx = click.Context(click.Command("x"))
    param = click.Option(["--profile"])
    assert complete_profile_names(ctx, param, "") == ["default"]
    assert complete_profile_names(ctx, param, "z") == []


# -- signals and entry points -----------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import sys, time
    import click
    from kg.cli import main as m
    try:
        from kg.errors import Interrupted
    except ImportError:  # where the ingest engine keeps it
        from kg.extraction.ingest import Interrupted

    @m.cli.command()
    @click.option("--explain", is_flag=True)
    def wait(explain):
        print("ready", flush=True)
        try:
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            if explain:
                raise Interrupted("interrupted; resume with `kg ingest --resume 7`") from None
            raise

    sys.argv = ["kg", *sys.argv[1:]]
    m.main()
""")


def _signalled(tmp_path: Path, sig: signal.Signals, *args: str) -> tuple[int, str]:
    script = tmp_path / "waiting_kg.py"
    script.write_text(SCRIPT, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), "wait", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        pytest.fail(proc.communicate()[1])
    time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_signals_end_with_one_line(tmp_path: Path, sig: signal.Signals, code: int,
                                   word: str) -> None:
    returncode, err = _signalled(tmp_path, sig)
    assert (returncode, err) == (code, f"error: {word}\n")


@pytest.mark.slow
def test_sigterm_keeps_the_message_of_the_interrupted_command(tmp_path: Path) -> None:
    returncode, err = _signalled(tmp_path, signal.SIGTERM, "--explain")
    assert returncode == 143
    assert err == "error: interrupted; resume with `kg ingest --resume 7`\n"


@pytest.mark.slow
def test_python_dash_m_kg_cli(tmp_path: Path) -> None:
    env = {**os.environ, "KG_HOME": str(tmp_path / "home")}
    env.pop("KG_DATABASE_URL", None)
    version = subprocess.run([sys.executable, "-m", "kg.cli", "--version"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.startswith("kg, version")
    listed = subprocess.run([sys.executable, "-m", "kg.cli", "concepts", "list", "--json"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_help_lists_every_command(kg) -> None:
    result = kg("--help")
    assert result.exit_code == 0
    for name in ("admin", "concepts", "db", "eval", "ingest", "logs", "models", "runs",
                 "vocab"):
        assert f"  {name} " in result.stdout, name
    assert "_KG_COMPLETE=bash_source kg" in result.stdout


@pytest.mark.parametrize("args", [
    ["runs", "show", "9223372036854775808"],
    ["runs", "diff", "1", "99999999999999999999999"],
    ["ingest", "--resume", "9223372036854775808"],
    ["export", "--run", "9223372036854775808", "-o", "x.graphml"],
    ["logs", "--chunk", "9223372036854775808"],
    ["curation", "undo", "9223372036854775808"],
    ["concepts", "list", "--limit", "-1"],
])
def test_numbers_beyond_the_database_range_are_one_line(kg, args: list[str]) -> None:
    """Issue 19: ids past BIGINT overflowed in the driver with a traceback."""
    result = kg(*args)
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
