"""Soak: four `kg ingest` processes at once on one database, against one test server.

Every process must exit 0 without a traceback, and the graph (concepts with their description
and search terms, aliases, relationships with their confidence) must be the one a single serial
`kg ingest` of the same files builds in a fresh database, with every chunk paid for once. The
files overlap between processes (each file is given to two of them) and spell the same people
differently ("Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes", the typo "Sherlok
Holmes"). The helpers here also drive `benchmarks/concurrency.py`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from kg.db import Database
from kg.profiles import storage
from tests.fakes import TYPES, FakeOllama, Reply, chunk_of

ROOT = Path(__file__).resolve().parent.parent
CHUNKING = ["--chunk-tokens", "60", "--chunk-min", "20", "--chunk-max", "120",
            "--chunk-overlap", "0"]
CAST = [  # one concept per row, in the spellings the documents use
    ["Sherlock Holmes", "Holmes, Sherlock", "sherlock holmes", "Sherlok Holmes"],
    ["Doctor Watson", "doctor watson"],
    ["Baker Street"],
    ["Mrs Hudson", "mrs hudson"],
    ["Inspector Lestrade", "Lestrade, Inspector"],
    ["Professor Moriarty", "professor moriarty", "Professor Moriarti"],
    ["Irene Adler", "Adler, Irene"],
    ["Mycroft Holmes"],
    ["Scotland Yard", "scotland yard"],
    ["Reichenbach Falls", "The Reichenbach Falls"],
]
# Longest spelling first, so "The Reichenbach Falls" is one name, not two.
NAMES = re.compile("|".join(sorted((re.escape(s) for row in CAST for s in row),
                                   key=len, reverse=True)) + r"|Witness No\d+x\d+")
FILLER = ("The fog lay over the city while the case went on, and the papers wrote about it "
          "for days before anyone could say what had really happened that night.")
PROCESS_TIMEOUT_S = 180.0


def write_corpus(folder: Path, files: int, paragraphs: int) -> list[Path]:
    """Files of paragraphs (about one chunk each) naming three of the cast and one witness."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        body = []
        for p in range(paragraphs):
            rows = dict.fromkeys([(f + p) % len(CAST), (f + 2 * p + 1) % len(CAST),
                                  (3 * f + p + 2) % len(CAST)])
            names = [CAST[r][(f + p + i) % len(CAST[r])] for i, r in enumerate(rows)]
            body.append(f"{', '.join(names[:-1])} and {names[-1]} met that evening. "
                        f"Witness No{f}x{p} saw them. {FILLER}")
        path = folder / f"case{f:02d}.md"
        path.write_text("\n\n".join(body) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def overlapping(files: list[Path], processes: int) -> list[list[Path]]:
    """Process k gets a window of files starting at its own share: every file goes to two."""
    share = max(1, len(files) // processes)
    return [[files[(k * share + i) % len(files)] for i in range(2 * share)]
            for k in range(processes)]


def extraction(chunk: str) -> str:
    """The model's deterministic answer for a chunk: its names, chained by relationships."""
    names: list[str] = []
    for match in NAMES.finditer(chunk):
        if match.group() not in names:
            names.append(match.group())
    confidence = 0.5 + sum(map(ord, chunk)) % 5 / 10
    return json.dumps({
        "concepts": [{"label": n, "description": f"{n}, as the documents mention it.",
                      "search_terms": [n.split()[-1].strip(",").lower()], "quote": n}
                     for n in names],
        "relationships": [
            {"source": a, "type": TYPES[(len(a) + len(b)) % len(TYPES)], "target": b,
             "confidence": confidence, "quote": a}
            for a, b in itertools.pairwise(names)]})


class Gate:
    """Holds replies until `width` requests wait at once (so the processes provably overlap),
    or `patience` seconds have passed; then lets everything through."""

    def __init__(self, delay: float = 0.0, width: int = 0, patience: float = 30.0) -> None:
        self.delay = delay
        self.width = width
        self.patience = patience
        self.waiting = 0
        self.opened_full = False  # opened because `width` requests waited together
        self._cond = threading.Condition()

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self._cond:
            if self.width and not self.opened_full:
                self.waiting += 1
                if self.waiting >= self.width:
                    self.opened_full = True
                    self._cond.notify_all()
                else:
                    self._cond.wait_for(lambda: self.opened_full, timeout=self.patience)
        return Reply(extraction(chunk_of(body)), delay=self.delay)


def configure(url: str, server_url: str, max_parallel: int = 2) -> None:
    """Activate a profile that talks to the test server."""
    db = Database(url)
    try:
        with db.session() as session:
            storage.set_profile(session, {
                "provider": "ollama", "model": "qwen3:8b", "base_url": server_url,
                "max_parallel": max_parallel, "max_retries": 0, "timeout_s": 30},
                name="soak", activate=True, by="soak")
    finally:
        db.dispose()


@dataclass
class Finished:
    files: int
    exit_code: int
    stdout: str
    stderr: str

    @property
    def problems(self) -> list[str]:
        """Lines of stderr that report an error (progress and 'skipped' notes are fine)."""
        return [line for line in self.stderr.splitlines()
                if line.startswith(("error", "note:", "Traceback", "killed"))
                or re.search(r"Error\b|locked", line)]


def ingest_at_once(url: str, home: Path, file_sets: list[list[Path]]) -> list[Finished]:
    """One `kg ingest` process per file set, all started together; each is killed after
    PROCESS_TIMEOUT_S (and reported), so the soak always ends."""
    env = {**os.environ, "KG_DATABASE_URL": url, "KG_HOME": str(home), "USER": "soak"}
    home.mkdir(parents=True, exist_ok=True)
    procs = []
    for k, files in enumerate(file_sets):
        out, err = (home / f"p{k}.out").open("w+"), (home / f"p{k}.err").open("w+")
        procs.append((files, out, err, subprocess.Popen(
            [sys.executable, "-m", "kg.cli", "ingest", *map(str, files), *CHUNKING, "--json"],
            cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)))
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    finished = []
    for files, out, err, proc in procs:
        try:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            err.write(f"\nkilled after {PROCESS_TIMEOUT_S}s\n")
        out.seek(0)
        err.seek(0)
        finished.append(Finished(len(files), code, out.read(), err.read()))
        out.close()
        err.close()
    return finished


def graph_of(url: str) -> dict[str, Any]:
    """The graph by labels (ids differ between databases and interleavings)."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            def q(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in conn.execute(text(sql))]

            concepts = {label: (norm, description,
                                json.loads(terms) if isinstance(terms, str) else terms)
                        for label, norm, description, terms in q(
                            "SELECT label, norm_label, description, search_terms FROM concepts")}
            aliases = sorted(q("SELECT c.label, a.alias FROM concept_aliases a "
                               "JOIN concepts c ON c.id = a.concept_id"))
            edges = []
            for a, kind, b, direction, confidence in q(
                    """SELECT s.label, t.name, o.label, t.direction, r.confidence
                       FROM relationships r JOIN relationship_types t ON t.id = r.type_id
                       JOIN concepts s ON s.id = r.source_id
                       JOIN concepts o ON o.id = r.target_id"""):
                if direction == "symmetric":  # stored with its ends in id order
                    a, b = sorted((a, b))
                edges.append((a, kind, b, round(confidence, 6)))
            evidence = q("SELECT count(*) FROM evidence")[0][0]
        return {"concepts": concepts, "aliases": aliases, "relationships": sorted(edges),
                "evidence": evidence}
    finally:
        db.dispose()


def paid(url: str) -> dict[str, int]:
    """LLM calls against chunks: a chunk extracted by two processes is paid twice."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            row = conn.execute(text(
                """SELECT (SELECT count(*) FROM chunks),
                          (SELECT count(*) FROM calls),
                          (SELECT count(*) FROM (SELECT chunk_id FROM calls GROUP BY chunk_id
                                                 HAVING count(*) > 1) AS twice),
                          (SELECT count(*) FROM documents WHERE status <> 'ingested')""")).one()
        return {"chunks": row[0], "calls": row[1], "chunks_paid_twice": row[2],
                "documents_not_ingested": row[3]}
    finally:
        db.dispose()


