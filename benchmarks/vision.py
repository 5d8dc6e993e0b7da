"""Concepts from slides: recall, precision and F1 of the concepts kg extracts from generated
slides and diagrams (known text, gold concepts), read by offline OCR or by a vision model.

python -m benchmarks.vision [--slides 40] [--llm-slides 8] [--llm-from 0] [--block-min 1]
    [--chunk-min 150] [--readers ocr,vision] [--extractors names,smollm2] [--set KEY=VALUE]
    [--misses]

Readers: `ocr` (Tesseract, kg's default) and `vision` (a fake Ollama vision model answering
each slide's gold description: the ceiling of a perfect reader). Extractors: `names` (the fake
server's deterministic extractor: every capitalised phrase, no model) on every slide, and the
bundled SmolLM2 (llama.cpp, in process) on --llm-slides slides from --llm-from when it is
installed; --set num_threads=1 (a field of the extraction profile) lets two halves run side by
side (--llm-from 0 and --llm-from 20 with --llm-slides 20: together slides 0-39).
Everything goes through `kg ingest`'s own pipeline into a throwaway SQLite database; a concept
counts when its label equals a gold concept (case-insensitive). Seconds per image are the
reader's `calls` rows (kind ocr / describe); memory is this process's peak RSS.
Each block of a slide (title, bullet group, caption) is its own chunk, as kg ingest does by
default (ChunkingOptions.block_min_tokens = 1): the bundled 135M model loses names in a whole
slide; --block-min 150 keeps each slide whole.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy import text

import benchmarks.common  # noqa: F401  (puts the repository on sys.path)
from benchmarks.common import temp_database
from benchmarks.ocr import NAMES, font
from kg.db import Database
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import IngestRequest, ingest
from kg.profiles import storage
from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of, graph_reply

CONCEPTS = ["Solar Battery", "Supply Chain", "Carbon Budget", "Neural Network", "Data Pipeline",
            "Cloud Storage", "Risk Audit", "Wind Turbine", "Power Grid", "Vaccine Trial",
            "Gene Therapy", "Launch Plan", "Customer Portal", "Billing Service",
            "Payment Gateway", "Search Index", "Fraud Model", "Train Schedule",
            "Quantum Sensor", "Satellite Link", "Ground Station", "Heat Pump", "Steel Factory",
            "Port Logistics", "Price Forecast", "Board Report", "Sales Team", "Hiring Plan",
            "Patient Record", "Lab Protocol", "Cell Culture", "Protein Model", "Reactor Core",
            "Cooling Loop", "Safety Review", "Release Train", "Test Suite", "Design System",
            "Mobile App", "Water Filter"]
VERBS = ["feeds", "uses", "supports", "depends on", "produces", "replaces"]
VISION_MODEL = "qwen2.5vl:7b"
# (image, gold description: verbatim text then what is shown, gold concepts)
Slide = tuple[Image.Image, str, set[str]]


def bullets(rng: random.Random, size: tuple[int, int] = (1280, 720), scale: float = 1.0,
            ink: int = 0, paper: int = 255) -> Slide:
    """A title naming a person and a concept, then three to five bullets linking concepts."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    name, topic = rng.choice(NAMES), rng.choice(CONCEPTS)
    title = f"{name} on {topic}"
    draw.text((int(60 * scale), int(40 * scale)), title, fill=ink,
              font=font(int(48 * scale), True))
    lines, gold, links = [title], {name, topic}, []
    for i in range(rng.randint(3, 5)):
        a, b = rng.sample(CONCEPTS, 2)
        line = f"- {a} {rng.choice(VERBS)} {b}"
        draw.text((int(80 * scale), int((150 + 85 * i) * scale)), line, fill=ink,
                  font=font(int(34 * scale)))
        lines.append(line)
        gold |= {a, b}
        links.append(f"{a} -> {b}")
    shown = f"Shown: a slide titled '{title}' with {len(lines) - 1} bullets."
    return image.convert("RGB"), "\n".join(lines) + "\n\n" + shown, gold


