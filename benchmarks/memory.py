"""Peak memory of `kg ingest` on a 10 MB text file against a server that answers at once."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, corpus_text, fake_server, point_at, temp_database


def _peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command in a fresh process; (peak RSS MB, seconds, stderr tail)."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(peak, dt, p.returncode, (p.stderr or '')[-300:].replace('\\n', ' '))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split(" ", 3)
    return float(out[0]), float(out[1]), out[3].strip()


def measure(megabytes: float = 10.0, dialect: str = "sqlite") -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, temp_database(dialect) as db, fake_server() as url:
        point_at(db, url, max_parallel=4)
        doc = Path(tmp) / "big.txt"
        block = corpus_text(200)
        with doc.open("w", encoding="utf-8") as handle:
            written = 0
            while written < megabytes * 1_000_000:
                handle.write(block)
                written += len(block)
        size_mb = doc.stat().st_size / 1e6
        env = {**os.environ, "KG_DATABASE_URL": str(db.url.render_as_string(hide_password=False)),
               "KG_HOME": tmp}
        kg = [sys.executable, "-m", "kg.cli"]
        baseline, _, _ = _peak_rss_mb([*kg, "db", "current"], env)
        peak, seconds, err = _peak_rss_mb([*kg, "ingest", str(doc), "--json"], env)
        with db.engine.connect() as conn:
            from sqlalchemy import text

            chunks = conn.execute(text("SELECT count(*) FROM chunks")).scalar_one()
    return {"file_mb": round(size_mb, 1), "chunks": chunks, "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak), "baseline_rss_mb": round(baseline),
            "chunks_per_s": round(chunks / seconds, 1) if seconds else None,
            "stderr": err[-120:] if err else ""}


if __name__ == "__main__":
    started = time.perf_counter()
    print(measure())
    print(f"({time.perf_counter() - started:.0f}s)", file=sys.stderr)
