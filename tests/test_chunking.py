"""Chunking and loading: offsets exact, nothing lost, sizes bounded, boundaries honoured."""

from __future__ import annotations

import itertools
import re

import pytest

from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.extraction.loaders import html_to_text, load
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


def test_html_visible_text_and_heading_offsets() -> None:
    html = ("<html><head><title>t</title><style>p{color:red}</style></head><body>"
            "<h1>Title</h1><p>Hello <b>world</b>.</p><script>var x = 1;</script>"
            "<h2>Second</h2><p>More &amp; more.</p></body></html>")
    text, bounds = html_to_text(html)
    assert text == "Title\n\nHello world.\n\nSecond\n\nMore & more."
    assert [text[b:b + 6] for b in bounds] == ["Title\n", "Second"]


def test_loader_verdicts(tmp_path) -> None:
    (tmp_path / "a.md").write_text("# Head\n\nBody text.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00\x00")
    (tmp_path / "c.txt").write_bytes(b"   \n\n  ")
    (tmp_path / "d.pdf").write_bytes(b"%PDF-1.4 not really")
    md = load(tmp_path / "a.md")
    assert md.kind == "markdown" and md.boundaries == [0]
    assert "binary" in load(tmp_path / "b.txt").reason
    assert load(tmp_path / "c.txt").reason == "empty file"
    assert "PDF" in load(tmp_path / "d.pdf").reason


def _pdf_with_text(lines: list[str]) -> bytes:
    """A minimal one-page PDF with a real text layer (Helvetica), built by hand."""
    ops = "BT /F1 12 Tf 72 720 Td " + " ".join(
        f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = "%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n"
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return out.encode("latin-1")


def test_pdf_text_layer_is_read(tmp_path) -> None:
    path = tmp_path / "paper.pdf"
    path.write_bytes(_pdf_with_text(["Marie Curie discovered polonium.", "She worked in Paris."]))
    doc = load(path)
    assert doc.kind == "pdf" and doc.boundaries == [0]
    assert "Marie Curie discovered polonium." in doc.text and "Paris" in doc.text
    empty = tmp_path / "scan.pdf"
    empty.write_bytes(_pdf_with_text([]))
    assert "no text layer" in load(empty).reason
