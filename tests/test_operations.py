"""Operating the models: reload, preflight, listings, analytics, prices, recommend, compose."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from kg.db import Database
from kg.recommend import recommend
from tests.fakes import FakeModel, FakeOllama, FakeVLLM, Reply
from tests.test_ingest import use_server
from tests.test_providers import free_port

PROBE_REPLY = json.dumps({
    "concepts": [{"label": "Marie Curie", "description": "", "search_terms": [],
                  "quote": "Marie Curie"}],
    "relationships": []})


@pytest.fixture
def ollama():
    models = [FakeModel("qwen3:8b", ["completion", "thinking"], context_length=40960),
              FakeModel("llama3.2:3b", ["completion"], family="llama", context_length=4096)]
    with FakeOllama(models=models, responder=lambda b: Reply(PROBE_REPLY)) as server:
        yield server


def seed_call(db: Database, **values: object) -> None:
    row = {"run_id": None, "chunk_id": None, "attempt": 1, "provider": "ollama",
           "model": "qwen3:8b", "profile_name": "test", "profile_revision": 1, "status": "ok",
           "error_kind": None, "finish_reason": "stop", "prompt_tokens": 0,
           "completion_tokens": 0, "thinking_tokens": 0, "latency_ms": 100.0, "load_ms": None,
           "prompt_eval_ms": None, "eval_ms": None, "error": None, "response": None,
           "started_at": datetime(2026, 11, 1, 12, tzinfo=UTC), **values}
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO calls (run_id, chunk_id, attempt, provider, model, profile_name, "
            "profile_revision, status, error_kind, finish_reason, prompt_tokens, "
            "completion_tokens, thinking_tokens, latency_ms, load_ms, prompt_eval_ms, eval_ms, "
            "error, response, started_at) VALUES (:run_id, :chunk_id, :attempt, :provider, "
            ":model, :profile_name, :profile_revision, :status, :error_kind, :finish_reason, "
            ":prompt_tokens, :completion_tokens, :thinking_tokens, :latency_ms, :load_ms, "
            ":prompt_eval_ms, :eval_ms, :error, :response, :started_at)"), row)


def seed_run(db: Database) -> int:
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO runs (status, started_at, heartbeat_at, pid, host, profile_name, "
            "profiles_used, options, documents, chunks_total, chunks_ok, chunks_failed) VALUES "
            "('completed', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, 'h', 'test', '[]', '{}', "
            "1, 3, 2, 1)"))
        run_id = conn.execute(text("SELECT max(id) FROM runs")).scalar_one()
        conn.execute(text(
            "INSERT INTO documents (path, sha256, size_bytes, kind, status, chunk_count, "
            "created_at) VALUES ('/d.txt', 'x', 1, 'text', 'partial', 3, CURRENT_TIMESTAMP)"))
        doc = conn.execute(text("SELECT max(id) FROM documents")).scalar_one()
        for ordinal in range(3):
            conn.execute(text(
                "INSERT INTO chunks (document_id, ordinal, text, char_start, char_end, "
                "token_estimate) VALUES (:d, :o, 't', 0, 1, 1)"), {"d": doc, "o": ordinal})
    return int(run_id)


# -- reload ---------------------------------------------------------------------------------

def test_reload_unloads_previous_ollama_model_and_preloads_the_new(kg, db, ollama) -> None:
    use_server(kg, ollama.url, "ollama", "qwen3:8b")
    seed_call(db, model="llama3.2:3b")  # what ran last
    result = kg("admin", "extraction", "reload")
    assert result.exit_code == 0, result.stderr
    assert "unloaded llama3.2:3b" in result.stdout and "switch took" in result.stdout
    bodies = ollama.chat_bodies()
    assert bodies[0]["model"] == "llama3.2:3b" and bodies[0]["keep_alive"] == 0
    assert bodies[1]["model"] == "qwen3:8b" and bodies[1]["messages"] == []
    assert bodies[2]["model"] == "qwen3:8b" and bodies[2]["format"]["type"] == "object"
    status = json.loads(kg("models", "status", "--json").stdout)
    assert [m["name"] for m in status] == ["qwen3:8b"]


def test_reload_on_vllm_explains_and_checks_the_model(kg, db) -> None:
    with FakeVLLM(responder=lambda b: Reply(PROBE_REPLY)) as server:
        use_server(kg, server.base_url, "vllm", "Qwen/Qwen3-8B")
        ok = kg("admin", "extraction", "reload")
        assert ok.exit_code == 0 and "cannot switch" in ok.stdout
        kg("admin", "extraction", "set", "--model", "other/model")
        wrong = kg("admin", "extraction", "reload")
    assert wrong.exit_code == 4 and "not served" in wrong.stderr
    assert wrong.stderr.count("\n") == 1


# -- preflight ------------------------------------------------------------------------------

def test_preflight_passes_with_one_line_per_check(kg, db, ollama) -> None:
    use_server(kg, ollama.url, "ollama", "qwen3:8b", "--context-window", "8192")
    result = kg("admin", "extraction", "test", "--json")
    assert result.exit_code == 0, result.stdout
    checks = {c["check"]: c["status"] for c in json.loads(result.stdout)}
    assert checks == {"server": "ok", "model": "ok", "thinking": "ok", "context": "ok",
                      "schema": "ok", "speed": "ok"}
    human = kg("admin", "extraction", "test").stdout.splitlines()
    assert len(human) == 6 and all(line.startswith("OK") for line in human)


@pytest.mark.parametrize(("model", "extra", "failed", "needle"), [
    ("missing:1b", [], "model", "ollama pull missing:1b"),
    ("llama3.2:3b", ["--thinking-mode", "low"], "thinking", "--thinking-mode off"),
])
def test_preflight_failures(kg, db, ollama, model, extra, failed, needle) -> None:
    use_server(kg, ollama.url, "ollama", model, *extra)
    result = kg("admin", "extraction", "test", "--json")
    assert result.exit_code == 1
    last = json.loads(result.stdout)[-1]
    assert (last["check"], last["status"]) == (failed, "fail") and needle in last["detail"]


def test_preflight_unreachable_server(kg, db) -> None:
    use_server(kg, f"http://127.0.0.1:{free_port()}")
    result = kg("admin", "extraction", "test")
    assert result.exit_code == 1 and result.stdout.startswith("FAIL  server")


def test_preflight_warns_when_ollama_would_truncate(kg, db, ollama) -> None:
    use_server(kg, ollama.url, "ollama", "llama3.2:3b", "--context-window", "16384")
    checks = {c["check"]: c for c in json.loads(kg("admin", "extraction", "test",
                                                      "--json").stdout)}
    assert checks["context"]["status"] == "warn"
    assert "--context-window 4096" in checks["context"]["detail"]


def test_preflight_fails_when_the_schema_is_ignored(kg, db, ollama) -> None:
    use_server(kg, ollama.url)
    ollama.queue.append(Reply("Sure! Here are the concepts: Marie Curie, polonium."))
    result = kg("admin", "extraction", "test", "--json")
    assert result.exit_code == 1
    schema = next(c for c in json.loads(result.stdout) if c["check"] == "schema")
    assert schema["status"] == "fail"


# -- model listings -------------------------------------------------------------------------

def test_models_list_and_status_on_ollama_and_vllm(kg, db, ollama) -> None:
    use_server(kg, ollama.url)
    listed = json.loads(kg("models", "list", "--json").stdout)
    assert [(m["name"], m["active"]) for m in listed] == [("qwen3:8b", True),
                                                         ("llama3.2:3b", False)]
    assert listed[0]["parameter_size"] == "8.2B"
    assert json.loads(kg("models", "status", "--json").stdout) == []
    with FakeVLLM() as server:
        use_server(kg, server.base_url, "vllm", "Qwen/Qwen3-8B")
        served = json.loads(kg("models", "list", "--json").stdout)
    assert served == [{"name": "Qwen/Qwen3-8B", "size_gb": None, "active": True,
                       "max_model_len": 8192}]


def test_models_list_embedded_includes_files_under_kg_home(kg, db, kg_env) -> None:
    models = Path(kg_env["KG_HOME"]) / "models"
    models.mkdir(parents=True)
    (models / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    names = [m["name"] for m in json.loads(kg("models", "list", "--json").stdout)]
    assert names == ["smollm2", "tiny.gguf"]


# -- analytics ------------------------------------------------------------------------------

def test_analytics_agree_with_a_hand_computation(kg, db) -> None:
    run = seed_run(db)
    with db.engine.connect() as conn:
        c1, c2, c3 = conn.execute(text("SELECT id FROM chunks ORDER BY id")).scalars().all()
    # chunk 1: valid first try. chunk 2: invalid JSON, then valid. chunk 3: 503 twice.
    seed_call(db, run_id=run, chunk_id=c1, prompt_tokens=1000, completion_tokens=400,
              thinking_tokens=100, latency_ms=1000.0, eval_ms=500.0)
    seed_call(db, run_id=run, chunk_id=c2, status="invalid", error_kind="not_json",
              prompt_tokens=1200, completion_tokens=300, latency_ms=2000.0, eval_ms=1000.0)
    seed_call(db, run_id=run, chunk_id=c2, attempt=2, prompt_tokens=1500, completion_tokens=500,
              latency_ms=3000.0, eval_ms=1000.0)
    seed_call(db, run_id=run, chunk_id=c3, status="error", error_kind="ServerBusy",
              latency_ms=5.0)
    seed_call(db, run_id=run, chunk_id=c3, attempt=2, status="error", error_kind="ServerBusy",
              latency_ms=5.0)
    seed_call(db, model="old-model", prompt_tokens=999_999, started_at=datetime(2025, 1, 1,
                                                                                 tzinfo=UTC))
    assert kg("admin", "prices", "set", "qwen3:8b", "--prompt", "0.10", "--completion",
              "0.40").exit_code == 0
    assert kg("admin", "prices", "set", "cloud-ref", "--prompt", "2.50", "--completion",
              "10.00").exit_code == 0
    result = kg("admin", "extraction", "analytics", "--since", "2026-01-01",
                "--compare-to", "cloud-ref", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    # prompt 3700, output 400+100+300+500 = 1300
    # cost = 3700*0.10/1e6 + 1300*0.40/1e6 = 0.00037 + 0.00052 = 0.00089 -> 0.00
    # cloud = 3700*2.5/1e6 + 1300*10/1e6 = 0.00925 + 0.013 = 0.02225 -> 0.02
    assert row == {
        "model": "qwen3:8b", "chunks": 3, "calls": 5, "success_rate": 0.6667,
        "valid_first_try_rate": round(1 / 3, 4), "retries": 2,
        "failures": {"ServerBusy": 2, "not_json": 1},
        "prompt_tokens": 3700, "completion_tokens": 1200, "thinking_tokens": 100,
        "tokens_per_s": 520.0,  # 1300 output tokens over 2.5 s of eval time
        "seconds": 6.0,  # 1 + 2 + 3 s of the calls that answered (the 503s have no latency)
        "latency_p50_ms": 2000.0, "latency_p95_ms": 2900.0,
        "cost": 0.0, "cost_at_cloud_ref": 0.02, "savings": 0.02,
        "fallback_rate": 0.0, "fallback_calls": 0, "fallback_cost": 0.0, "cache_hit_rate": 0.0,
    }
    everything = json.loads(kg("admin", "extraction", "analytics", "--by", "model",
                               "--json").stdout)
    assert {r["model"] for r in everything} == {"qwen3:8b", "old-model"}


def test_analytics_cost_to_the_cent_at_scale(kg, db) -> None:
    for _ in range(3):
        seed_call(db, prompt_tokens=1_234_567, completion_tokens=345_678, thinking_tokens=1)
    kg("admin", "prices", "set", "qwen3:8b", "--prompt", "0.15", "--completion", "0.60")
    kg("admin", "prices", "set", "gpt-ref", "--prompt", "2.5", "--completion", "10")
    [row] = json.loads(kg("admin", "extraction", "analytics", "--by", "provider",
                          "--compare-to", "gpt-ref", "--json").stdout)
    # ours: 3*(1234567*0.15 + 345679*0.60)/1e6 = 3*(0.18518505 + 0.2074074) = 1.17777735
    # ref:  3*(1234567*2.5 + 345679*10)/1e6 = 3*(3.0864175 + 3.45679) = 19.6296225
    assert (row["provider"], row["cost"], row["cost_at_gpt_ref"], row["savings"]) == (
        "ollama", 1.18, 19.63, 18.45)


def test_analytics_csv_days_and_bad_input(kg, db) -> None:
    seed_call(db, prompt_tokens=10)
    seed_call(db, prompt_tokens=20, started_at=datetime(2026, 11, 2, 1, tzinfo=UTC))
    out = kg("admin", "extraction", "analytics", "--by", "day", "--csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["day"], r["prompt_tokens"]) for r in rows] == [("2026-11-01", "10"),
                                                             ("2026-11-02", "20")]
    for args, needle in [(["--since", "yesterday"], "--since must be a date"),
                         (["--compare-to", "nope"], "no price named 'nope'"),
                         (["--since", "2026-01-01", "--last-30-days"], "not both")]:
        bad = kg("admin", "extraction", "analytics", *args)
        assert bad.exit_code == 2 and needle in bad.stderr, (args, bad.stderr)


def test_prices_set_list_delete(kg, db) -> None:
    assert kg("admin", "prices", "set", "m", "--prompt", "-1", "--completion", "1").exit_code == 2
    kg("admin", "prices", "set", "m", "--prompt", "1", "--completion", "2", "--note", "list")
    kg("admin", "prices", "set", "m", "--prompt", "3", "--completion", "4")
    listed = json.loads(kg("admin", "prices", "list", "--json").stdout)
    assert [(p["name"], p["prompt_per_million"], p["completion_per_million"])
            for p in listed] == [("m", 3.0, 4.0)]
    assert kg("admin", "prices", "delete", "m").exit_code == 0
    assert kg("admin", "prices", "delete", "m").exit_code == 2


# -- recommend ------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "vram", "expected"), [
    ("mistral:7b", "24GB", "FP16"),
    ("mistral:7b", "16GB", "8-bit (Q8_0)"),
    ("mistral:7b", "8GB", "4-bit (Q4_K_M)"),
    ("qwen3:8b", "24GB", "FP16"),
    ("qwen3:8b", "12GB", "8-bit (Q8_0)"),
    ("qwen3:8b", "8GB", "4-bit (Q4_K_M)"),
    ("qwen3:14b", "40GB", "FP16"),
    ("qwen3:14b", "24GB", "8-bit (Q8_0)"),
    ("qwen3:14b", "12GB", "4-bit (Q4_K_M)"),
    ("llama3.1:70b", "96GB", "8-bit (Q8_0)"),
    ("llama3.1:70b", "80GB", "4-bit (Q4_K_M)"),
    ("llama3.1:70b", "64GB", "4-bit (Q4_K_M)"),
])
def test_recommend_fits(model: str, vram: str, expected: str) -> None:
    data = recommend(model, params=None, vram=vram, context_window=8192)
    assert data["recommended"] == expected and data["gpu_layers"] == -1


def test_recommend_offload_cpu_tags_and_cli(kg, db) -> None:
    offload = recommend("llama3.1:70b", params=None, vram="24GB", context_window=8192)
    assert "CPU offload" in offload["verdict"] and 0 < offload["gpu_layers"] < 80
    assert offload["ollama_pull"] == "llama3.1:70b-instruct-q4_K_M"
    seven = recommend("mystery", params="7B", vram=None, context_window=4096)
    assert seven["vram_gb"] is None and "nvidia-smi" in seven["vram_source"]
    assert seven["recommended"] == "4-bit (Q4_K_M)" and seven["gpu_layers"] == 0
    kv_small = recommend("qwen3:14b", params=None, vram="24GB", context_window=4096)
    kv_big = recommend("qwen3:14b", params=None, vram="24GB", context_window=32768)
    assert kv_big["options"][0]["kv_cache_gb"] == 8 * kv_small["options"][0]["kv_cache_gb"]
    out = kg("admin", "extraction", "recommend", "--model", "qwen3:14b", "--vram", "24GB")
    assert "ollama pull qwen3:14b-q8_0" in out.stdout
    bad = kg("admin", "extraction", "recommend", "--model", "x", "--params", "lots")
    assert bad.exit_code == 2 and "--params must look like" in bad.stderr


def test_evaluation_calls_count_as_calls_not_chunks(kg, db) -> None:
    seed_call(db, status="invalid", error_kind="mostly_invalid", prompt_tokens=5)
    seed_call(db, attempt=2, prompt_tokens=7)
    [row] = json.loads(kg("admin", "extraction", "analytics", "--json").stdout)
    assert (row["chunks"], row["calls"], row["success_rate"], row["prompt_tokens"]) == (
        0, 2, None, 12)
    assert row["failures"] == {"mostly_invalid": 1}


# -- replies the backend sent with 200 but kg cannot read ----------------------------------------

def test_preflight_reports_an_unreadable_show_reply_in_one_line(kg, db, ollama) -> None:
    use_server(kg, ollama.url)
    ollama.show_body = {"modelfile": "FROM x", "capabilities": ["completion"]}  # no model_info
    result = kg("admin", "extraction", "test")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    [failed] = result.stdout.splitlines()
    assert failed.startswith("FAIL  server") and "model_info" in failed


@pytest.mark.parametrize("raw", ["not json", '{"model": "qwen3:8b", "message": 3}'])
def test_preflight_reports_an_unreadable_chat_reply_in_one_line(kg, db, ollama, raw) -> None:
    use_server(kg, ollama.url)
    ollama.queue.append(Reply(raw=raw))
    result = kg("admin", "extraction", "test", "--json")
    assert result.exit_code == 1
    last = json.loads(result.stdout)[-1]
    assert (last["check"], last["status"]) == ("schema", "fail")
    assert "cannot read" in last["detail"] and "\n" not in last["detail"]


def test_preflight_on_vllm_reports_an_unreadable_reply(kg, db) -> None:
    with FakeVLLM() as server:
        use_server(kg, server.base_url, "vllm", "Qwen/Qwen3-8B")
        server.queue.append(Reply(raw="<html>gateway</html>", raw_type="text/html"))
        result = kg("admin", "extraction", "test")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stdout.splitlines()[-1].startswith("FAIL  schema")
