"""Profile settings declared once: bounds = database CHECKs, generated flags, messages, safety."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from kg import profiles
from kg.db import Database
from kg.profiles import SETTINGS, ProfileSettings, ProviderSettings, ThinkingMode
from tests.test_admin import snapshot
from tests.test_providers import free_port

# -- the model's bounds are the database's CHECKs -------------------------------------------------

OPS = {">=", ">", "<=", "<"}


def _check_constraints(db: Database) -> dict[str, str]:
    """name -> CHECK text of extraction_profiles, read from the live database."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            found = conn.execute(text(
                "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_class t ON c.conrelid = t.oid "
                "WHERE t.relname = 'extraction_profiles' AND c.contype = 'c'")).all()
            return {name: definition for name, definition in found}
        sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'extraction_profiles'")).scalar_one()
    pieces = re.split(r"\bCONSTRAINT\s+", sql)[1:]
    return {p.split()[0]: p for p in pieces if re.match(r"\w+\s+CHECK", p)}


def _comparisons(check: str) -> list[tuple[str, str, float]]:
    """(column, operator, number) for every `column OP number` in a CHECK's text."""
    plain = re.sub(r"::[a-z ]+", "", check)  # PostgreSQL's casts: (0)::double precision
    return [(col, op, float(num)) for col, op, num in
            re.findall(r"\b(\w+)\)?\s*(>=|<=|>|<)\s*\(*\s*'?(-?\d+(?:\.\d+)?)", plain)
            if not col.isdigit()]


def _model_comparisons(name: str) -> set[tuple[str, str, float]]:
    bounds = SETTINGS[name].bounds
    found = set()
    if bounds.low is not None:
        found.add((name, ">=" if bounds.low_inclusive else ">", bounds.low))
    if bounds.high is not None:
        found.add((name, "<=" if bounds.high_inclusive else "<", bounds.high))
    return found


def test_every_numeric_bound_of_the_model_is_the_database_check(db: Database) -> None:
    checks = _check_constraints(db)
    assert "ck_profile_provider" not in checks  # provider names: the registry (migration 0005)
    in_db: set[tuple[str, str, float]] = set()
    for definition in checks.values():
        in_db |= {c for c in _comparisons(definition) if c[0] in SETTINGS}
    numeric = [s.name for s in SETTINGS.values() if not s.is_text]
    in_model = set().union(*(_model_comparisons(n) for n in numeric))
    assert in_model == {c for c in in_db if c[0] in numeric}
    assert len(in_model) >= 14  # temperature .. timeout_s: both ends where there are two
    # Text settings: the CHECKs on lengths (length(model) >= 1) are bounds of the model too.
    lengths = re.findall(r"length\(\(?(\w+)\)?(?:::text)?\)\s*(>=|<=)\s*(\d+)",
                         " ".join(checks.values()))
    for column, op, number in lengths:
        if column in SETTINGS:
            assert (column, op, float(number)) in _model_comparisons(column)
    modes = next(d for d in checks.values() if "thinking_mode" in d)
    assert set(re.findall(r"'(\w+)'", modes)) == {m.value for m in ThinkingMode}


def test_settings_are_read_from_the_model() -> None:
    assert tuple(SETTINGS) == profiles.FIELDS == tuple(ProfileSettings.model_fields)
    assert SETTINGS["timeout_s"].flag == "--timeout"
    assert SETTINGS["temperature"].rule() == "between 0 and 2"
    assert SETTINGS["top_p"].rule() == "above 0 and at most 1"
    assert SETTINGS["gpu_layers"].rule() == "-1 or more"
    assert SETTINGS["model"].rule() == "1 to 512 characters"
    assert SETTINGS["thinking_mode"].rule() == "one of off, low, medium, high"
    assert SETTINGS["num_threads"].nullable and not SETTINGS["model"].nullable
    # The provider receives the same model, plus where the settings came from.
    assert set(ProfileSettings.model_fields) < set(ProviderSettings.model_fields)


def test_generated_flags_carry_type_description_and_bounds(kg) -> None:
    help_text = " ".join(kg("admin", "extraction", "set", "--help").stdout.split())
    for setting in SETTINGS.values():
        assert setting.flag in help_text
        assert setting.description.rstrip(".") in help_text
        rule = setting.rule()
        if (rule and not setting.is_text) or setting.choices:
            assert f"Must be {rule}." in help_text
    assert "--temperature FLOAT" in help_text and "--max-parallel INTEGER" in help_text


