"""Concurrent `kg ingest` processes on one database: errors, graph equality, calls paid twice.

N processes start together on overlapping file sets (every file given to two of them) against
one test server, then one serial process ingests the same files into a fresh database; the two
graphs (concepts, descriptions, search terms, aliases, relationships, confidences, evidence
count) are compared. The corpus and the server's deterministic answers are the soak test's
(tests/test_concurrency.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import temp_database
from tests.fakes import FakeOllama
from tests.test_concurrency import (
    Gate,
    configure,
    graph_of,
    ingest_at_once,
    overlapping,
    paid,
    write_corpus,
)


def measure(dialect: str, processes: int = 4, files: int = 16, paragraphs: int = 8,
            delay: float = 0.02) -> dict[str, Any]:
    """One soak on a dialect: figures for the table."""
    with tempfile.TemporaryDirectory() as tmp, temp_database(dialect) as db, \
            temp_database(dialect) as reference:
        paths = write_corpus(Path(tmp) / "docs", files, paragraphs)
        gate = Gate(delay=delay, width=3)
        with FakeOllama(responder=gate) as server:
            for database in (db, reference):
                configure(database.url.render_as_string(hide_password=False), server.url)
            url = db.url.render_as_string(hide_password=False)
            started = time.perf_counter()
            together = ingest_at_once(url, Path(tmp) / "home", overlapping(paths, processes))
            wall = time.perf_counter() - started
            gate.width = 0
            started = time.perf_counter()
            ref_url = reference.url.render_as_string(hide_password=False)
            serial = ingest_at_once(ref_url, Path(tmp) / "serial", [paths])
            serial_wall = time.perf_counter() - started
        errors = sum(1 for run in together + serial if run.exit_code != 0 or run.problems)
        bill = paid(url)
        return {
            "dialect": dialect, "processes": processes, "files": files,
            "files_per_process": len(overlapping(paths, processes)[0]),
            "errors": errors, "overlapped": gate.opened_full,
            "equal": graph_of(url) == graph_of(ref_url),
            "wall_s": round(wall, 2), "serial_wall_s": round(serial_wall, 2),
            "chunks": bill["chunks"], "calls": bill["calls"],
            "chunks_paid_twice": bill["chunks_paid_twice"],
            "serial_calls": paid(ref_url)["calls"],
        }


def rows() -> list[tuple[str, str, str]]:
    """Table rows for `python -m benchmarks`."""
    out = []
    for dialect in ("sqlite", "postgresql"):
        m = measure(dialect)
        out.append((
            f"concurrent ingest ({dialect})",
            f"{m['processes']} x {m['files_per_process']} files: {m['errors']} errors, "
            f"graph equal: {'yes' if m['equal'] else 'NO'}",
            f"{m['files']} files, each in 2 processes; {m['wall_s']}s (serial "
            f"{m['serial_wall_s']}s); {m['calls']} calls for {m['chunks']} chunks, "
            f"{m['chunks_paid_twice']} paid twice (target 0 errors, equal, 0 paid twice)"))
    return out


if __name__ == "__main__":
    for d in ("sqlite", "postgresql"):
        print(measure(d))
