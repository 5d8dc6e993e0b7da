"""Loaders: main content of HTML, Markdown headings by a real parser, quiet PDFs, and one-line
verdicts for files that cannot be read (empty, binary, not UTF-8, broken PDF, symlink loop)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kg.errors import UsageError
from kg.extraction.chunking import chunk_text
from kg.extraction.loaders import LoadedDocument, Skipped, discover, load, sha256_file
from kg.extraction.markup import html_to_text, markdown_boundaries

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"

ARTICLE = "".join(
    f"<p>{sentence}</p>" for sentence in [
        "Marie Curie was a physicist and chemist who conducted pioneering research on "
        "radioactivity. She was the first woman to win a Nobel Prize.",
        "She was born in Warsaw in 1867. Her father taught mathematics and physics there.",
        "With Pierre Curie she discovered polonium and radium in 1898 in their laboratory.",
        "Polonium was named after Poland, the country of her birth, then under partition."])
PAGE = f"""<!DOCTYPE html><html><head><title>Marie Curie - Science Wiki</title>
<script>var analytics = "tracker";</script><style>p {{ color: red }}</style></head><body>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li>
<li><a href="/login">Log in</a></li></ul></nav></header>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience.
<button>Accept all cookies</button></div>
<main><article><h1>Marie Curie</h1>{ARTICLE[:300]}<h2>Early life</h2>{ARTICLE[300:]}
<table><tr><th>Element</th><th>Year</th></tr><tr><td>Polonium</td><td>1898</td></tr></table>
</article></main>
<aside class="sidebar"><h3>Related articles</h3><a href="/pierre">Pierre Curie</a></aside>
<form action="/subscribe"><label>Subscribe to our newsletter</label>
<input type="email" placeholder="Email"><button>Subscribe now</button></form>
<footer><p>Copyright 2024 Science Wiki. All rights reserved. Privacy policy</p></footer>
</body></html>"""
BOILERPLATE = ("Home", "About us", "Log in", "cookies", "Related articles", "newsletter",
               "Subscribe", "Copyright", "Privacy policy", "tracker", "color: red",
               "Science Wiki")


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# -- HTML ---------------------------------------------------------------------------------------

def test_html_keeps_the_article_and_drops_navigation_footer_forms_and_banners() -> None:
    text, bounds = html_to_text(PAGE)
    for needle in ("Marie Curie was a physicist", "born in Warsaw", "Polonium | 1898"):
        assert needle in text
    for needle in BOILERPLATE:
        assert needle not in text, needle
    assert [text[b:].split("\n")[0] for b in bounds] == ["Marie Curie", "Early life"]


def test_small_pages_are_read_whole_with_their_headings_minus_boilerplate() -> None:
    html = ("<html><head><title>t</title><style>p{color:red}</style></head><body>"
            "<nav><a href='/'>Home</a></nav><h1>Title</h1><p>Hello <b>world</b>.</p>"
            "<script>var x = 1;</script><h2>Second</h2><p>More &amp; more.<br>Next line</p>"
            "<form><button>Send</button></form><footer>Copyright</footer></body></html>")
    text, bounds = html_to_text(html)
    assert text == "Title\n\nHello world.\n\nSecond\n\nMore & more.\nNext line"
    assert [text[b:b + 6] for b in bounds] == ["Title\n", "Second"]
    marked = ('<body class="js cookie-consent-given"><div class="cookie-banner">Accept</div>'
              '<p>Ada Lovelace wrote the first program.</p><p hidden>draft</p></body>')
    assert html_to_text(marked) == ("Ada Lovelace wrote the first program.", [])


def test_broken_html_from_the_corpus_keeps_every_section() -> None:
    doc = load(CORPUS / "edge_cases" / "malformed.html")
    assert isinstance(doc, LoadedDocument) and doc.kind == "html"
    for needle in ("Mount Etna is an active volcano", "Catania in 1669", "INGV observatory",
                   "Stromboli, north of Sicily"):
        assert needle in doc.text
    assert "tracker" not in doc.text and "color" not in doc.text
    assert [doc.text[b:].split("\n")[0] for b in doc.boundaries] == ["Mount Etna", "Stromboli"]


@pytest.mark.parametrize("html", [
    "", "   ", "<html></html>", "<!-- only a comment -->", "<script>x()</script>",
])
def test_html_without_text_gives_nothing(html: str) -> None:
    assert html_to_text(html) == ("", [])


def test_markup_the_parser_gives_up_on_still_gives_its_words() -> None:
    html = "<div>" * 3000 + "deep &amp; down<script>hidden()</script>" + "</div>" * 3000
    text, _ = html_to_text(html)
    assert text == "deep & down"


def test_html_with_an_encoding_declaration_and_preformatted_text() -> None:
    html = ("<?xml version='1.0' encoding='iso-8859-1'?><html><body><p>Caf\u00e9 menu</p>"
            "<pre>def f():\n    return 1\n\n\nprint(f())</pre></body></html>")
    text, _ = html_to_text(html)
    assert text == "Caf\u00e9 menu\n\ndef f():\n    return 1\nprint(f())"


def test_html_is_read_offline() -> None:
    # A page full of links and remote resources: nothing may be fetched. The child process
    # has no network at all (every socket fails) and must still read the page.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from kg.extraction.markup import html_to_text\n"
        "import sys; text, _ = html_to_text(sys.stdin.read()); print(len(text))\n")
    html = PAGE.replace("<main>", '<link rel="stylesheet" href="https://example.com/s.css">'
                        '<img src="https://example.com/i.png"><main>')
    out = subprocess.run([sys.executable, "-c", code], input=html, capture_output=True,
                         text=True, cwd=ROOT, check=True)
    assert int(out.stdout) > 200 and "network used" not in out.stderr


# -- Markdown -----------------------------------------------------------------------------------

MARKDOWN = """---
title: Front matter is not a heading
---

