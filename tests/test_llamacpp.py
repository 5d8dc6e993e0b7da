"""The embedded provider with the real bundled SmolLM2 GGUF (llama-cpp-python), no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kg.errors import SchemaRejected, ThinkingUnsupported, UsageError
from kg.extraction.grounding import grounded_schema
from kg.extraction.schema import bounds_for_budget, item_models, output_schema
from kg.providers import build_provider
from kg.providers.llamacpp import bundled_model_path, resolve_model_path
from tests.test_ingest import rows
from tests.test_providers import settings

pytest.importorskip("llama_cpp", reason="the `local` extra is part of the test install")

PARAGRAPH = (
    "The water cycle describes how water moves through the Earth system. The Sun heats oceans "
    "and lakes, which causes evaporation. Water vapour rises into the atmosphere, where it "
    "cools and condenses into clouds. Precipitation such as rain and snow returns water to "
    "the surface, and rivers carry it back to the oceans."
)


@pytest.fixture(scope="module")
def smollm2():
    provider = build_provider(settings("llamacpp", model="smollm2", num_threads=2,
                                       context_window=4096, max_output_tokens=1024))
    yield provider
    provider.close()


@pytest.mark.slow
def test_real_model_returns_schema_valid_json(smollm2) -> None:
    bounds = bounds_for_budget(1024)
    completion = smollm2.complete(
        [{"role": "system", "content": "Extract concepts and relationships as JSON."},
         {"role": "user", "content": f"Text:\n{PARAGRAPH}"}],
        output_schema(bounds),
    )
    data = json.loads(completion.content, strict=False)
    # The grammar enforces structure, string lengths and array sizes; number ranges it does
    # not (validate.py repairs confidences), so those are checked apart here.
    for rel in data["relationships"]:
        assert isinstance(rel["confidence"], int | float)
        rel["confidence"] = 0.5
    item_models(bounds)[2].model_validate(data)
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens > 20 and completion.completion_tokens > 0
    assert completion.latency_s > 0


@pytest.mark.slow
def test_real_model_can_only_pick_text_of_the_chunk_under_a_grounded_schema(smollm2) -> None:
    bounds = bounds_for_budget(1024)
    grounded = grounded_schema(output_schema(bounds, "evidence"), PARAGRAPH)
    assert grounded.grounded
    completion = smollm2.complete(
        [{"role": "system", "content": "Extract concepts and relationships as JSON."},
         {"role": "user", "content": f"Text:\n{PARAGRAPH}"}],
        grounded.schema,
    )
    data = json.loads(completion.content, strict=False)
    assert len(data["concepts"]) >= 3 and len(data["relationships"]) >= 1  # minItems
    for item in data["concepts"] + data["relationships"]:
        assert item["quote"] in PARAGRAPH  # verbatim by construction
    for c in data["concepts"]:
        assert c["label"] in PARAGRAPH and "description" not in c
    for r in data["relationships"]:
        assert r["source"] in PARAGRAPH and r["target"] in PARAGRAPH


def test_bundled_model_is_found_without_download() -> None:
    path = bundled_model_path("smollm2")
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 90_000_000
    with pytest.raises(UsageError, match="not found"):
        resolve_model_path("/nope/model.gguf")


def test_embedded_model_cannot_think() -> None:
    provider = build_provider(settings("llamacpp", model="smollm2", thinking_mode="low"))
    with pytest.raises(ThinkingUnsupported, match="--thinking-mode off"):
        provider.check()


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sqlite"])
def test_ingest_a_corpus_file_with_the_embedded_default(kg, db, tmp_path: Path) -> None:
    doc = tmp_path / "water.txt"
    doc.write_text(PARAGRAPH + "\n", encoding="utf-8")
    shown = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert (shown["provider"], shown["model"]) == ("llamacpp", "smollm2")
    kg("admin", "extraction", "set", "--num-threads", "2", "--max-retries", "1")
    result = kg("ingest", str(doc), "--json")
    summary = json.loads(result.stdout)
    # A one-chunk run is completed or failed (this 135M model is often invalid); the exit code
    # follows the run's own chunks.
    assert (summary["status"], result.exit_code) in (("completed", 0), ("failed", 1))
    assert summary["chunks_total"] == 1 and 1 <= summary["calls"] <= 2
    calls = rows(db, "SELECT provider, model, response, prompt_tokens, completion_tokens "
                     "FROM calls")
    for provider, model, response, prompt_tokens, completion_tokens in calls:
        assert (provider, model) == ("llamacpp", "smollm2")
        assert isinstance(json.loads(response, strict=False), dict)  # grammar-forced JSON
        assert prompt_tokens > 200 and completion_tokens > 0
    content = doc.read_text(encoding="utf-8")
    for quote, start, end in rows(db, "SELECT quote, char_start, char_end FROM evidence"):
        assert content[start:end] == quote  # whatever the tiny model says, evidence is verbatim


@pytest.mark.slow
def test_a_schema_llama_cpp_would_crash_on_is_refused_as_a_request_problem(smollm2) -> None:
    # A quote inside an enum value makes llama.cpp's grammar parser fail and the process
    # segfault (measured): the provider must refuse it before the native code, non-fatally, so
    # the extraction loop falls back to free text for that chunk.
    schema = {"type": "object", "required": ["q"],
              "properties": {"q": {"type": "string", "enum": ['He said "hi"', "ok"]}}}
    with pytest.raises(SchemaRejected) as caught:
        smollm2.complete([{"role": "user", "content": "Pick one."}], schema)
    assert not caught.value.fatal and not caught.value.transient
    plain = {"type": "object", "required": ["q"],
             "properties": {"q": {"type": "string", "enum": ["hi", "ok"]}}}
    assert json.loads(smollm2.complete([{"role": "user", "content": "Pick one."}], plain)
                      .content)["q"] in ("hi", "ok")
