"""Where a document's text came from on the page: the source map of an OCR transcription.

Stored as JSON in `documents.source_map` (None for plain text files). Kept a primitive, with no
imports from kg, because both sides use it: the readers write it, the graph queries read it.

Format (version 1); boxes are pixels of the image as read (a PDF page rendered at `dpi`):

    {"version": 1,
     "pages": [{"page": 1, "start": 0, "end": 812, "reader": "ocr" | "text",
                "width": 2480, "height": 3508, "dpi": 300}],
     "words": [[start, end, page, line, x0, y0, x1, y1, confidence], ...]}

`pages` covers every page that gave text (a PDF's text-layer pages too, without boxes);
`words` holds each OCR word's character range in the document text, its line on the page and
Tesseract's confidence (0-100).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

__all__ = ["VERSION", "Box", "Place", "locate", "places"]

VERSION = 1
Box = tuple[int, int, int, int]  # x0, y0, x1, y1: left, top, right, bottom


class Place(NamedTuple):
    """Where a span of text is: its page (1-based) and the box around it, or None when the
    page came from a PDF's text layer (no geometry kept)."""

    page: int
    box: Box | None


class HasSourceMap(Protocol):
    source_map: Mapping[str, Any] | None


def locate(document: HasSourceMap, char_start: int, char_end: int) -> list[Place]:
    """Pages and boxes (one per OCR line) of the text between two offsets of a document."""
    return places(document.source_map, char_start, char_end)


def places(source_map: Mapping[str, Any] | None, char_start: int,
           char_end: int) -> list[Place]:
    """`locate` on the stored JSON itself: lines merged into one box each, in reading order."""
    if not source_map or char_end <= char_start:
        return []
    lines: dict[tuple[int, int], list[int]] = {}
    for start, end, page, line, x0, y0, x1, y1, _confidence in source_map.get("words", ()):
        if start < char_end and end > char_start:
            box = lines.get((page, line))
            # The union of the words of the span on this line: a highlight, not a word list.
            lines[(page, line)] = ([x0, y0, x1, y1] if box is None else
                                   [min(box[0], x0), min(box[1], y0),
                                    max(box[2], x1), max(box[3], y1)])
    found = [Place(page, (b[0], b[1], b[2], b[3])) for (page, _line), b in lines.items()]
    seen_pages = {p.page for p in found}
    for page in source_map.get("pages", ()):
        if (page["reader"] != "ocr" and page["page"] not in seen_pages
                and page["start"] < char_end and page["end"] > char_start):
            found.append(Place(page["page"], None))
    return sorted(found, key=lambda p: (p.page, p.box[1] if p.box else -1))