def _just_outside(setting: profiles.Setting) -> list[str]:
    bounds, step = setting.bounds, 1 if setting.kind is int else 0.5
    values = []
    if bounds.low is not None:
        values.append(bounds.low - (step if bounds.low_inclusive else 0))
    if bounds.high is not None:
        values.append(bounds.high + (step if bounds.high_inclusive else 0))
    return [str(int(v)) if setting.kind is int else str(v) for v in values]


NUMERIC = [s for s in SETTINGS.values() if not s.is_text]
CASES = [(s.name, v) for s in NUMERIC for v in _just_outside(s)]


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v}" for n, v in CASES])
def test_each_bound_gives_its_one_line_message(kg, db: Database, name: str, value: str) -> None:
    before = snapshot(db)
    result = kg("admin", "extraction", "set", SETTINGS[name].flag, value)
    assert result.exit_code == 2
    assert f"{name} must be {SETTINGS[name].rule()}" in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert snapshot(db) == before


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused(kg, db: Database, value: str) -> None:
    before = snapshot(db)
    result = kg("admin", "extraction", "set", "--temperature", value)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "temperature must be" in result.stderr
    assert snapshot(db) == before


# -- snapshot -------------------------------------------------------------------------------------

def test_snapshot_has_every_setting_and_no_secret() -> None:
    settings = ProviderSettings(profile_name="p", revision=3, provider="vllm", model="m",
                                base_url="http://gpu:8000/v1", api_key_env="VLLM_API_KEY")
    snap = profiles.snapshot(settings)
    old_keys = {"profile", "revision", "provider", "model", "base_url", "temperature",
                "thinking_mode", "context_window", "max_output_tokens", "max_parallel", "at"}
    assert old_keys <= set(snap) and set(profiles.FIELDS) <= set(snap)
    assert (snap["profile"], snap["revision"], snap["api_key_env"]) == ("p", 3, "VLLM_API_KEY")
    json.dumps(snap)  # stored in a JSON column


# -- credentials in URLs, API key variables -------------------------------------------------------

def test_credentials_in_base_url_are_refused_and_never_printed(kg, db: Database) -> None:
    before = snapshot(db)
    for url in ("http://ops:hunter2@gpu:8000/v1", "https://hunter2@gpu/v1"):
        result = kg("admin", "extraction", "set", "--profile", "v", "--provider", "vllm",
                    "--model", "m", "--base-url", url)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
        assert "--api-key-env" in result.stderr
        assert "hunter2" not in result.stderr + result.stdout
    assert snapshot(db) == before


def test_credentials_written_before_are_masked_everywhere(kg, db: Database) -> None:
    port = free_port()
    url = f"http://ops:hunter2@127.0.0.1:{port}/v1"
    assert kg("admin", "extraction", "set", "--profile", "v", "--provider", "vllm", "--model",
              "m", "--base-url", f"http://127.0.0.1:{port}/v1", "--activate").exit_code == 0
    with db.engine.begin() as conn:  # as an older kg stored it
        conn.execute(text("UPDATE extraction_profiles SET base_url = :u WHERE name = 'v'"),
                     {"u": url})
        conn.execute(text("UPDATE profile_changes SET new_value = :u WHERE field = 'base_url'"),
                     {"u": url})
    outputs = [kg("admin", "extraction", *args) for args in (
        ["show"], ["show", "--json"], ["list"], ["list", "--json"], ["history"],
        ["history", "--json"], ["test"], ["test", "--json"])]
    for out in outputs:
        assert "hunter2" not in out.stdout + out.stderr
    assert "***@127.0.0.1" in outputs[1].stdout
    assert outputs[6].exit_code == 1 and "***@127.0.0.1" in outputs[6].stdout


