"""The prompt: short fixed instructions, the vocabulary, the chunk. Paid for on every chunk."""

from __future__ import annotations

from kg.extraction.schema import Bounds
from kg.extraction.vocabulary import Vocabulary
from kg.providers.base import Message

INSTRUCTIONS = """Extract a knowledge graph from the user's text. Answer with JSON only.
concepts (at most {max_concepts}): people, places, things and ideas named in the text.
- label: the name exactly as the text writes it
- description: one short sentence about it
- search_terms: up to {max_terms} other names or keywords
- quote: a short passage copied exactly from the text that mentions it
relationships (at most {max_relationships}): links between two of your concepts.
- source, target: labels of your concepts
- type: one of the types below
- confidence: 0 to 1
- quote: a short passage copied exactly from the text that states the link
Copy quotes character for character. Use only facts stated in the text.
Types by category:
{types}"""


def system_prompt(vocabulary: Vocabulary, bounds: Bounds) -> str:
    """Instructions plus the vocabulary, compact enough to stay well under 600 tokens."""
    types = "\n".join(f"{category}: {', '.join(names)}"
                      for category, names in vocabulary.by_category().items())
    return INSTRUCTIONS.format(max_concepts=bounds.max_concepts, max_terms=bounds.max_terms,
                               max_relationships=bounds.max_relationships, types=types)


def messages_for(system: str, chunk: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Text:\n{chunk}"}]


def repair_messages(messages: list[Message], reply: str, errors: list[str]) -> list[Message]:
    """The conversation so far plus the model's unusable reply and the exact errors."""
    listed = "\n".join(f"- {e}" for e in errors[:8])
    return [
        *messages[:2],
        {"role": "assistant", "content": reply[:4000]},
        {"role": "user", "content": "Your reply could not be used:\n"
                                    f"{listed}\nAnswer again with corrected JSON only."},
    ]
