"""The bundled model under the triples grammar with relation ranges: what it writes obeys them."""

from __future__ import annotations

import json

import pytest

from kg.extraction.grounding import grounded_schema
from kg.extraction.schema import bounds_for_budget, triples_schema
from kg.providers import build_provider
from tests.test_providers import settings

pytest.importorskip("llama_cpp", reason="the `local` extra is part of the test install")

TEXT = "Aaron Boogaard, who played for Wichita Thunder, was born in 1986 in Regina, Saskatchewan."
KINDS: dict[str, str | None] = {"birthYear": "year", "birthPlace": "concept", "club": "concept",
                                "height": "number"}


@pytest.mark.slow
def test_real_model_pairs_relations_with_ends_their_range_takes() -> None:
    provider = build_provider(settings("llamacpp", model="smollm2", num_threads=2,
                                       context_window=4096, max_output_tokens=1024))
    try:
        schema = grounded_schema(triples_schema(bounds_for_budget(1024), tuple(KINDS)), TEXT,
                                 kinds=KINDS)
        assert schema.grounded
        completion = provider.complete(
            [{"role": "system", "content": "Extract facts as triples. Relations: "
                                           + ", ".join(KINDS)},
             {"role": "user", "content": f"Text:\n{TEXT}"}], schema.schema)
    finally:
        provider.close()
    rows = json.loads(completion.content, strict=False)["triples"]
    assert len(rows) == 2  # one sentence, two rows
    for row in rows:
        assert row["quote"] == TEXT and row["subject"] in TEXT and row["object"] in TEXT
        digits = any(c.isdigit() for c in row["object"])
        # a year or a number is a span holding a digit; a place or a club a name
        assert digits == (KINDS[row["relation"]] in ("year", "number")), row
        if not digits:
            assert row["object"][0].isupper(), row