def test_unset_api_key_variable_warns_on_set_and_stops_the_preflight(
    kg, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KG_TEST_UNSET_KEY", raising=False)
    result = kg("admin", "extraction", "set", "--profile", "v", "--provider", "vllm",
                "--model", "m", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                "--api-key-env", "KG_TEST_UNSET_KEY", "--activate")
    assert result.exit_code == 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("warning: ")
    assert "KG_TEST_UNSET_KEY" in result.stderr
    preflight = kg("admin", "extraction", "test")
    assert preflight.exit_code == 1 and preflight.stdout.count("\n") == 1
    assert "$KG_TEST_UNSET_KEY" in preflight.stdout and "is not set" in preflight.stdout
    monkeypatch.setenv("KG_TEST_UNSET_KEY", "value-of-key")
    quiet = kg("admin", "extraction", "set", "--api-key-env", "KG_TEST_UNSET_KEY",
               "--max-retries", "3")
    assert quiet.exit_code == 0 and quiet.stderr == ""


# -- empty values and --by ------------------------------------------------------------------------

def test_empty_value_clears_a_setting_that_may_be_empty(kg, db: Database) -> None:
    assert kg("admin", "extraction", "set", "--profile", "o", "--provider", "ollama", "--model",
              "m", "--base-url", "http://gpu:11434", "--num-threads", "8").exit_code == 0
    cleared = kg("admin", "extraction", "set", "--profile", "o", "--keep-alive", "",
                 "--base-url", "", "--num-threads", "")
    assert cleared.exit_code == 0, cleared.stderr
    assert "keep_alive: 10m -> -" in cleared.stdout and "num_threads: 8 -> auto" in cleared.stdout
    shown = json.loads(kg("admin", "extraction", "show", "--profile", "o", "--json").stdout)
    assert (shown["keep_alive"], shown["base_url"], shown["num_threads"]) == (None, None, None)


@pytest.mark.parametrize(("args", "needle"), [
    (["--profile", "", "--temperature", "0.5"], "--profile must name a profile"),
    (["--model", ""], "model must be 1 to 512 characters"),
    (["--provider", ""], "provider must be one of"),
    (["--thinking-mode", ""], "thinking_mode must be one of"),
    (["--profile", "v", "--provider", "vllm", "--model", "m", "--base-url", ""],
     "needs --base-url"),
    (["--temperature", "0.5", "--by", "eve\nadmin"], "--by must be one line"),
    (["--temperature", "0.5", "--by", "a\x1b[31mred"], "--by must be one line"),
    (["--temperature", "0.5", "--by", ""], "--by must be one line"),
    (["--provider", "llamacpp", "--thinking-mode", "low"], "cannot think"),
])
def test_empty_or_unsafe_values_are_refused(kg, db: Database, args: list[str],
                                            needle: str) -> None:
    before = snapshot(db)
    result = kg("admin", "extraction", "set", *args)
    assert result.exit_code == 2, result.stdout
    assert needle in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(db) == before


def test_by_is_checked_by_use_and_delete_and_empty_profile_by_show(kg, db: Database) -> None:
    kg("admin", "extraction", "set", "--profile", "b", "--provider", "ollama", "--model", "m")
    before = snapshot(db)
    for args in (["use", "b", "--by", "x\ny"], ["delete", "b", "--by", "x\ty"],
                 ["show", "--profile", ""], ["history", "--profile", ""]):
        result = kg("admin", "extraction", *args)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, args
    assert snapshot(db) == before


# -- concurrent activation ------------------------------------------------------------------------

def test_concurrent_set_activate_and_use_all_succeed(db: Database) -> None:
    """Six writers released at once by a barrier: each commits, one profile ends up active."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def activate(name: str, create: bool) -> None:
        try:
            barrier.wait()
            with db.session() as session:
                if create:
                    profiles.set_profile(session, {"provider": "ollama", "model": "m"},
                                         name=name, activate=True, by="t")
                else:
                    profiles.use_profile(session, name, by="t")
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    for create in (True, False):
        threads = [threading.Thread(target=activate, args=(f"p{i}", create)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with db.engine.connect() as conn:
            active = conn.execute(text(
                "SELECT count(*) FROM extraction_profiles WHERE active")).scalar_one()
            names = conn.execute(text("SELECT count(*) FROM extraction_profiles")).scalar_one()
        assert (active, names) == (1, 7)


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_six_concurrent_cli_activations_on_postgresql(kg_env: dict[str, str],
                                                       db: Database) -> None:
    env = {**os.environ, **kg_env}
    root = Path(__file__).resolve().parent.parent
    commands = [[sys.executable, "-m", "kg.cli", "admin", "extraction", "set", "--profile",
                 f"c{i}", "--provider", "ollama", "--model", "m", "--activate"] for i in range(6)]
    procs = [subprocess.Popen(c, env=env, cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [r for r in results if r[0] != 0] == []
    with db.engine.connect() as conn:
        assert conn.execute(text(
            "SELECT count(*) FROM extraction_profiles WHERE active")).scalar_one() == 1
        revisions = conn.execute(text(
            "SELECT count(DISTINCT profile_name) FROM profile_changes WHERE field = 'active'"
        )).scalar_one()
    assert revisions == 6
