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
from sqlalchemy import CheckConstraint, text

from kg.db import Database
from kg.db.models import ExtractionProfile
from kg.errors import UsageError
from kg.profiles import storage
from kg.profiles.fields import CLEARABLE, SETTINGS, Setting
from kg.profiles.settings import (
    DECLARED,
    FIELDS,
    OUTPUT_SETTINGS,
    PROVIDER_SPECIFIC_SETTINGS,
    DescriptionMode,
    GroundingMode,
    ProfileSettings,
    ProviderSettings,
    ThinkingMode,
    output_settings,
)
from kg.profiles.views import snapshot as profile_snapshot
from kg.providers import ProviderSpec, registry
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
    assert tuple(SETTINGS) == FIELDS == tuple(ProfileSettings.model_fields)
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


def _just_outside(setting: Setting) -> list[str]:
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
    snap = profile_snapshot(settings)
    old_keys = {"profile", "revision", "provider", "model", "base_url", "temperature",
                "thinking_mode", "context_window", "max_output_tokens", "max_parallel", "at"}
    assert old_keys <= set(snap) and set(FIELDS) <= set(snap)
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
    monkeypatch.delenv("TEST_UNSET_API_KEY", raising=False)
    result = kg("admin", "extraction", "set", "--profile", "v", "--provider", "vllm",
                "--model", "m", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                "--api-key-env", "TEST_UNSET_API_KEY", "--activate")
    assert result.exit_code == 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("warning: ")
    assert "TEST_UNSET_API_KEY" in result.stderr
    preflight = kg("admin", "extraction", "test")
    assert preflight.exit_code == 1 and preflight.stdout.count("\n") == 1
    assert "$TEST_UNSET_API_KEY" in preflight.stdout and "is not set" in preflight.stdout
    monkeypatch.setenv("TEST_UNSET_API_KEY", "value-of-key")
    quiet = kg("admin", "extraction", "set", "--api-key-env", "TEST_UNSET_API_KEY",
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
                    storage.set_profile(session, {"provider": "ollama", "model": "m"},
                                        name=name, activate=True, by="t")
                else:
                    storage.use_profile(session, name, by="t")
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


# -- derived from the declaration -----------------------------------------------------------------

def test_every_setting_declares_what_it_does() -> None:
    assert set(DECLARED) == set(FIELDS)
    assert set(OUTPUT_SETTINGS) >= {"provider", "model", "temperature", "top_p",
                                    "thinking_mode", "context_window", "max_output_tokens"}
    assert set(PROVIDER_SPECIFIC_SETTINGS) == {"gpu_layers", "num_threads", "keep_alive"}
    settings = ProviderSettings(profile_name="p", revision=1, provider="ollama", model="m")
    recorded = output_settings(settings)
    assert tuple(recorded) == OUTPUT_SETTINGS and json.loads(json.dumps(recorded)) == recorded


def test_clearable_settings_are_the_optional_ones_over_http_too() -> None:
    from kg.server.routes_profiles import _updates, router  # the server extra

    optional = {n for n, info in ProfileSettings.model_fields.items()
                if not info.is_required() and info.default is None}
    assert set(CLEARABLE) == optional and "fallback_profile" in CLEARABLE
    assert _updates({"fallback_profile": None, "keep_alive": None}) == (
        {"fallback_profile": "", "keep_alive": ""}, False)
    with pytest.raises(UsageError, match="model cannot be cleared"):
        _updates({"model": None})
    put = next(r for r in router.routes if getattr(r, "methods", None) == {"PUT"})
    assert ", ".join(CLEARABLE) in str(getattr(put, "description", ""))


def test_choice_checks_are_the_enums_in_the_same_sql(db: Database) -> None:
    checks = {c.name: str(c.sqltext) for c in ExtractionProfile.__table__.constraints
              if isinstance(c, CheckConstraint)}
    assert checks["ck_profile_thinking_mode"] == (
        "thinking_mode IN ('off', 'low', 'medium', 'high')")
    assert checks["ck_profile_descriptions"] == "descriptions IN ('generate', 'evidence', 'off')"
    assert checks["ck_profile_grounding"] == "grounding IN ('on', 'off')"
    live = _check_constraints(db)  # what the migrations created
    for name, enum in (("descriptions", DescriptionMode), ("grounding", GroundingMode)):
        assert set(re.findall(r"'(\w+)'", live[f"ck_profile_{name}"])) == {m.value for m in enum}


# -- settings only some providers use -------------------------------------------------------------

def test_each_builtin_provider_declares_the_settings_it_sends() -> None:
    sent = {"ollama": {"gpu_layers", "num_threads", "keep_alive"},
            "llamacpp": {"gpu_layers", "num_threads"}, "vllm": set(), "openai": set()}
    assert {s.name: set(s.settings) for s in registry.specs() if s.name in sent} == sent


@pytest.mark.parametrize(("spec", "needle"), [
    ({"settings": frozenset({"temperature"})}, "only provider-specific settings"),
    ({"defaults": {"keep_alive": "5m"}}, "gives a default for keep_alive"),
])
def test_a_spec_may_only_name_provider_specific_settings(spec: dict, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        registry.register(ProviderSpec(name="badspec", factory=lambda s, _d: None,  # type: ignore
                                       summary="x", **spec))
    assert not registry.is_registered("badspec")


@pytest.mark.parametrize(("create", "args", "needle"), [
    ([], ["--keep-alive", "5m"], "provider llamacpp ignores keep_alive (used by ollama); "
                                 "leave out --keep-alive"),
    (["--profile", "v", "--provider", "vllm", "--model", "m"], ["--profile", "v", "--gpu-layers",
     "10"], "provider vllm ignores gpu_layers (used by ollama, llamacpp)"),
    ([], ["--profile", "o2", "--provider", "openai", "--model", "m", "--num-threads", "4"],
     "provider openai ignores num_threads"),
    ([], ["--provider", "vllm", "--model", "m", "--keep-alive", "1h"],
     "provider vllm ignores keep_alive"),
])
def test_a_setting_the_provider_ignores_is_refused_naming_both(
    kg, db: Database, create: list[str], args: list[str], needle: str
) -> None:
    if create:
        assert kg("admin", "extraction", "set", *create).exit_code == 0
    before = snapshot(db)
    result = kg("admin", "extraction", "set", *args)
    assert result.exit_code == 2, result.stdout
    assert needle in result.stderr and "--provider" in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert snapshot(db) == before


def test_stored_values_a_new_provider_ignores_are_kept_with_a_warning(kg, db: Database) -> None:
    assert kg("admin", "extraction", "set", "--profile", "o", "--provider", "ollama", "--model",
              "m", "--keep-alive", "30m", "--gpu-layers", "20").exit_code == 0
    moved = kg("admin", "extraction", "set", "--profile", "o", "--provider", "vllm",
               "--model", "Qwen/Qwen3-8B")
    assert moved.exit_code == 0, moved.stderr
    warnings = moved.stderr.splitlines()
    assert warnings == ["warning: provider vllm ignores gpu_layers (kept: 20)",
                        "warning: provider vllm ignores keep_alive (kept: 30m); clear it with "
                        "--keep-alive ''"]
    shown = json.loads(kg("admin", "extraction", "show", "--profile", "o", "--json").stdout)
    assert (shown["provider"], shown["keep_alive"], shown["gpu_layers"]) == ("vllm", "30m", 20)
    # Later changes neither warn nor fail over them; clearing one is allowed.
    quiet = kg("admin", "extraction", "set", "--profile", "o", "--temperature", "0.3")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    cleared = kg("admin", "extraction", "set", "--profile", "o", "--keep-alive", "")
    assert cleared.exit_code == 0 and "keep_alive: 30m -> -" in cleared.stdout
    assert json.loads(kg("admin", "extraction", "show", "--profile", "o", "--json")
                      .stdout)["keep_alive"] is None


def test_api_key_env_takes_only_declared_key_variables(kg, monkeypatch) -> None:
    for name in ("KG_DATABASE_URL", "KG_HOME", "DATABASE_URL", "PGPASSWORD", "PATH"):
        result = kg("admin", "extraction", "set", "--api-key-env", name)
        assert result.exit_code == 2, name
        assert f"{name} is a variable kg or the system itself uses" in result.stderr
        assert "Traceback" not in result.stderr
    refused = kg("admin", "extraction", "set", "--api-key-env", "CORP_SECRET")
    assert refused.exit_code == 2
    assert "CORP_SECRET is not an allowed key variable (allowed: *_API_KEY, *_TOKEN)" in \
        refused.stderr and "KG_API_KEY_VARS=CORP_SECRET" in refused.stderr
    monkeypatch.setenv("KG_API_KEY_VARS", "CORP_SECRET, OTHER_*")
    monkeypatch.setenv("CORP_SECRET", "value-of-key")
    assert kg("admin", "extraction", "set", "--api-key-env", "CORP_SECRET").exit_code == 0
    # The operator's extension can never reach kg's own variables.
    monkeypatch.setenv("KG_API_KEY_VARS", "KG_*")
    assert kg("admin", "extraction", "set", "--api-key-env", "KG_DATABASE_URL").exit_code == 2
