"""Split text into chunks near a token target, cutting at paragraphs, then sentences, then words.

Every chunk is a (char_start, char_end) span of the original text, so evidence offsets found
inside a chunk map back to the document exactly. Sentences are found by sentencex (rule-based,
offline, abbreviation lists for many languages: "Dr. Watson", "e.g.", "U.S." and "3.5" do not
end a sentence), and only inside paragraphs too long for one chunk. A document's boundaries are
preferred cuts (headings, pages); the blocks of a page read from pixels (`Boundaries.blocks`)
are cut at by default, so each is read alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import sentencex  # type: ignore[import-untyped]  # ships no type information
from pydantic import BaseModel, Field, model_validator

from kg.providers.base import estimate_tokens

PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\s*\n[ \t]*\n|\s*\Z)", re.DOTALL)
WORD = re.compile(r"\S+")
CHARS_PER_TOKEN = 4  # hard cuts inside a giant "word" (a base64 blob, a 1 MB line)
# Abbreviation rules of this language; terminators of other scripts (。！？) are known anyway.
SENTENCE_LANGUAGE = "en"
# Characters handed to the segmenter at once: a 10 MB paragraph costs a window's worth of
# memory, not a list of every sentence in it.
SENTENCE_WINDOW = 16_384
# A text with no sentence end whose lines all have at most this many words is layout, not
# prose: a slide's title, bullets or box labels as OCR reads them, block by block.
LAYOUT_MAX_WORDS = 10
SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?…](?=[\"'”’)\]]*(?:\s|$))")
LINE = re.compile(r"[^\n]*\S[^\n]*")


class ChunkingOptions(BaseModel):
    """Chunk sizes in estimated tokens; the defaults suit 4-8k context models."""

    target_tokens: int = Field(default=700, ge=50, le=32_000)
    min_tokens: int = Field(default=150, ge=1)
    # A block of an image or scanned page (a slide's title, a group of bullets, a caption)
    # starts a new chunk once the chunk holds this many tokens: 1 reads each block alone,
    # what the bundled 135M model needs (benchmarks/vision.py: a whole slide loses names);
    # min_tokens or more treats blocks like any other boundary.
    block_min_tokens: int = Field(default=1, ge=1)
    max_tokens: int = Field(default=1000, ge=50)
    overlap_tokens: int = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _order(self) -> ChunkingOptions:
        if not self.min_tokens <= self.target_tokens <= self.max_tokens:
            raise ValueError("chunk sizes must satisfy min <= target <= max")
        if self.overlap_tokens >= self.target_tokens // 2:
            raise ValueError("overlap must be under half the target size")
        return self


class Boundaries(list[int]):
    """A document's preferred cuts, of which `blocks` are the starts of blocks read from
    pixels (ChunkingOptions.block_min_tokens applies to those)."""

    def __init__(self, cuts: Iterable[int] = (), blocks: Iterable[int] = ()) -> None:
        super().__init__(cuts)
        self.blocks = frozenset(blocks)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class TextChunk:
    ordinal: int
    char_start: int
    char_end: int
    text: str
    token_estimate: int


def _paragraphs(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    return (match.span() for match in PARAGRAPH.finditer(text, start, end))


def _words(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    return (match.span() for match in WORD.finditer(text, start, end))


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """(start, end) without surrounding whitespace; None if nothing else is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sentences of text[start:end], trimmed; together they cover every non-space character.

    The segmenter sees one window at a time. The last sentence of a window may be cut short by
    the window's edge, so it is segmented again at the start of the next window.
    """
    pos = start
    while pos < end:
        stop = min(end, pos + SENTENCE_WINDOW)
        starts = [pos + found["start_index"] for found in
                  sentencex.get_sentence_boundaries(SENTENCE_LANGUAGE, text[pos:stop])]
        starts = [s for s in starts if pos < s < stop]  # cut points inside the window
        if stop < end:
            if starts:
                resume = starts.pop()
            else:  # one sentence longer than the window: cut at its last space
                space = max(text.rfind(" ", pos, stop), text.rfind("\n", pos, stop))
                resume = space if space > pos else stop
        else:
            resume = end
        for a, b in zip([pos, *starts], [*starts, resume], strict=True):
            if (span := _trimmed(text, a, b)) is not None:
                yield span
        pos = resume


Splitter = Callable[[str, int, int], Iterator[tuple[int, int]]]
SPLITTERS: tuple[Splitter, ...] = (_paragraphs, _sentences, _words)


def _pieces(text: str, start: int, end: int, max_tokens: int, level: int) -> Iterator[Span]:
    """Atomic spans no larger than max_tokens, found at the coarsest level that allows it."""
    for s, e in SPLITTERS[level](text, start, end):
        tokens = estimate_tokens(text[s:e])
        if tokens <= max_tokens:
            yield Span(s, e, tokens)
        elif level + 1 < len(SPLITTERS):
            yield from _pieces(text, s, e, max_tokens, level + 1)
        else:
            cut = s
            while cut < e:
                piece_end = min(e, cut + max_tokens * CHARS_PER_TOKEN)
                tokens = estimate_tokens(text[cut:piece_end])
                while tokens > max_tokens:  # dense scripts (CJK) hold more tokens per char
                    piece_end = cut + max(1, (piece_end - cut) // 2)
                    tokens = estimate_tokens(text[cut:piece_end])
                yield Span(cut, piece_end, tokens)
                cut = piece_end


def chunk_text(
    text: str, options: ChunkingOptions | None = None, boundaries: list[int] | None = None
) -> Iterator[TextChunk]:
    """Yield chunks lazily (a 10 MB document is never held as a list of chunk strings)."""
    opts = options or ChunkingOptions()
    cuts = sorted(set(boundaries or []))
    blocks = boundaries.blocks if isinstance(boundaries, Boundaries) else frozenset()
    block_min = min(opts.min_tokens, opts.block_min_tokens)
    cut_index = 0
    current: list[Span] = []
    total = 0
    ordinal = 0

    def emit(spans: list[Span]) -> TextChunk:
        nonlocal ordinal
        start, end = spans[0].start, spans[-1].end
        chunk = TextChunk(ordinal, start, end, text[start:end], sum(s.tokens for s in spans))
        ordinal += 1
        return chunk

    def overlap_tail(spans: list[Span]) -> list[Span]:
        tail: list[Span] = []
        budget = opts.overlap_tokens
        for span in reversed(spans[1:]):
            if span.tokens > budget:
                break
            tail.insert(0, span)
            budget -= span.tokens
        return tail

    for span in _pieces(text, 0, len(text), opts.max_tokens, 0):
        least: int | None = None  # tokens the chunk needs to be cut here (None: no boundary)
        while cut_index < len(cuts) and cuts[cut_index] <= span.start:
            wanted = block_min if cuts[cut_index] in blocks else opts.min_tokens
            least = wanted if least is None else min(least, wanted)
            cut_index += 1
        heading_cut = least is not None and total >= least
        size_cut = total + span.tokens > opts.target_tokens and total >= opts.min_tokens
        forced_cut = total + span.tokens > opts.max_tokens
        if current and (heading_cut or size_cut or forced_cut):
            yield emit(current)
            current = [] if heading_cut else overlap_tail(current)
            total = sum(s.tokens for s in current)
            if total + span.tokens > opts.max_tokens:
                current, total = [], 0
        current.append(span)
        total += span.tokens
    if current:
        yield emit(current)


def is_layout(text: str) -> bool:
    """Whether text is layout: short lines and no sentence end (a title, bullets, labels)."""
    lines = LINE.findall(text)
    return (bool(lines) and not SENTENCE_END.search(text)
            and all(len(WORD.findall(line)) <= LAYOUT_MAX_WORDS for line in lines))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence of text, trimmed (the splitter chunking uses); in layout
    each line is one (the segmenter would join a diagram's box labels into one)."""
    if is_layout(text):
        return [span for m in LINE.finditer(text) if (span := _trimmed(text, *m.span()))]
    return list(_sentences(text, 0, len(text)))
