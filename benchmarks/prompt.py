"""How many tokens kg pays before the chunk on every call (instructions + ontology).

Measured for the built-in `default` ontology (target <= 600) and for a synthetic ontology of 60
relation types with domain and range over 12 concept types, in both description modes.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.common import temp_database
from kg.extraction.prompt import system_prompt
from kg.extraction.schema import bounds_for_budget
from kg.extraction.vocabulary import TypeInfo, Vocabulary
from kg.providers.base import estimate_tokens

CONCEPTS = ["person", "organization", "product", "component", "place", "event", "document",
            "regulation", "substance", "condition", "procedure", "measure"]
VERBS = ["supplies", "contains", "regulates", "produces", "treats", "causes", "located_in",
         "part_of", "owned_by", "cites", "measures", "replaces", "requires", "approves",
         "reports", "manufactures", "uses", "tests", "describes", "prevents"]


def sixty_relations() -> Vocabulary:
    """60 relation types (20 verbs x 3 domain/range pairs), 12 concept types, strict."""
    types = []
    for i in range(60):
        verb = VERBS[i % len(VERBS)]
        domain, range_ = CONCEPTS[i % 12], CONCEPTS[(i * 5 + 1) % 12]
        types.append(TypeInfo(i + 1, f"{verb}_{i // 20}" if i >= 20 else verb,
                              "general", "directed", domain, range_))
    return Vocabulary(types, concept_types=CONCEPTS, ontology="sixty", mode="strict")


def _tokenizer() -> Callable[[str], int] | None:
    try:
        import llama_cpp

        from kg.providers.llamacpp import bundled_model_path
    except ImportError:
        return None
    path = bundled_model_path("smollm2")
    if path is None:
        return None
    llama = llama_cpp.Llama(model_path=str(path), n_ctx=512, vocab_only=True, verbose=False)
    return lambda text: len(llama.tokenize(text.encode(), add_bos=False))


def measure() -> dict[str, object]:
    with temp_database("sqlite") as db, db.session() as session:
        default = Vocabulary.load(session)
    count = _tokenizer()
    bounds = bounds_for_budget(2048)
    figures: dict[str, object] = {"vocabulary_types": len(default.types),
                                  "concept_types": len(default.concept_types)}
    for name, vocabulary in (("default", default), ("sixty", sixty_relations())):
        for descriptions in ("generate", "evidence"):
            prompt = system_prompt(vocabulary, bounds, descriptions)
            key = f"{name}_{descriptions}"
            figures[f"{key}_chars"] = len(prompt)
            figures[f"{key}_tokens_estimate"] = estimate_tokens(prompt)
            figures[f"{key}_tokens_smollm2"] = count(prompt) if count else None
    # The names benchmarks/__main__.py prints (the default ontology, generated descriptions).
    figures["tokens_estimate"] = figures["default_generate_tokens_estimate"]
    figures["tokens_smollm2_tokenizer"] = figures["default_generate_tokens_smollm2"]
    figures["calls_per_valid_chunk"] = 1
    return figures


if __name__ == "__main__":
    print(measure())