def diagram(rng: random.Random) -> Slide:
    """Labelled boxes joined by arrows, and a caption naming one more concept."""
    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    labels = rng.sample(CONCEPTS, rng.randint(3, 6))
    for i, label in enumerate(labels):
        x, y = 60 + (i % 3) * 410, 160 + (i // 3) * 260
        draw.rectangle((x, y, x + 330, y + 120), outline=(20, 60, 140), width=4)
        draw.text((x + 20, y + 40), label, fill="black", font=font(30))
        if i % 3:
            draw.line((x - 80, y + 60, x, y + 60), fill="black", width=4)
            draw.polygon([(x, y + 60), (x - 18, y + 50), (x - 18, y + 70)], fill="black")
    extra = rng.choice([c for c in CONCEPTS if c not in labels])
    caption = f"Figure: how {extra} works"
    draw.text((60, 650), caption, fill="black", font=font(28))
    arrows = [f"{labels[i - 1]} -> {labels[i]}" for i in range(len(labels)) if i % 3]
    shown = (f"Shown: a diagram of {len(labels)} boxes; arrows: " + "; ".join(arrows) + ".")
    return image, "\n".join([*labels, caption]) + "\n\n" + shown, {*labels, extra}


def rotated(rng: random.Random) -> Slide:
    image, description, gold = bullets(rng)
    angle = rng.choice([-1, 1]) * rng.uniform(2, 8)
    return (image.rotate(angle, expand=True, fillcolor="white",
                         resample=Image.Resampling.BICUBIC), description, gold)


KINDS: dict[str, Callable[[random.Random], Slide]] = {
    "bullets": bullets, "diagram": diagram, "rotated": rotated,
    "low contrast": lambda rng: bullets(rng, ink=150, paper=210),
    "small type": lambda rng: bullets(rng, size=(640, 360), scale=0.45)}


def slides(count: int) -> list[tuple[str, Slide]]:
    rng = random.Random(25)
    kinds = list(KINDS)
    return [(kinds[i % len(kinds)], KINDS[kinds[i % len(kinds)]](rng)) for i in range(count)]


def _profiles(db: Database, url: str, extractor: str, reader: str,
              settings: dict[str, Any] | None = None) -> None:
    with db.session() as session:
        if reader == "vision":
            storage.set_profile(session, {"provider": "ollama", "model": VISION_MODEL,
                                          "base_url": url, "max_retries": 0},
                                name="eyes", by="benchmark")
        fields: dict[str, Any] = (
            {"provider": "llamacpp", "model": "smollm2"} if extractor == "smollm2"
            else {"provider": "ollama", "model": "qwen3:8b", "base_url": url})
        storage.set_profile(session, {**fields, **(settings or {}), "max_retries": 1,
                                      "vision_profile": "eyes" if reader == "vision" else ""},
                            name="bench", activate=True, by="benchmark")


def measure(chosen: list[tuple[str, Slide]], reader: str, extractor: str,
            chunking: ChunkingOptions | None = None,
            settings: dict[str, Any] | None = None, first: int = 0) -> dict[str, Any]:
    """Ingest the slides; per-slide concept matches and the reader's seconds per image."""
    descriptions = [description for _kind, (_img, description, _gold) in chosen]

    def answer(body: dict[str, Any]) -> Reply:
        if any(m.get("images") for m in body.get("messages") or []):
            return Reply(descriptions.pop(0))  # files are planned in name order
        return Reply(graph_reply(chunk_of(body)))

    with tempfile.TemporaryDirectory() as tmp, temp_database("sqlite") as db, FakeOllama(
            models=[FakeModel("qwen3:8b"), FakeModel(VISION_MODEL, ["completion", "vision"])],
            responder=answer) as server:
        folder = Path(tmp)
        paths = []
        for i, (_kind, (image, _description, _gold)) in enumerate(chosen):
            paths.append(folder / f"slide{i:03}.png")
            image.save(paths[-1])
        _profiles(db, server.url, extractor, reader, settings)
        started = time.perf_counter()
        ingest(db, IngestRequest(paths=paths, cache=False,
                                 chunking=chunking or ChunkingOptions()))
        wall = time.perf_counter() - started
        with db.engine.connect() as conn:
            found = conn.execute(text(
                "SELECT DISTINCT d.path, c.label FROM concepts c JOIN evidence e "
                "ON e.concept_id = c.id JOIN chunks k ON k.id = e.chunk_id JOIN documents d "
                "ON d.id = k.document_id")).all()
            chunks = conn.execute(text("SELECT count(*) FROM chunks")).scalar_one()
            read_ms = conn.execute(text(
                "SELECT avg(latency_ms), count(*) FROM calls WHERE kind IN ('ocr', 'describe')"
            )).one()
    by_slide: dict[str, set[str]] = {}
    for path, label in found:
        by_slide.setdefault(Path(path).name, set()).add(label.casefold())
    rows, misses = [], []
    for i, (kind, (_image, _description, gold)) in enumerate(chosen):
        predicted = by_slide.get(f"slide{i:03}.png", set())
        wanted = {g.casefold() for g in gold}
        rows.append((kind, len(predicted & wanted), len(predicted), len(wanted)))
        misses.append((f"slide{first + i:03} {kind}", sorted(wanted - predicted),
                       sorted(predicted - wanted)))
    return {"rows": rows, "read_s": (read_ms[0] or 0) / 1000, "reads": read_ms[1],
            "wall_s": wall, "chunks": chunks, "misses": misses}


def prf(rows: list[tuple[str, int, int, int]]) -> tuple[float, float, float]:
    hit = sum(r[1] for r in rows)
    predicted = sum(r[2] for r in rows)
    gold = sum(r[3] for r in rows)
    precision = hit / predicted if predicted else 0.0
    recall = hit / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return recall, precision, f1


def smollm2_installed() -> bool:
    from kg.providers.llamacpp import resolve_model_path

    try:
        resolve_model_path("smollm2")
        import llama_cpp  # noqa: F401
    except Exception:
        return False
    return True


def _setting(pair: str) -> tuple[str, Any]:
    """KEY=VALUE of --set; a whole number is a number."""
    key, _, value = pair.partition("=")
    return key.replace("-", "_"), int(value) if value.lstrip("-").isdigit() else value


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vision")
    parser.add_argument("--slides", type=int, default=40, help="slides and diagrams (>= 40)")
    parser.add_argument("--llm-slides", type=int, default=8,
                        help="slides run through the bundled SmolLM2 (0: none)")
    parser.add_argument("--llm-from", type=int, default=0,
                        help="the first slide run through SmolLM2")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a field of the extraction profile (num_threads=1); repeatable")
    parser.add_argument("--readers", default="ocr,vision", help="comma-separated")
    parser.add_argument("--chunk-min", type=int, default=ChunkingOptions().min_tokens,
                        help="as kg ingest --chunk-min")
    parser.add_argument("--block-min", type=int, default=ChunkingOptions().block_min_tokens,
                        help="ChunkingOptions.block_min_tokens: 1 (kg's default) reads each "
                             "block of a slide as its own chunk; 150 keeps a slide whole")
    parser.add_argument("--extractors", default="names,smollm2", help="comma-separated")
    parser.add_argument("--misses", action="store_true",
                        help="print each slide's missed gold concepts and extra labels")
    args = parser.parse_args()
    chunking = ChunkingOptions(min_tokens=args.chunk_min, block_min_tokens=args.block_min)
    every = slides(args.slides)
    readers = args.readers.split(",")
    extractors = args.extractors.split(",")
    plans = [(r, "names", every, 0) for r in readers] if "names" in extractors else []
    wanted = "smollm2" in extractors and args.llm_slides > 0
    if wanted and smollm2_installed():
        subset = every[args.llm_from:args.llm_from + args.llm_slides]
        plans += [(r, "smollm2", subset, args.llm_from) for r in readers]
    elif wanted:
        print("bundled SmolLM2 not installed: its rows are left out", file=sys.stderr)
    print(f"{'reader':<8}{'extractor':<10}{'set':<14}{'n':>4}{'recall':>8}{'prec.':>8}"
          f"{'F1':>8}{'s/image':>9}")
    settings = dict(_setting(s) for s in args.settings)
    for reader, extractor, chosen, first in plans:
        result = measure(chosen, reader, extractor, chunking, settings, first)
        kinds = sorted({r[0] for r in result["rows"]})
        groups = [(k, [r for r in result["rows"] if r[0] == k]) for k in kinds]
        for name, rows in [*groups, ("all", result["rows"])]:
            recall, precision, f1 = prf(rows)
            seconds = f"{result['read_s']:>9.2f}" if name == "all" else ""
            print(f"{reader:<8}{extractor:<10}{name:<14}{len(rows):>4}{recall:>8.1%}"
                  f"{precision:>8.1%}{f1:>8.1%}{seconds}")
        if args.misses:
            for slide, missed, extra in result["misses"]:
                if missed or extra:
                    print(f"    {slide}: missed {missed}; extra {extra}")
        print(f"  ({result['reads']} pages read, {result['chunks']} chunks "
              f"(--chunk-min {args.chunk_min} --block-min {args.block_min}); "
              f"whole ingest {result['wall_s']:.1f} s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process (kg, Tesseract children not counted): {peak:.0f} MB")


if __name__ == "__main__":
    main()