# Sherlock Holmes

Dr. Watson shares rooms with him.

Baker Street
============

```python
# a comment in a code block, not a heading
x = 1
```

    # indented code, not a heading either

> # a quoted heading belongs to the quote

Setext two
----------

Text under setext two.

## Closing ATX ##
#hashtag-without-space is a paragraph
"""


def test_markdown_headings_atx_and_setext_but_not_code_or_front_matter() -> None:
    bounds = markdown_boundaries(MARKDOWN)
    assert [MARKDOWN[b:].split("\n")[0] for b in bounds] == [
        "# Sherlock Holmes", "Baker Street", "Setext two", "## Closing ATX ##"]


def test_markdown_offsets_point_into_the_stored_text(tmp_path: Path) -> None:
    source = MARKDOWN.replace("\n", "\r\n")  # Windows line ends are normalised first
    doc = load(write(tmp_path / "holmes.md", source.encode("utf-8")))
    assert isinstance(doc, LoadedDocument)
    assert doc.text == MARKDOWN  # kg stores the Markdown source itself
    chunks = list(chunk_text(doc.text, None, doc.boundaries))
    assert all(doc.text[c.char_start:c.char_end] == c.text for c in chunks)
    for b in doc.boundaries:
        assert doc.text[b] in "#BS"


def test_markdown_headings_start_chunks(tmp_path: Path) -> None:
    from kg.extraction.chunking import ChunkingOptions

    body = "Words about the topic go here and here. " * 6
    text = (f"Intro\n=====\n\n{body}\n\n```\n# not a cut\n```\n\n{body}\n\n"
            f"Second part\n-----------\n\n{body}\n")
    opts = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120, overlap_tokens=10)
    doc = load(write(tmp_path / "parts.md", text))
    assert isinstance(doc, LoadedDocument)
    firsts = [c.text.split("\n")[0] for c in chunk_text(doc.text, opts, doc.boundaries)]
    assert firsts[0] == "Intro" and "Second part" in firsts
    assert "# not a cut" not in firsts


def test_markdown_corpus_boundaries_are_headings() -> None:
    for path in sorted(CORPUS.rglob("*.md")):
        doc = load(path)
        assert isinstance(doc, LoadedDocument), path
        for b in doc.boundaries:
            assert b == 0 or doc.text[b - 1] == "\n", path
            assert doc.text[b] == "#", path


# -- PDF ----------------------------------------------------------------------------------------

def pdf_with_text(lines: list[str]) -> bytes:
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


def test_pdf_text_layer_is_read(tmp_path: Path) -> None:
    doc = load(write(tmp_path / "paper.pdf",
                     pdf_with_text(["Marie Curie discovered polonium.", "She worked in Paris."])))
    assert isinstance(doc, LoadedDocument)
    assert doc.kind == "pdf" and doc.boundaries == [0]
    assert "Marie Curie discovered polonium." in doc.text and "Paris" in doc.text
    empty = load(write(tmp_path / "scan.pdf", pdf_with_text([])))
    assert isinstance(empty, Skipped) and "no text layer" in empty.reason


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("data", [
    b"%PDF-1.4 not really",
    pdf_with_text(["Truncated in the middle"])[:200],
    pdf_with_text(["No end marker"]).replace(b"%%EOF", b""),
])
def test_broken_pdf_is_one_line_and_says_nothing_on_stderr(
        tmp_path: Path, data: bytes, capfd: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("kg.extraction")
    records, level = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        verdict = load(write(tmp_path / "broken.pdf", data))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    if isinstance(verdict, Skipped):
        assert verdict.reason.startswith("unreadable PDF") and "\n" not in verdict.reason
    else:  # pypdf repaired it: the text is there, and what it complained about was logged
        assert "No end marker" in verdict.text
    assert any("pypdf" in m for m in records.messages)


def test_not_a_pdf_and_encrypted_pdf(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    fake = load(write(tmp_path / "fake.pdf", b"GIF89a pretending"))
    assert isinstance(fake, Skipped) and fake.reason.startswith("not a PDF")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_with_text(["Secret text"]))))
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    locked = load(write(tmp_path / "locked.pdf", buffer.getvalue()))
    assert isinstance(locked, Skipped) and locked.reason.startswith("encrypted PDF")


# -- verdicts, discovery, hashing ----------------------------------------------------------------

def test_loader_verdicts(tmp_path: Path) -> None:
    verdicts = {
        "a.md": "# Head\n\nBody text.\n",
        "b.txt": b"\xff\xfe\x00\x00",
        "c.txt": b"   \n\n  ",
        "d.txt": "caf\xe9".encode("latin-1"),
        "e.docx": b"PK\x03\x04",
        "f.html": "<html><body><script>only()</script></body></html>",
    }
    for name, content in verdicts.items():
        write(tmp_path / name, content)
    md = load(tmp_path / "a.md")
    assert isinstance(md, LoadedDocument) and md.kind == "markdown" and md.boundaries == [0]
    reasons = {name: getattr(load(tmp_path / name), "reason", None) for name in verdicts}
    assert reasons["b.txt"].startswith("binary content")
    assert reasons["c.txt"] == "empty file"
    assert reasons["d.txt"] == "not UTF-8 text (byte 3); convert it to UTF-8"
    assert reasons["e.docx"].startswith("unsupported file type '.docx'")
    assert reasons["f.html"] == "no text content"


def test_symlink_loop_given_directly_says_so(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b.txt", tmp_path / "a.txt")
    os.symlink(tmp_path / "a.txt", tmp_path / "b.txt")
    with pytest.raises(UsageError, match=r"a\.txt: symlink loop; point the link") as caught:
        discover([tmp_path / "a.txt"], recursive=False)
    assert "no such file" not in str(caught.value)
    verdict = load(tmp_path / "a.txt")
    assert isinstance(verdict, Skipped) and verdict.reason.startswith("symlink loop")


def test_links_that_lead_nowhere_inside_a_folder_are_reported_not_lost(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "Real text.")
    os.symlink(tmp_path / "loop.txt", tmp_path / "loop.txt")
    os.symlink(tmp_path / "gone.txt", tmp_path / "dangling.txt")
    files = discover([tmp_path], recursive=True)
    assert sorted(p.name for p in files) == ["dangling.txt", "good.txt", "loop.txt"]
    reasons = {p.name: getattr(load(p), "reason", "") for p in files}
    assert reasons["loop.txt"].startswith("symlink loop")
    assert reasons["dangling.txt"].startswith("broken symlink (to ")
    with pytest.raises(UsageError, match=r"dangling\.txt: broken symlink \(to .*gone\.txt\)"):
        discover([tmp_path / "dangling.txt"], recursive=False)


def test_missing_paths_are_one_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^no such file or directory: .*nope.txt, .*gone.md; "
                                         r"check the path$"):
        discover([tmp_path / "nope.txt", tmp_path / "gone.md"], recursive=False)


def test_discover_skips_hidden_and_gold_files_and_duplicates(tmp_path: Path) -> None:
    write(tmp_path / "doc.txt", "Text.")
    write(tmp_path / "doc.gold.json", "{}")
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".git" / "config.txt", "hidden")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "more.md", "# More")
    os.symlink(tmp_path / "doc.txt", tmp_path / "sub" / "alias.txt")
    found = discover([tmp_path, tmp_path / "doc.txt"], recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["doc.txt", "sub/more.md"]
    assert [p.name for p in discover([tmp_path], recursive=False)] == ["doc.txt"]


def test_sha256_file_matches_the_loaded_document(tmp_path: Path) -> None:
    data = ("Sherlock Holmes lives at 221B Baker Street. " * 50_000).encode()  # > one block
    path = write(tmp_path / "big.txt", data)
    doc = load(path)
    assert isinstance(doc, LoadedDocument)
    assert sha256_file(path) == doc.sha256 == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "missing.txt") is None


def test_the_whole_corpus_loads() -> None:
    files = discover([CORPUS], recursive=True)
    assert len(files) >= 40
    for path in files:
        doc = load(path)
        assert isinstance(doc, LoadedDocument), (path, getattr(doc, "reason", ""))
        assert doc.text.strip() and all(0 <= b < len(doc.text) for b in doc.boundaries)
