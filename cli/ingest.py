"""`kg ingest`: documents in, knowledge graph out, with progress on a terminal."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import click
from pydantic import ValidationError

from cli import context
from cli.render import as_json, emit, key_values
from kg.errors import UsageError
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.engine import IngestRequest, Progress
from kg.extraction.engine import ingest as run_ingest


class _ProgressLine:
    """One rewritten stderr line: done/total, chunks/s, ETA, failures (terminals only)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and p.done < p.total):
            return
        self.last = now
        eta = f"{p.eta_s:.0f}s" if p.eta_s is not None else "?"
        sys.stderr.write(f"\r[{p.done}/{p.total}] {p.rate:.2f} chunks/s  ETA {eta}  "
                         f"failed {p.failed}   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--recursive", "-r", is_flag=True, help="Descend into folders.")
@click.option("--profile", help="Use this profile (and follow its changes) instead of the active.")
@click.option("--force", is_flag=True, help="Re-extract files even if unchanged.")
@click.option("--resume", type=int, metavar="RUN_ID", help="Redo what a run did not commit.")
@click.option("--chunk-tokens", type=int, default=700, show_default=True,
              help="Target chunk size (estimated tokens).")
@click.option("--chunk-min", type=int, default=150, show_default=True)
@click.option("--chunk-max", type=int, default=1000, show_default=True)
@click.option("--chunk-overlap", type=int, default=60, show_default=True)
@click.option("--fuzzy-threshold", type=click.FloatRange(50, 101), default=92.0,
              show_default=True, help="Concept merge threshold (101 disables fuzzy merging).")
@click.option("--retry-backoff", type=click.FloatRange(0, 60), default=1.0, show_default=True,
              help="First wait in seconds before retrying a busy or timed-out server (doubles).")
@click.option("--json", "as_json_", is_flag=True, help="Print the summary as JSON.")
def ingest(paths: tuple[Path, ...], recursive: bool, profile: str | None, force: bool,
           resume: int | None, chunk_tokens: int, chunk_min: int, chunk_max: int,
           chunk_overlap: int, fuzzy_threshold: float, retry_backoff: float,
           as_json_: bool) -> None:
    """Extract concepts and relationships from PATHS (.txt .md .pdf .html) into the graph."""
    if not paths and resume is None:
        raise UsageError("give files or folders to ingest, or --resume RUN_ID")
    if paths and resume is not None:
        raise UsageError("--resume takes no paths: a run resumes its own documents")
    try:
        chunking = ChunkingOptions(target_tokens=chunk_tokens, min_tokens=chunk_min,
                                   max_tokens=chunk_max, overlap_tokens=chunk_overlap)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"invalid chunk sizes: {message}") from None
    database = context.database()
    progress = _ProgressLine()
    request = IngestRequest(paths=list(paths), recursive=recursive, profile=profile, force=force,
                            resume=resume, chunking=chunking, fuzzy_threshold=fuzzy_threshold,
                            backoff_s=retry_backoff)
    try:
        summary = run_ingest(database, request, models_dir=context.settings().models_dir,
                             on_progress=progress)
    finally:
        progress.close()
    for path, reason in summary.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    if as_json_:
        emit(as_json(dataclasses.asdict(summary)))
    elif summary.run_id is None:
        emit(f"nothing to do: {len(summary.unchanged)} unchanged file(s) "
             f"(use --force to re-extract), {len(summary.skipped)} skipped")
    else:
        emit(key_values([
            ("run", summary.run_id), ("status", summary.status),
            ("documents", summary.documents),
            ("unchanged (skipped)", len(summary.unchanged)),
            ("chunks", f"{summary.chunks_ok} ok, {summary.chunks_failed} failed of "
                       f"{summary.chunks_total}"),
            ("new concepts", summary.concepts_new),
            ("new relationships", summary.relationships_new),
            ("LLM calls", summary.calls),
            ("tokens", f"{summary.prompt_tokens} prompt, {summary.completion_tokens} completion,"
                       f" {summary.thinking_tokens} thinking"),
            ("time", f"{summary.seconds:.1f}s"),
        ]))
    if summary.error:
        click.echo(f"error: {summary.error}; fix it, then `kg ingest --resume "
                   f"{summary.run_id}`", err=True)
        sys.exit(4)
    if summary.status == "partial":
        click.echo(f"note: {summary.chunks_failed} chunk(s) failed; see `kg runs show "
                   f"{summary.run_id}`, then `kg ingest --resume {summary.run_id}`", err=True)
        sys.exit(1)
