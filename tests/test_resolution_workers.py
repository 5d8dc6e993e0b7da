"""Entity resolution does not depend on how many workers ingest (issue #24): the same
documents, queued and ingested by 1 `kg worker` and by 4 on a real PostgreSQL against the fake
Ollama server, then one `kg resolve` pass each, give the same concept clusters (each concept's
label with its aliases, as a set of spellings).

The documents name people and organisations in several spellings ("IBM" / "International
Business Machines", "Marie Curie" / "M. Curie", a typo, a comma form), so the pass has merges to
make; each worker takes chunks in its own order, so ingestion sees them arrive differently.
`python -m benchmarks.resolution.workers` prints the figure.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from kg.db import Database
from tests.fakes import TYPES, FakeOllama, Reply, chunk_of
from tests.test_concurrency import CHUNKING, configure
from tests.test_worker import Workers, run_status

WAIT_S = 240.0
# One entity per row, in the spellings the documents use.
ENTITIES = [
    ["International Business Machines", "IBM", "Internatonal Business Machines"],
    ["Marie Curie", "M. Curie", "Curie, Marie"],
    ["Albert Einstein", "A. Einstein", "Einstein, Albert"],
    ["National Aeronautics and Space Administration", "NASA"],
    ["Sherlock Holmes", "Holmes, Sherlock", "Sherlok Holmes"],
    ["Ludwig Boltzmann", "Boltzmann"],
    ["Max Planck", "Planck, Max"],
    ["Baker Street"],
    ["Royal Society"],
    ["Lise Meitner", "L. Meitner"],
]
# Longest first, so "Marie Curie" is one name, not "Curie" inside it.
NAMES = re.compile("|".join(sorted((re.escape(s) for row in ENTITIES for s in row),
                                   key=len, reverse=True)))
FILLER = ("The committee met again later that year, and the minutes record a long discussion "
          "about budgets, instruments and travel before the session closed for the evening.")
Clusters = list[tuple[str, ...]]


def write_documents(folder: Path, files: int = 8, paragraphs: int = 6) -> list[Path]:
    """Files of paragraphs (about one chunk each) naming three entities, each in a spelling
    that varies with the file and paragraph."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(files):
        body = []
        for p in range(paragraphs):
            picks = dict.fromkeys([(f + p) % len(ENTITIES), (2 * f + p + 3) % len(ENTITIES),
                                   (f + 3 * p + 5) % len(ENTITIES)])
            names = [ENTITIES[r][(f * 7 + p * 3 + i) % len(ENTITIES[r])]
                     for i, r in enumerate(picks)]
            body.append(f"In report {f}.{p}, {', then '.join(names)} were named together. "
                        f"{FILLER}")
        path = folder / f"report{f:02d}.md"
        path.write_text("\n\n".join(body) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def extraction(body: dict[str, Any]) -> Reply:
    """The model's deterministic answer for a chunk: its names, chained by relationships."""
    chunk = chunk_of(body)
    names = list(dict.fromkeys(m.group() for m in NAMES.finditer(chunk)))
    return Reply(json.dumps({
        "concepts": [{"label": n, "description": "", "search_terms": [], "quote": n}
                     for n in names],
        "relationships": [
            {"source": a, "type": TYPES[i % len(TYPES)], "target": b, "confidence": 0.8,
             "quote": a} for i, (a, b) in enumerate(itertools.pairwise(names))]}))


class Gathering:
    """Holds replies until `width` requests wait at once (each worker sends one at a time, so
    `width` workers provably take part), or `patience` seconds have passed."""

    def __init__(self, width: int, patience: float = 90.0) -> None:
        self.width = width
        self.patience = patience
        self.waiting = 0
        self.gathered = False
        self._cond = threading.Condition()

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self._cond:
            if not self.gathered:
                self.waiting += 1
                self.gathered = self.waiting >= self.width
                self._cond.notify_all()
                self._cond.wait_for(lambda: self.gathered, timeout=self.patience)
        return extraction(body)


def clusters(url: str) -> Clusters:
    """Each concept as the sorted set of its spellings (label and aliases), sorted."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            spellings: dict[int, set[str]] = {
                cid: {label} for cid, label in conn.execute(text("SELECT id, label FROM concepts"))}
            for cid, alias in conn.execute(text("SELECT concept_id, alias FROM concept_aliases")):
                spellings[cid].add(alias)
    finally:
        db.dispose()
    return sorted(tuple(sorted(s)) for s in spellings.values())


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def ingest_and_resolve(url: str, server_url: str, files: list[Path], workers: int,
                       home: Path, *ingest_options: str) -> dict[str, Any]:
    """Queue `files` (with `kg ingest` options), ingest them with `workers` workers, run one
    `kg resolve` pass; the clusters before and after the pass and the pass's merges."""
    configure(url, server_url, max_parallel=1)
    pool = Workers(url, home)
    try:
        queued = pool.kg("ingest", "--queue", *map(str, files), *CHUNKING, *ingest_options)
        assert queued.returncode == 0, queued.stderr
        run_id = int(queued.stdout.split()[1].rstrip(":"))  # "run N: ..."
        for _ in range(workers):
            pool.start()
        _until(lambda: run_status(url, run_id) != "running", "the run to finish")
    finally:
        pool.stop_all()
    ingested = clusters(url)
    done = pool.kg("resolve", "--json")
    assert done.returncode == 0, done.stderr
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            took_part = conn.execute(text(
                "SELECT count(DISTINCT worker) FROM chunk_extractions WHERE run_id = :r"),
                {"r": run_id}).scalar_one()
    finally:
        db.dispose()
    return {"status": run_status(url, run_id), "workers": int(took_part),
            "ingested": ingested, "merged": len(json.loads(done.stdout)["merged"]),
            "resolved": clusters(url)}


@pytest.fixture
def dialect() -> str:
    return "postgresql"  # the queue is PostgreSQL only


# Ingestion resolves with the same signals per chunk; with fuzzy matching off it joins exact
# spellings only, and the pass has every variant left to merge.
EXACT_ONLY = ("--fuzzy-threshold", "101")


def test_one_and_four_workers_resolve_to_the_same_clusters(db_url, other_db_url,
                                                          tmp_path) -> None:
    files = write_documents(tmp_path / "docs")
    with FakeOllama(responder=extraction) as server:
        one = ingest_and_resolve(db_url, server.url, files, 1, tmp_path / "one", *EXACT_ONLY)
    gathering = Gathering(4)
    with FakeOllama(responder=gathering) as server:
        four = ingest_and_resolve(other_db_url, server.url, files, 4, tmp_path / "four",
                                  *EXACT_ONLY)
    assert gathering.gathered and (one["workers"], four["workers"]) == (1, 4)
    assert one["status"] == four["status"] == "completed"
    assert one["resolved"] == four["resolved"]
    joined = {spelling: group for group in one["resolved"] for spelling in group}
    # The pass had work to do, and did it: variants that ingestion alone keeps apart.
    assert one["merged"] > 0 and one["ingested"] != one["resolved"]
    assert joined["IBM"] == joined["International Business Machines"]
    assert joined["M. Curie"] == joined["Marie Curie"]
    assert joined["Boltzmann"] != joined["Ludwig Boltzmann"]  # the grey zone: for review
