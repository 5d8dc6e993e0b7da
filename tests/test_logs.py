"""`kg logs` and kg.call_logs: stored prompts, replies, errors and timings, on both databases."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from kg.db import Database
from kg.db.models import Call, Chunk, Document, Run
from tests.terminal import run_in_pty

SECRET = "sk-not-for-your-eyes-0042"
COLOUR = re.compile(r"\x1b\[[\d;]*(3[0-9]|9[0-7]|4[0-9])m")  # any foreground/background
STORY = "Sherlock Holmes lives at Baker Street.\nDoctor Watson writes it all down."


@dataclass
class Stored:
    old_run: int
    run: int
    chunk: int
    other_chunk: int
    invalid: int
    repaired: int
    busy: int
    eval_call: int


def _call(**fields: object) -> Call:
    base: dict[str, object] = {
        "attempt": 1, "provider": "ollama", "model": "qwen3:8b", "profile_name": "gpu",
        "profile_revision": 3, "status": "ok", "prompt_tokens": 120, "completion_tokens": 40,
        "latency_ms": 2250.0, "eval_ms": 1800.0, "finish_reason": "stop",
    }
    return Call(**{**base, **fields})


@pytest.fixture
def stored(db: Database, monkeypatch: pytest.MonkeyPatch) -> Stored:
    """Two runs: the old one with one call; the last with a repaired chunk and a busy server."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with db.session() as s:
        doc = Document(path="/data/story.txt", sha256="a" * 64, size_bytes=80, kind="text")
        s.add(doc)
        s.flush()
        first = Chunk(document_id=doc.id, ordinal=0, text=STORY, char_start=0, char_end=70,
                      token_estimate=20)
        second = Chunk(document_id=doc.id, ordinal=1, text="Mrs Hudson keeps the house.",
                       char_start=70, char_end=97, token_estimate=7)
        s.add_all([first, second])
        old, last = (Run(pid=1, host="h", profile_name="gpu", status="completed"),
                     Run(pid=2, host="h", profile_name="gpu", status="partial"))
        s.add(old)
        s.flush()
        s.add(last)
        s.flush()
        s.add(_call(run_id=old.id, chunk_id=first.id, response='{"concepts": []}'))
        s.flush()
        invalid = _call(run_id=last.id, chunk_id=first.id, status="invalid",
                        error_kind="quote", error="quote 'Holmes lives in' is not in the text",
                        response='{"concepts": [{"label": "Holmes"}]}')
        s.add(invalid)
        s.flush()
        repaired = _call(run_id=last.id, chunk_id=first.id, attempt=2,
                         response='{"concepts": [{"label": "Sherlock Holmes"}]}')
        busy = _call(run_id=last.id, chunk_id=second.id, status="error",
                     error_kind="ServerBusy", prompt_tokens=0, completion_tokens=0,
                     error=f"server busy at http://ops:hunter2@gpu-box:11434 (key {SECRET})",
                     response=None, finish_reason=None)
        s.add(repaired)
        s.flush()
        s.add(busy)
        s.flush()
        eval_call = _call(run_id=None, chunk_id=None, response="{}")
        s.add(eval_call)
        s.flush()
        return Stored(old.id, last.id, first.id, second.id, invalid.id, repaired.id, busy.id,
                      eval_call.id)


