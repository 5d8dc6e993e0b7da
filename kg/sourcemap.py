"""Where a document's text came from on the page: the source map of an OCR transcription.

Stored as JSON in `documents.source_map` (None for plain text files). Kept a primitive, with no
imports from kg, because both sides use it: the readers write it, the graph queries read it.

Format (version 1); boxes are pixels of the image as read (a PDF page rendered at `dpi`):

    {"version": 1,
     "pages": [{"page": 1, "start": 0, "end": 812, "reader": "ocr" | "describe" | "text",
                "width": 2480, "height": 3508, "dpi": 300, "box": [x0, y0, x1, y1]}],
     "words": [[start, end, page, line, x0, y0, x1, y1, confidence], ...]}

`pages` covers every page that gave text (a PDF's text-layer pages too, without boxes); a PDF
page with a text layer whose pictures were read (profile setting page_images) has one entry
for its text, then one per picture read, with the picture's `box` on the page; `words` holds
each OCR word's character range in the document text, its line on the page (and box, on the
page, also for a picture's words) and Tesseract's confidence (0-100).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

__all__ = ["IMAGE_FORMATS", "MAX_FILE_BYTES", "MAX_PIXELS", "PDFIUM", "VERSION", "Box", "Index",
           "Place", "locate", "open_pdf", "places"]

VERSION = 1
# PDFium is not thread-safe, and both sides render PDF pages in the server's threads (a run
# reading scanned pages, a request showing one): whoever calls pypdfium2 holds this lock.
PDFIUM = threading.Lock()


@contextmanager
def open_pdf(data: bytes) -> Iterator[Any]:
    """A pypdfium2 document of `data`, used under PDFIUM and closed on leaving; PdfiumError
    (unreadable file, no such page) is the caller's to turn into its own message."""
    import pypdfium2 as pdfium

    with PDFIUM:
        pdf = pdfium.PdfDocument(data)
        try:
            yield pdf
        finally:
            pdf.close()

# Limits of the images kg reads, shared by the readers (kg.extraction.ocr, loaders) and the
# page thumbnails (kg.export.pages), which may import only this side of the layers.
# The decoders Pillow may use on a file named as an image: nothing exotic on untrusted input
# (JPEG covers MPO camera files).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
# 50 megapixels: a 600 dpi A3 scan (7016 x 9921 = 70 MP) is refused, A4 at 600 dpi (35 MP)
# passes. Tesseract took 66 MB on an 8.7 MP page (benchmarks/ocr.py), so about 0.4 GB here.
MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024  # a larger file is skipped before it is read
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
    return _places(source_map, source_map.get("words", ()), char_start, char_end)


class Index:
    """A source map prepared for many look-ups (an export's quotes): each is a binary search
    over the words instead of a pass over all of them; the same answers as `places`."""

    def __init__(self, source_map: Mapping[str, Any]) -> None:
        self.source_map = source_map
        self._words = sorted(source_map.get("words", ()), key=lambda word: word[0])
        self._starts = [word[0] for word in self._words]
        self._longest = max((word[1] - word[0] for word in self._words), default=0)

    def places(self, char_start: int, char_end: int) -> list[Place]:
        if char_end <= char_start:
            return []
        # Words overlapping the span start before its end and at most one word's length
        # before its start.
        low = bisect_left(self._starts, char_start - self._longest)
        high = bisect_left(self._starts, char_end)
        return _places(self.source_map, self._words[low:high], char_start, char_end)


def _places(source_map: Mapping[str, Any], words: Iterable[Sequence[Any]], char_start: int,
            char_end: int) -> list[Place]:
    lines: dict[tuple[int, int], list[int]] = {}
    for start, end, page, line, x0, y0, x1, y1, _confidence in words:
        if start < char_end and end > char_start:
            box = lines.get((page, line))
            # The union of the words of the span on this line: a highlight, not a word list.
            lines[(page, line)] = ([x0, y0, x1, y1] if box is None else
                                   [min(box[0], x0), min(box[1], y0),
                                    max(box[2], x1), max(box[3], y1)])
    found = [Place(page, (b[0], b[1], b[2], b[3])) for (page, _line), b in lines.items()]
    spanned = [page for page in source_map.get("pages", ())
               if page["reader"] != "ocr" and page["start"] < char_end
               and page["end"] > char_start]
    # A picture described on a text page: its box on the page is the place.
    found += [Place(page["page"], (b[0], b[1], b[2], b[3])) for page in spanned
              if (b := page.get("box"))]
    seen_pages = {p.page for p in found}
    for page in spanned:
        if page["page"] not in seen_pages:
            seen_pages.add(page["page"])
            found.append(Place(page["page"], None))
    return sorted(found, key=lambda p: (p.page, p.box[1] if p.box else -1))
