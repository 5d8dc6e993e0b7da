"""OCR figures: character error rate, seconds per image and peak memory of kg's Tesseract reader
on generated slides and diagrams (known text) and a 10-page scanned PDF. No LLM is run.

python -m benchmarks.ocr [--slides 42]

CER = Levenshtein distance / gold length, after collapsing whitespace; it counts reading order
too (a diagram's boxes read in another order cost characters), so word recall, which does not,
is printed beside it.
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

from kg.extraction.loaders import LoadedDocument, load

FONTS = "/usr/share/fonts/truetype/dejavu/"
VOCABULARY = ("energy policy budget review market growth customer platform cloud storage network "
         "security model training data pipeline quarterly revenue strategy research climate "
         "carbon solar battery vehicle design testing release support partner contract risk "
         "compliance audit finance hiring product roadmap launch service quality supply chain "
         "factory logistics warehouse inventory pricing analysis forecast report board meeting "
         "hospital patient treatment vaccine protein genome cell enzyme reactor physics "
         "molecule satellite orbit mission engine turbine bridge railway harbour river")
WORDS = VOCABULARY.split()
NAMES = ["Marie Curie", "Ada Lovelace", "Alan Turing", "Grace Hopper", "Niels Bohr",
         "Lise Meitner", "Rosalind Franklin", "Claude Shannon", "Emmy Noether", "Tim Berners-Lee"]
Slide = tuple[Image.Image, str]


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONTS + ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"), size)


def phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def bullets(rng: random.Random, size: tuple[int, int] = (1280, 720), scale: float = 1.0,
            ink: int = 0, paper: int = 255) -> Slide:
    """A title and four to six bullets."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    title = f"{rng.choice(NAMES)} on {phrase(rng, 2).lower()}"
    draw.text((int(60 * scale), int(40 * scale)), title, fill=ink, font=font(int(48 * scale), True))
    lines = [title]
    for i in range(rng.randint(4, 6)):
        line = phrase(rng, rng.randint(3, 6))
        draw.text((int(80 * scale), int((150 + 85 * i) * scale)), "- " + line, fill=ink,
                  font=font(int(34 * scale)))
        lines.append("- " + line)
    return image.convert("RGB"), "\n".join(lines)