def _json(kg, *args: str) -> list[dict]:
    result = kg("logs", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_returns_the_calls_of_the_last_run_newest_first(kg, stored: Stored) -> None:
    calls = _json(kg)
    assert [c["id"] for c in calls] == [stored.busy, stored.repaired, stored.invalid]
    assert {c["run_id"] for c in calls} == {stored.run}
    invalid = calls[2]
    assert invalid["prompt"] == f"Text:\n{STORY}"
    assert invalid["response"] == '{"concepts": [{"label": "Holmes"}]}'
    assert invalid["error"] == "quote 'Holmes lives in' is not in the text"
    assert invalid["document"] == "/data/story.txt" and invalid["chunk_ordinal"] == 0
    assert (invalid["prompt_tokens"], invalid["completion_tokens"]) == (120, 40)
    assert invalid["latency_ms"] == 2250.0 and invalid["eval_ms"] == 1800.0
    assert invalid["model"] == "qwen3:8b" and invalid["profile_revision"] == 3
    assert calls[1]["repair_of"] == stored.invalid and invalid["repair_of"] is None


def test_filters(kg, stored: Stored) -> None:
    assert [c["id"] for c in _json(kg, "--run", str(stored.old_run))] == [stored.old_run]
    assert [c["status"] for c in _json(kg, "--failed")] == ["error", "invalid"]
    by_chunk = _json(kg, "--chunk", str(stored.chunk))
    assert [c["run_id"] for c in by_chunk] == [stored.run, stored.run, stored.old_run]
    assert [c["id"] for c in _json(kg, "--limit", "1")] == [stored.busy]
    every = _json(kg, "--all")
    assert len(every) == 5 and every[0]["id"] == stored.eval_call
    assert every[0]["prompt"] is None
    assert _json(kg, "--profile", "cpu") == []


def test_jsonl_and_csv(kg, stored: Stored) -> None:
    lines = kg("logs", "--jsonl").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [stored.busy, stored.repaired,
                                                          stored.invalid]
    rows = list(csv.DictReader(io.StringIO(kg("logs", "--csv").stdout)))
    assert len(rows) == 3 and rows[2]["prompt"] == f"Text:\n{STORY}"


def test_no_secret_reaches_the_output(kg, stored: Stored) -> None:
    for args in ([], ["--json"], ["--csv"], ["--failed"]):
        out = kg("logs", *args).stdout
        assert "gpu-box" in out
        assert "hunter2" not in out and SECRET not in out


def test_human_view_has_a_header_then_prompt_and_reply(kg, stored: Stored,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "70")
    result = kg("logs", "--chunk", str(stored.chunk))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 70
    header = " ".join(lines[0:2])
    for part in (f"#{stored.repaired}", f"run {stored.run}", f"chunk {stored.chunk}",
                 "attempt 2", "qwen3:8b", "ok", "120+40 tokens", "2.25 s"):
        assert part in header, (part, header)
    out = result.stdout
    assert f"with the reply and errors of #{stored.invalid} sent back" in out
    assert "Sherlock Holmes lives at Baker Street." in out
    assert '{"concepts": [{"label": "Sherlock Holmes"}]}' in out
    assert "Doctor Watson writes it all down." in out  # the prompt's second line, kept
    assert "error (quote): quote 'Holmes lives in' is not in the text" in out


def test_terminal_view_is_limited_and_says_so(kg, stored: Stored) -> None:
    result = kg("logs", "--all", "--limit", "2")
    assert result.stdout.count("attempt ") == 2
    assert "(the 2 newest shown" in result.stdout


def test_bad_arguments_are_one_line(kg, stored: Stored) -> None:
    for args, needle in ((["--run", "999"], "no run 999"), (["--chunk", "999"], "no chunk 999"),
                         (["--limit", "0"], "--limit must be at least 1")):
        result = kg("logs", *args)
        assert result.exit_code == 2 and needle in result.stderr, args
        assert result.stderr.count("\n") == 1


def test_no_run_yet(kg) -> None:
    assert kg("logs", "--json").stdout.strip() == "[]"
    assert "no run yet" in kg("logs").stdout


@pytest.mark.slow
def test_colour_only_on_a_terminal_and_never_with_no_color(kg, kg_env, stored: Stored,
                                                           dialect: str) -> None:
    if dialect != "sqlite":
        pytest.skip("terminal behaviour does not depend on the database")
    env = {**os.environ, **kg_env}
    env.pop("NO_COLOR", None)
    code, screen = run_in_pty(["logs"], env)
    assert code == 0, screen
    assert re.search(r"\x1b\[[\d;]*32m", screen)  # status ok in green
    assert re.search(r"\x1b\[[\d;]*31m", screen)  # status error in red
    code, screen = run_in_pty(["logs"], {**env, "NO_COLOR": "1"})
    assert code == 0 and "Sherlock Holmes" in screen
    assert not COLOUR.search(screen)
    assert "\x1b[" not in kg("logs").stdout  # captured output: no escapes at all


def test_calls_of_a_real_ingest(kg, db: Database, tmp_path: Path) -> None:
    from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply

    doc = tmp_path / "story.txt"
    doc.write_text(STORY + "\n", encoding="utf-8")
    with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        set_up = kg("admin", "extraction", "set", "--profile", "test", "--provider", "ollama",
                    "--model", "qwen3:8b", "--base-url", server.url, "--activate")
        assert set_up.exit_code == 0, set_up.stderr
        ingest = kg("ingest", str(doc), "--json")
        assert ingest.exit_code == 0, ingest.stderr
    run_id = json.loads(ingest.stdout)["run_id"]
    calls = _json(kg)
    with db.session() as s:
        stored = s.query(Call).filter(Call.run_id == run_id).count()
    assert len(calls) == stored >= 1
    assert {c["run_id"] for c in calls} == {run_id}
    assert all(c["prompt"].startswith("Text:\n") and c["response"] for c in calls)