@pytest.mark.parametrize("processes", [4])
def test_concurrent_ingests_build_the_serial_graph(db_url, other_db_url, tmp_path,
                                                   processes) -> None:
    files = write_corpus(tmp_path / "docs", files=8, paragraphs=5)
    gate = Gate(width=3)  # two processes at most two requests each: three means two overlap
    with FakeOllama(responder=gate) as server:
        configure(db_url, server.url)
        configure(other_db_url, server.url)
        together = ingest_at_once(db_url, tmp_path / "home", overlapping(files, processes))
        opened_full = gate.opened_full
        gate.width = 0
        serial = ingest_at_once(other_db_url, tmp_path / "serial", [files])
    for run in together + serial:
        assert run.exit_code == 0 and not run.problems, (run.exit_code, run.stderr)
    assert opened_full, "the processes did not overlap: the soak tested nothing"
    reference = graph_of(other_db_url)
    assert len(reference["concepts"]) == len(CAST) + 8 * 5  # the cast, and one witness each
    assert {"Holmes, Sherlock", "Sherlok Holmes", "sherlock holmes"} <= {
        alias for label, alias in reference["aliases"] if label == "Sherlock Holmes"}
    assert graph_of(db_url) == reference
    bill = paid(db_url)
    assert bill == paid(other_db_url)
    assert bill["calls"] == bill["chunks"] and bill["chunks_paid_twice"] == 0
    assert bill["documents_not_ingested"] == 0
