"""Analytics and prices: bad prices refused, bad stored rows survived, tables that fit."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import text

from kg.db import Database
from tests.test_operations import seed_call


def _prices(db: Database) -> list[tuple]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM model_prices ORDER BY id"))]


@pytest.mark.parametrize(("args", "flag"), [
    (["--prompt", "inf", "--completion", "1"], "--prompt"),
    (["--prompt", "nan", "--completion", "1"], "--prompt"),
    (["--prompt", "1", "--completion", "-inf"], "--completion"),
    (["--prompt", "-0.5", "--completion", "1"], "--prompt"),
    (["--prompt", "1", "--completion", "1e12"], "--completion"),
])
def test_bad_prices_are_refused_with_one_line(kg, db: Database, args: list[str],
                                              flag: str) -> None:
    kg("admin", "prices", "set", "m", "--prompt", "1", "--completion", "2")
    before = _prices(db)
    result = kg("admin", "prices", "set", "m", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {flag} must be a price") and (
        result.stderr.count("\n") == 1)
    assert _prices(db) == before


def test_a_bad_price_stored_by_hand_does_not_break_analytics(kg, db: Database) -> None:
    seed_call(db, prompt_tokens=1_000_000, completion_tokens=1_000_000)
    kg("admin", "prices", "set", "ref", "--prompt", "1", "--completion", "1")
    # What an older kg let through: SQLite keeps Infinity, PostgreSQL's NUMERIC keeps NaN.
    bad = "'Infinity'" if db.dialect == "postgresql" else "9e999"
    bad = "'NaN'" if db.dialect == "postgresql" else bad
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO model_prices (name, prompt_per_million, completion_per_million, "
            f"currency, note, updated_at) VALUES ('qwen3:8b', {bad}, 1, 'USD', '', "
            "CURRENT_TIMESTAMP)"))
    for output in ("--json", "--csv"):
        result = kg("admin", "extraction", "analytics", "--compare-to", "ref", output)
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr
    [row] = json.loads(kg("admin", "extraction", "analytics", "--compare-to", "ref",
                          "--json").stdout)
    assert (row["cost"], row["cost_at_ref"]) == (0.0, 2.0)  # the bad price counts as unpriced
    table = kg("admin", "extraction", "analytics")
    assert table.exit_code == 0
    listed = kg("admin", "prices", "list", "--json")
    assert listed.exit_code == 0 and "qwen3:8b" in listed.stdout


def test_analytics_table_fits_100_columns_and_machine_output_keeps_everything(
    kg, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, model in enumerate(["qwen3:8b", "hf.co/unsloth/Qwen3-30B-A3B-Instruct-GGUF:Q4_K_M",
                               "llama3.2:3b"]):
        seed_call(db, model=model, prompt_tokens=123_456 * (i + 1), completion_tokens=7890,
                  thinking_tokens=12, latency_ms=1234.5, eval_ms=900.0)
        seed_call(db, model=model, attempt=2, status="invalid", error_kind="not_json",
                  latency_ms=99.0)
        seed_call(db, model=model, attempt=3, status="error", error_kind="ServerBusy")
    kg("admin", "prices", "set", "gpt-4o", "--prompt", "2.5", "--completion", "10")
    monkeypatch.setenv("COLUMNS", "100")
    result = kg("admin", "extraction", "analytics", "--compare-to", "gpt-4o")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 100, "\n".join(lines)
    assert "qwen3:8b" in result.stdout and "SAVINGS" in result.stdout
    everything = json.loads(kg("admin", "extraction", "analytics", "--compare-to", "gpt-4o",
                               "--json").stdout)
    assert len(everything) == 3 and {"retries", "prompt_tokens", "thinking_tokens",
                                     "cost_at_gpt_4o", "latency_p95_ms"} <= set(everything[0])
    table = list(csv.DictReader(io.StringIO(kg("admin", "extraction", "analytics",
                                                "--csv").stdout)))
    assert set(table[0]) == set(everything[0]) - {"cost_at_gpt_4o", "savings"}
    assert table[0]["failures"] == "ServerBusy=1;not_json=1"
    lines_jsonl = kg("admin", "extraction", "analytics", "--jsonl").stdout.splitlines()
    assert len(lines_jsonl) == 3


def test_list_commands_share_the_output_options(kg, db: Database) -> None:
    kg("admin", "prices", "set", "m", "--prompt", "1", "--completion", "2", "--note",
       "line one\nline two")
    prices = list(csv.DictReader(io.StringIO(kg("admin", "prices", "list", "--csv").stdout)))
    assert prices[0]["note"] == "line one\nline two"
    profiles = kg("admin", "extraction", "list", "--jsonl").stdout.splitlines()
    assert json.loads(profiles[0])["name"] == "default"
    kg("admin", "extraction", "set", "--temperature", "0.3")
    history = kg("admin", "extraction", "history", "--csv").stdout
    assert history.startswith("changed_at,profile,revision,field,old,new,by")
