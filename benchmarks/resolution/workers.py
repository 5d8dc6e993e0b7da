"""Equal clusters for 1 vs 4 workers (issue #24): the same documents (people and organisations
in several spellings) queued on PostgreSQL and ingested by 1 `kg worker` and by 4 against the
fake Ollama server, then one `kg resolve` pass each; the concept clusters (each concept's label
with its aliases) compared.

Twice: with ingestion's own resolution as shipped (it joins the automatic band per chunk, so
the pass finds little left), and with ingestion joining exact spellings only
(`--fuzzy-threshold 101`: the pass makes every merge). The 4-worker runs hold the first replies
until 4 requests are in flight, so all 4 workers provably take part.

    python -m benchmarks.resolution.workers
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import benchmarks.common  # noqa: F401  (puts the repository on sys.path)
from benchmarks.common import temp_database
from tests.fakes import FakeOllama
from tests.test_resolution_workers import (
    EXACT_ONLY,
    Gathering,
    extraction,
    ingest_and_resolve,
    write_documents,
)

MODES = {"ingestion resolves (default)": (), "ingestion exact only": EXACT_ONLY}


def _run(files: list[Path], workers: int, home: Path, options: tuple[str, ...]) -> dict[str, Any]:
    responder = Gathering(workers) if workers > 1 else extraction
    with FakeOllama(responder=responder) as server, temp_database("postgresql") as db:
        return ingest_and_resolve(db.url.render_as_string(hide_password=False), server.url,
                                  files, workers, home, *options)


def measure(files_n: int = 8, paragraphs: int = 6) -> list[dict[str, Any]]:
    """One row per mode: clusters after ingestion and after the pass, for 1 and 4 workers."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_documents(Path(tmp) / "docs", files_n, paragraphs)
        for n, (mode, options) in enumerate(MODES.items()):
            one = _run(files, 1, Path(tmp) / f"one{n}", options)
            four = _run(files, 4, Path(tmp) / f"four{n}", options)
            out.append({
                "mode": mode, "documents": files_n, "chunks_per_document": paragraphs,
                "workers_took_part": [one["workers"], four["workers"]],
                "status": [one["status"], four["status"]],
                "clusters_after_ingest": [len(one["ingested"]), len(four["ingested"])],
                "equal_after_ingest": one["ingested"] == four["ingested"],
                "merged_by_pass": [one["merged"], four["merged"]],
                "clusters_after_pass": [len(one["resolved"]), len(four["resolved"])],
                "equal_after_pass": one["resolved"] == four["resolved"],
                "clusters": [" / ".join(c) for c in one["resolved"]]})
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
