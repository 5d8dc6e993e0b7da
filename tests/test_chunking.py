"""Chunking: offsets exact, nothing lost, sizes bounded, boundaries honoured, sentences that
know abbreviations. (Loaders are tested in test_loaders.py.)"""

from __future__ import annotations

import itertools
import random
import re

import pytest

from kg.extraction import chunking
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.providers.base import estimate_tokens

SMALL = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=10)


def covered(text: str, chunks) -> bool:
    """Every non-space character of text lies in at least one chunk."""
    marks = bytearray(len(text))
    for c in chunks:
        marks[c.char_start:c.char_end] = b"\x01" * (c.char_end - c.char_start)
    return all(marks[i] or text[i].isspace() for i in range(len(text)))


@pytest.mark.parametrize("text", [
    "One paragraph only.\n",
    "First para.\n\nSecond para has more words in it.\n\n\nThird.\n",
    "# H1\n\ntext under one\n\n# H2\n\ntext under two\n",
    "no punctuation at all " * 200,
    "x" * 5000,
    "Sentence one. Sentence two! Sentence three? " * 100,
    "日本語のテキストです。もう一つの文です。" * 50,
    "emoji 🎉 party 🎉 " * 300 + "\n\nend",
])
def test_chunks_cover_the_text_with_exact_offsets(text: str) -> None:
    chunks = list(chunk_text(text, SMALL, [m.start() for m in re.finditer(r"^#", text, re.M)]))
    assert chunks
    for c in chunks:
        assert text[c.char_start:c.char_end] == c.text
        assert c.token_estimate <= SMALL.max_tokens
    assert covered(text, chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_headings_start_new_chunks() -> None:
    section = "Words about the topic go here and here. " * 6
    text = f"# One\n\n{section}\n\n# Two\n\n{section}\n\n# Three\n\n{section}\n"
    chunks = list(chunk_text(text, SMALL, [m.start() for m in re.finditer(r"^#", text, re.M)]))
    assert [c.text.split("\n")[0] for c in chunks] == ["# One", "# Two", "# Three"]


def test_blocks_read_from_pixels_are_cut_at_by_default() -> None:
    # A slide's title, bullets and caption: blocks, far below min_tokens each.
    text = "Ada Lovelace on Engines\n\n- Mills feed Stores\n\nFigure: the Analytical Engine\n\n"
    starts = [0, text.index("- Mills"), text.index("Figure")]
    blocks = chunking.Boundaries(starts, starts)
    assert [c.text for c in chunk_text(text, ChunkingOptions(), blocks)] == [
        "Ada Lovelace on Engines", "- Mills feed Stores", "Figure: the Analytical Engine"]
    # The same offsets as ordinary boundaries (headings, pages) wait for min_tokens.
    assert len(list(chunk_text(text, ChunkingOptions(), starts))) == 1
    # block_min_tokens as large as min_tokens: a slide is one chunk again.
    whole = ChunkingOptions(block_min_tokens=150)
    assert [c.text for c in chunk_text(text, whole, blocks)] == [text.strip()]
    # Small blocks can be gathered: a cut only once the chunk holds 8 tokens.
    gathered = ChunkingOptions(block_min_tokens=8)
    assert len(list(chunk_text(text, gathered, blocks))) == 2


def test_overlap_repeats_trailing_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(60))
    chunks = list(chunk_text(text, SMALL))
    assert len(chunks) > 2
    assert any(b.char_start < a.char_end for a, b in itertools.pairwise(chunks))


def test_chunk_options_are_validated() -> None:
    with pytest.raises(ValueError, match="min <= target <= max"):
        ChunkingOptions(target_tokens=100, min_tokens=200, max_tokens=300)


def test_estimate_grows_with_unbroken_strings() -> None:
    assert estimate_tokens("x" * 6000) == 1000
    assert 8 <= estimate_tokens("Sherlock Holmes lives at Baker Street.") <= 12


# -- sentences ----------------------------------------------------------------------------------

ABBREVIATED = ("Dr. Watson met Mr. Holmes at 221B Baker St. in London. The U.S. envoy arrived "
               "at 3.5 past noon, e.g. by train. See Fig. 3 for the route. Prof. Moriarty "
               "was not amused! Was Mrs. Hudson there? She was.")


def sentence_texts(text: str) -> list[str]:
    return [text[s:e] for s, e in chunking._sentences(text, 0, len(text))]


def test_sentences_know_abbreviations_initials_and_decimals() -> None:
    assert sentence_texts(ABBREVIATED) == [
        "Dr. Watson met Mr. Holmes at 221B Baker St. in London.",
        "The U.S. envoy arrived at 3.5 past noon, e.g. by train.",
        "See Fig. 3 for the route.",
        "Prof. Moriarty was not amused!",
        "Was Mrs. Hudson there?",
        "She was.",
    ]


def test_sentences_of_other_scripts() -> None:
    assert sentence_texts("日本語のテキストです。もう一つの文です。 Und dann? Ende.") == [
        "日本語のテキストです。", "もう一つの文です。", "Und dann?", "Ende."]


def test_long_paragraphs_are_never_cut_after_an_abbreviation() -> None:
    # One paragraph far over max_tokens: the chunker must cut it at sentence ends.
    text = " ".join([ABBREVIATED] * 40)
    chunks = list(chunk_text(text, SMALL))
    assert len(chunks) > 5
    for c in chunks:
        assert c.text.endswith((".", "!", "?")), c.text[-30:]
        for abbreviation in ("Dr.", "Mr.", "St.", "U.S.", "e.g.", "Fig.", "Prof.", "Mrs.",
                             "3."):
            assert not c.text.endswith(abbreviation), c.text[-30:]
    assert covered(text, chunks)


@pytest.mark.parametrize("window", [7, 64, 200])
def test_windows_find_the_same_sentences(window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The segmenter sees one window at a time; a window edge must not add or lose a cut.
    text = " ".join([ABBREVIATED] * 6)
    whole = sentence_texts(text)
    monkeypatch.setattr(chunking, "SENTENCE_WINDOW", window)
    windowed = sentence_texts(text)
    if window > max(len(s) for s in whole):
        assert windowed == whole
    else:  # sentences longer than the window are cut at spaces, but nothing is lost
        assert "".join(windowed).replace(" ", "") == "".join(whole).replace(" ", "")


def test_a_giant_paragraph_is_covered_exactly_across_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunking, "SENTENCE_WINDOW", 500)
    rng = random.Random(7)
    pieces = ["Dr.", "Watson", "e.g.", "3.5", "U.S.", "end.", "Why?", "Yes!", "x" * 700,
              "日本。", "\n", "  ", "word"]
    for _ in range(20):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 400)))
        chunks = list(chunk_text(text, SMALL))
        assert all(text[c.char_start:c.char_end] == c.text for c in chunks)
        assert all(c.token_estimate <= SMALL.max_tokens for c in chunks)
        assert covered(text, chunks)
