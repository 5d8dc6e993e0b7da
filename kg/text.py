"""Text primitives both the engine and the read side use: label and type-name normalisation,
and the user message a chunk is sent as (so stored calls can show the prompt they sent)."""

from __future__ import annotations

import re
import unicodedata

ARTICLES = ("the ", "a ", "an ")


def normalise_label(label: str) -> str:
    """Case, accents-preserving Unicode form, punctuation and 'Last, First' order folded away."""
    text = unicodedata.normalize("NFKC", label).strip()
    parts = [p.strip() for p in text.split(",")]
    # "Holmes, Sherlock" -> "Sherlock Holmes"; only for two short name-like parts.
    if len(parts) == 2 and all(1 <= len(p.split()) <= 3 for p in parts):
        text = f"{parts[1]} {parts[0]}"
    text = text.casefold()
    text = re.sub(r"[^\w]+", " ", text).strip()
    for article in ARTICLES:
        if text.startswith(article) and len(text) > len(article) + 2:
            text = text[len(article):]
            break
    return text[:200]


def snake(raw: str) -> str:
    """'Is Part Of' / 'is-part-of' -> 'is_part_of'."""
    return re.sub(r"[^a-z0-9]+", "_", raw.casefold()).strip("_")[:64]


def chunk_prompt(chunk: str) -> str:
    """The user message that carries a chunk to the model (`kg logs` rebuilds it from the
    stored chunk text, so the two must never differ)."""
    return f"Text:\n{chunk}"


def label_key(name: str) -> str:
    """Case- and separator-insensitive key of a type name: 'birthPlace', 'birth_place' and
    'Birth Place' meet; the name itself is kept as the ontology spells it."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", name).casefold())


# Literal ranges kg knows: the name an ontology may write -> the kind kg normalises values to.
DATATYPES: dict[str, str] = {
    "string": "string", "text": "string", "number": "number", "date": "date", "year": "year",
    "xsd:string": "string", "xsd:normalizedstring": "string", "xsd:anyuri": "string",
    "xsd:integer": "number", "xsd:int": "number", "xsd:long": "number", "xsd:short": "number",
    "xsd:decimal": "number", "xsd:double": "number", "xsd:float": "number",
    "xsd:nonnegativeinteger": "number", "xsd:positiveinteger": "number",
    "xsd:date": "date", "xsd:datetime": "date", "xsd:gyear": "year",
}
XSD_PREFIXES = ("xsd:", "xs:", "http://www.w3.org/2001/xmlschema#")


def datatype_of(range_name: str | None) -> str | None:
    """The literal kind (string, number, date, year) a range names, else None (a concept)."""
    if not range_name:
        return None
    key = range_name.strip().casefold()
    for prefix in XSD_PREFIXES[1:]:
        if key.startswith(prefix):
            key = "xsd:" + key[len(prefix):]
    return DATATYPES.get(key)


def looks_like_datatype(range_name: str) -> bool:
    """An XSD-style name (kg may not know it): refused with the list of those it knows."""
    return range_name.strip().casefold().startswith(XSD_PREFIXES)


def known_datatypes() -> str:
    return ", ".join(sorted(DATATYPES))
