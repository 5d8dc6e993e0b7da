"""`python -m benchmarks` (or `make bench`): every performance figure, printed as one table.

Figures only: nothing here passes or fails on a number. Takes a few minutes on 2 cores.
Longer ones run on their own: `python -m benchmarks.export` (100k-concept export),
`python -m benchmarks.server` (`kg serve` under load), `python -m benchmarks.collections`
(a small collection beside a 100k-concept one; migrating 100k concepts into `default`).
`--only engine` prints just the engine overhead on both databases and their ratio (the guard
whose history is benchmarks/HISTORY.md).
"""

from __future__ import annotations

import argparse
import time

from benchmarks import backends, concurrency, embedded, engine, memory, prompt, workers


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--skip-embedded", action="store_true", help="no llama.cpp figures")
    parser.add_argument("--memory-mb", type=float, default=10.0)
    parser.add_argument("--only", choices=["engine"], help="one figure only")
    parser.add_argument("--repetitions", type=int, default=3,
                        help="engine overhead runs per database (median and range)")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()

    c = engine.compare(args.repetitions)
    for dialect in engine.DIALECTS:
        d = c[dialect]
        rows.append((f"engine overhead ({dialect})", f"{d['median']} chunks/s",
                     f"median of {c['repetitions']}, range {d['min']}-{d['max']}; "
                     f"{c['chunks']} chunks, 10 concepts + ~9 relationships each, "
                     "instant server, max_parallel 4 (target >= 100)"))
    low, high = c["ratio_range"]
    rows.append(("engine PostgreSQL / SQLite", f"{c['ratio']}",
                 f"same invocation, per pair {low}-{high} (target >= 0.9)"))
    for dialect in engine.DIALECTS:
        o = c["runs"][dialect][-1]
        rows.append((f"re-ingest unchanged ({dialect})",
                     f"{o['reingest_calls']} LLM calls, {o['reingest_s']}s",
                     f"status {o['reingest_status']} (target 0 calls)"))
    if args.only == "engine":
        _print(rows, started)
        return
    rows += concurrency.rows()
    rows += backends.rows()
    rows += workers.rows()
    for s in engine.scaling():
        rows.append((f"scaling max_parallel {s['max_parallel']}",
                     f"{s['wall_s']}s vs ideal {s['ideal_s']}s",
                     f"{s['over_ideal_pct']}% over ideal; 64 chunks x 0.2s, server serves 8 "
                     "(target <= 15%)"))
    p = prompt.measure()
    rows.append(("prompt before the chunk", f"{p['tokens_estimate']} tokens",
                 f"SmolLM2 tokenizer: {p['tokens_smollm2_tokenizer']}; "
                 f"{p['vocabulary_types']} vocabulary types; 1 call per valid chunk "
                 "(target <= 600)"))
    if not args.skip_embedded:
        e = embedded.measure()
        rows.append(("embedded decode", f"{e['decode_tokens_per_s']} tokens/s",
                     f"{e['model']}, {e['threads']} threads"))
        rows.append(("embedded prompt eval", f"{e['prompt_tokens_per_s']} tokens/s", ""))
        rows.append(("embedded call, 300-word chunk", f"{e['ms_per_call_median']} ms",
                     f"median of 3; {e['completion_tokens_median']} completion tokens; chunk "
                     f"= {e['chunk_tokens_model']} model tokens (local estimate "
                     f"{e['chunk_tokens_estimate']})"))
    m = memory.measure(args.memory_mb)
    rows.append((f"peak memory, {m['file_mb']} MB file", f"{m['peak_rss_mb']} MB RSS",
                 f"{m['chunks']} chunks in {m['seconds']}s; `kg db current` alone: "
                 f"{m['baseline_rss_mb']} MB"))

    _print(rows, started)


def _print(rows: list[tuple[str, str, str]], started: float) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'figure'.ljust(widths[0])}  {'value'.ljust(widths[1])}  notes")
    for r in rows:
        print(f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2]}")
    print(f"\n({time.perf_counter() - started:.0f}s on this machine)")


if __name__ == "__main__":
    main()
