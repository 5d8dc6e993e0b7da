"""The prompt: short fixed instructions, the ontology, the chunk. Paid for on every chunk."""

from __future__ import annotations

from kg.extraction.schema import OutputBounds
from kg.extraction.vocabulary import TypeInfo, Vocabulary
from kg.providers.base import Message
from kg.text import chunk_prompt

INSTRUCTIONS = """Extract a knowledge graph from the user's text. Answer with JSON only.
concepts (at most {max_concepts}): people, places, things and ideas named in the text.
- label: the name exactly as the text writes it
{description}- search_terms: up to {max_terms} other names or keywords
- quote: a short passage copied exactly from the text that mentions it
{concept_type}relationships (at most {max_relationships}): links between two of your concepts.
- source, target: labels of your concepts
- type: one of the types below
- confidence: 0 to 1
- quote: a short passage copied exactly from the text that states the link
Copy quotes character for character. Use only facts stated in the text.
{types}"""
DESCRIPTION = "- description: one short sentence about it\n"
TRIPLES = """Extract facts from the user's text as triples. Answer with JSON only.
triples (at most {most}): one per fact the text states.
- quote: the sentence of the text that states it, copied exactly
- subject: the name of a person, place or thing, exactly as the text writes it
- relation: one of the types below
- object: another name, or a value (a year, a number, a date, a name) as the text writes it
Use only facts stated in the text.
{types}"""


def _ends(t: TypeInfo) -> str:
    return f"{t.domain or 'any'}>{t.range or 'any'}"


def types_text(vocabulary: Vocabulary) -> str:
    """The ontology as the model reads it: relation types grouped by their domain>range
    (each pair written once), else by category."""
    typed = any(t.domain or t.range for t in vocabulary.types.values())
    grouped: dict[str, list[str]] = {}
    for t in vocabulary.types.values():
        grouped.setdefault(_ends(t) if typed else t.category, []).append(t.name)
    if len(grouped) == 1 and not typed:
        return "Types: " + ", ".join(next(iter(grouped.values())))
    heading = "Types by source>target type:" if typed else "Types by category:"
    return heading + "\n" + "\n".join(
        f"{key}: {', '.join(names)}" for key, names in grouped.items())


def system_prompt(vocabulary: Vocabulary, bounds: OutputBounds,
                  descriptions: str = "generate") -> str:
    """Instructions plus the ontology, compact enough to stay well under 600 tokens."""
    concept_type = (f"- type: one of {', '.join(vocabulary.concept_types)}\n"
                    if vocabulary.concept_types else "")
    return INSTRUCTIONS.format(
        max_concepts=bounds.max_concepts, max_terms=bounds.max_terms,
        max_relationships=bounds.max_relationships, types=types_text(vocabulary),
        description=DESCRIPTION if descriptions == "generate" else "",
        concept_type=concept_type)


def triples_prompt(vocabulary: Vocabulary, bounds: OutputBounds) -> str:
    """Instructions for the `triples` shape, with the ontology."""
    return TRIPLES.format(most=bounds.max_relationships + bounds.max_concepts // 2,
                          types=types_text(vocabulary))


def messages_for(system: str, chunk: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": chunk_prompt(chunk)}]


def repair_messages(messages: list[Message], reply: str, errors: list[str]) -> list[Message]:
    """The conversation so far plus the model's unusable reply and the exact errors."""
    listed = "\n".join(f"- {e}" for e in errors[:8])
    return [
        *messages[:2],
        {"role": "assistant", "content": reply[:4000]},
        {"role": "user", "content": "Your reply could not be used:\n"
                                    f"{listed}\nAnswer again with corrected JSON only."},
    ]
