"""How many tokens kg pays before the chunk on every call (instructions + vocabulary)."""

from __future__ import annotations

import tempfile

from benchmarks.common import temp_database
from kg.extraction.prompt import system_prompt
from kg.extraction.schema import bounds_for_budget
from kg.extraction.vocabulary import Vocabulary
from kg.providers.base import estimate_tokens


def measure() -> dict[str, object]:
    with temp_database("sqlite") as db, db.session() as session:
        vocabulary = Vocabulary.load(session)
    prompt = system_prompt(vocabulary, bounds_for_budget(2048))
    figures: dict[str, object] = {"vocabulary_types": len(vocabulary.types),
                                  "instruction_chars": len(prompt),
                                  "tokens_estimate": estimate_tokens(prompt)}
    try:
        import llama_cpp

        from kg.providers.llamacpp import bundled_model_path

        path = bundled_model_path("smollm2")
        if path is not None:
            with tempfile.TemporaryDirectory():
                llama = llama_cpp.Llama(model_path=str(path), n_ctx=512, vocab_only=True,
                                        verbose=False)
                figures["tokens_smollm2_tokenizer"] = len(llama.tokenize(prompt.encode(),
                                                                         add_bos=False))
    except ImportError:
        figures["tokens_smollm2_tokenizer"] = None
    figures["calls_per_valid_chunk"] = 1
    return figures


if __name__ == "__main__":
    print(measure())