def diagram(rng: random.Random) -> Slide:
    """Labelled boxes in a row or two, joined by arrows, and a caption."""
    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    labels = []
    for i in range(rng.randint(3, 6)):
        x, y = 60 + (i % 3) * 410, 160 + (i // 3) * 260
        label = phrase(rng, 2)
        draw.rectangle((x, y, x + 330, y + 120), outline=(20, 60, 140), width=4)
        draw.text((x + 20, y + 40), label, fill="black", font=font(32))
        if i % 3:
            draw.line((x - 80, y + 60, x, y + 60), fill="black", width=4)
            draw.polygon([(x, y + 60), (x - 18, y + 50), (x - 18, y + 70)], fill="black")
        labels.append(label)
    caption = f"Figure: {phrase(rng, 4).lower()}"
    draw.text((60, 650), caption, fill="black", font=font(28))
    return image, "\n".join([*labels, caption])


def rotated(rng: random.Random) -> Slide:
    """A photo of a slide at an angle: the bullets turned 2 to 8 degrees."""
    image, text = bullets(rng)
    angle = rng.choice([-1, 1]) * rng.uniform(2, 8)
    return image.rotate(angle, expand=True, fillcolor="white",
                        resample=Image.Resampling.BICUBIC), text


def faint(rng: random.Random) -> Slide:
    """Low contrast: grey text on a light grey background."""
    return bullets(rng, ink=150, paper=210)


def small(rng: random.Random) -> Slide:
    """A screenshot-sized slide with small type (about 15 pixels)."""
    return bullets(rng, size=(640, 360), scale=0.45)


KINDS: dict[str, Callable[[random.Random], Slide]] = {
    "bullets": bullets, "diagram": diagram, "rotated": rotated, "low contrast": faint,
    "small type": small}


def scanned_pages(rng: random.Random, pages: int = 10) -> tuple[bytes, str]:
    """An A4 report at 150 dpi: a heading and paragraphs per page, saved as pictures in a PDF."""
    images, texts = [], []
    for n in range(pages):
        image = Image.new("L", (1240, 1754), 250)
        draw = ImageDraw.Draw(image)
        lines = [f"Section {n + 1}: {phrase(rng, 3).lower()}"]
        draw.text((110, 120), lines[0], fill=20, font=font(34, True))
        for i in range(24):
            line = phrase(rng, rng.randint(6, 9)) + "."
            draw.text((110, 210 + 56 * i), line, fill=20, font=font(24))
            lines.append(line)
        images.append(image.rotate(rng.uniform(-1, 1), fillcolor=250))  # a scanner's skew
        texts.append("\n".join(lines))
    out = io.BytesIO()
    images[0].save(out, format="PDF", resolution=150, save_all=True, append_images=images[1:])
    return out.getvalue(), "\n".join(texts)


def flat(text: str) -> str:
    return " ".join(text.split())


def score(gold: str, read: str) -> tuple[float, float]:
    """(character error rate, word recall)."""
    cer = Levenshtein.distance(flat(gold), flat(read)) / max(1, len(flat(gold)))
    wanted = flat(gold).replace("- ", "").split()
    have = flat(read).split()
    found = sum(1 for w in wanted if w in have)
    return cer, found / max(1, len(wanted))


def read(path: Path) -> tuple[str, float]:
    started = time.perf_counter()
    doc = load(path)
    seconds = time.perf_counter() - started
    return (doc.text if isinstance(doc, LoadedDocument) else ""), seconds


def tesseract_peak_mb(image: Image.Image, folder: str) -> float:
    """Peak RSS of one tesseract process on an image, started from a small launcher process
    (a child forked from this one would count this process's memory as its own)."""
    path = Path(folder) / "peak.png"
    image.save(path)
    code = ("import os, resource, subprocess, sys\n"
            "subprocess.run(['tesseract', sys.argv[1], '-', 'tsv'], capture_output=True,\n"
            "               env={**os.environ, 'OMP_THREAD_LIMIT': '1'}, check=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ocr")
    parser.add_argument("--slides", type=int, default=42, help="slides and diagrams (>= 40)")
    args = parser.parse_args()
    rng = random.Random(25)
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        kinds = list(KINDS)
        for i in range(args.slides):
            kind = kinds[i % len(kinds)]
            image, gold = KINDS[kind](rng)
            path = Path(tmp) / f"slide{i}.png"
            image.save(path)
            text, seconds = read(path)
            results[kind].append((*score(gold, text), seconds))
        pdf, gold = scanned_pages(rng)
        path = Path(tmp) / "scan.pdf"
        path.write_bytes(pdf)
        text, pdf_seconds = read(path)
        pdf_cer, pdf_recall = score(gold, text)
        page = pdfium.PdfDocument(pdf)[0].render(scale=300 / 72, grayscale=True).to_pil()
        peak_page = tesseract_peak_mb(page, tmp)  # page 1 at 300 dpi, as kg renders it
        peak_slide = tesseract_peak_mb(bullets(rng)[0], tmp)
    print(f"{'set':<16}{'n':>4}{'CER':>8}{'word recall':>13}{'s/image':>9}")
    every = [r for rows in results.values() for r in rows]
    for name, rows in [*results.items(), ("all slides", every)]:
        print(f"{name:<16}{len(rows):>4}{statistics.mean(r[0] for r in rows):>8.1%}"
              f"{statistics.mean(r[1] for r in rows):>13.1%}"
              f"{statistics.mean(r[2] for r in rows):>9.2f}")
    print(f"{'scanned PDF':<16}{10:>4}{pdf_cer:>8.1%}{pdf_recall:>13.1%}{pdf_seconds / 10:>9.2f}"
          "  (per page, rendered at 300 dpi)")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: kg process {own:.0f} MB; one tesseract: {peak_slide:.0f} MB on a "
          f"1280x720 slide, {peak_page:.0f} MB on an A4 page at 300 dpi")


if __name__ == "__main__":
    main()
