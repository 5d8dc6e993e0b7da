"""`kg ingest`: documents in, knowledge graph out, with progress on a terminal."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click
from pydantic import ValidationError
from rich.progress import BarColumn, TaskID, TextColumn
from rich.progress import Progress as Bars

from kg.cli import context
from kg.cli.render import console, emit, emit_object, json_option, key_values
from kg.db.runstate import RunStatus
from kg.errors import UsageError
from kg.extraction import plan, versions
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import (
    IngestRequest,
    IngestSummary,
    Interrupted,
    Planning,
    Progress,
    Terminated,
)
from kg.extraction.ingest import ingest as run_ingest


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressDisplay:
    """Bars on a terminal (stderr); without one, one plain line per finished document."""

    def __init__(self) -> None:
        self.console = console(stderr=True)
        self.terminal = self.console.is_terminal
        self.bars: Bars | None = None
        self.planning_task: TaskID | None = None
        self.chunk_task: TaskID | None = None

    def _ensure(self) -> Bars:
        if self.bars is None:
            self.bars = Bars(TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.fields[detail]}"), console=self.console,
                             transient=False)
            self.bars.start()
        return self.bars

    def planning(self, p: Planning) -> None:
        if not self.terminal:
            return
        bars = self._ensure()
        name = Path(p.path).name
        if self.planning_task is None:
            self.planning_task = bars.add_task("planning", total=p.total, detail="")
        bars.update(self.planning_task, completed=p.done, detail=f"{p.done}/{p.total} {name}")

    def progress(self, p: Progress) -> None:
        if not self.terminal:
            if p.finished_document:
                click.echo(f"{p.document}: {p.document_chunks} chunks, {p.document_failed} "
                           f"failed [{p.documents_done}/{p.documents_total} files]", err=True)
            return
        bars = self._ensure()
        if self.chunk_task is None:
            self.chunk_task = bars.add_task("extracting", total=p.total, detail="")
        detail = (f"{Path(p.document).name} chunk {p.document_done}/{p.document_chunks} | "
                  f"{p.concepts} concepts, {p.relationships} relationships | "
                  f"{p.tokens_per_s:.0f} tok/s | failed {p.failed} | ETA {_duration(p.eta_s)}")
        bars.update(self.chunk_task, completed=p.done, detail=detail)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops a run like Ctrl-C does (committed work kept, how to resume printed)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(summary: IngestSummary) -> None:
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


def _dry_run(request: IngestRequest, compare_to: str | None, output: str) -> None:
    from kg.extraction.estimate import estimate

    database = context.database()
    try:
        found = estimate(database, request.paths, recursive=request.recursive,
                         profile=request.profile, chunking=request.chunking,
                         force=request.force, models_dir=context.settings().models_dir,
                         compare_to=compare_to, use_cache=request.cache)
    finally:
        database.dispose()
    if output == "json":
        emit_object(found.as_dict(), output)
        return
    for path, reason in found.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    pairs: list[tuple[str, object]] = [
        ("profile", f"{found.profile} ({found.model})"),
        ("documents", f"{found.documents} ({len(found.unchanged)} unchanged, "
                      f"{len(found.skipped)} skipped)"),
        ("chunks", f"{found.chunks} ({found.cache_hits} answered by the call cache)"),
        ("LLM calls", f"{found.calls} (one valid reply per chunk; retries come on top)"),
        ("prompt tokens", f"{found.prompt_tokens} ({found.prompt_source})"),
        ("completion tokens", f"{found.completion_tokens} ({found.completion_source})"),
        ("time", f"{found.seconds:.0f}s ({found.speed_source})" if found.seconds is not None
         else found.speed_source),
        ("cost", found.cost),
    ]
    if found.reads:
        source = f"; {found.read_source}" if found.read_source else ""
        pairs.insert(3, ("images read by", f"{found.reader}: {found.reads} page(s), "
                                           f"{found.read_prompt_tokens} prompt + "
                                           f"{found.read_completion_tokens} completion "
                                           f"tokens{source}"))
    if found.compare_to is not None:
        pairs.append((f"cost at {found.compare_to}", found.reference_cost))
    emit(key_values(pairs))


def _report_gone(gone: list[versions.Gone], output: str, *, would: bool) -> None:
    verb = "would retract" if would else "retracted"
    if output == "json":
        emit_object({verb.replace(" ", "_"): [g.path for g in gone]}, output)
        return
    if not gone:
        emit(f"--sync: no document's file is gone ({'nothing to' if would else 'nothing'} "
             "retract)")
    for g in gone:
        emit(f"{verb} {g.path} (file gone)")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--recursive", "-r", is_flag=True, help="Descend into folders.")
@click.option("--profile",
              shell_complete=context.complete_profile_names,
              help="Use this profile for this run (and follow its changes) "
                   "without activating it; default $KG_PROFILE, else the active one.")
@click.option("--force", is_flag=True, help="Re-extract files even if unchanged.")
@click.option("--resume", type=context.ROW_ID, metavar="RUN_ID",
              help="Redo what a run did not commit.")
@click.option("--chunk-tokens", type=int, default=700, show_default=True,
              help="Target chunk size (estimated tokens).")
@click.option("--chunk-min", type=int, default=150, show_default=True)
@click.option("--chunk-block-min", type=int, default=1, show_default=True,
              help="Cut at a block of an image or scanned slide (title, bullets, caption) once "
                   "the chunk holds this many tokens: 1 reads each block alone; 150 keeps a "
                   "slide whole.")
@click.option("--chunk-max", type=int, default=1000, show_default=True)
@click.option("--chunk-overlap", type=int, default=60, show_default=True)
@click.option("--fuzzy-threshold", type=click.FloatRange(50, 101), default=92.0,
              show_default=True, help="Concept merge threshold (101 disables fuzzy merging).")
@click.option("--retry-backoff", type=click.FloatRange(0, 60), default=1.0, show_default=True,
              help="First wait in seconds before retrying a busy or timed-out server (doubles).")
@click.option("--queue", "queued", is_flag=True,
              help="Plan the run and queue its chunks for `kg worker` processes "
                   "(PostgreSQL); prints the run id and returns.")
@click.option("--follow", is_flag=True, help="With --queue: show progress until the run ends.")
@click.option("--no-cache", is_flag=True,
              help="Ask the model even for requests answered before (and store nothing).")
@click.option("--dry-run", is_flag=True,
              help="Send nothing, write nothing: documents, chunks, calls, estimated tokens, "
                   "time and cost.")
@click.option("--compare-to", metavar="MODEL",
              help="With --dry-run: also the cost at this priced model (`kg admin prices`).")
@click.option("--ontology", metavar="NAME",
              help="Extract with this ontology for this run (default: the profile's).")
@click.option("--sync", is_flag=True,
              help="Also retract the documents of the given folders whose files are gone "
                   "(with --dry-run: only list them).")
@json_option
def ingest(paths: tuple[Path, ...], recursive: bool, profile: str | None, force: bool,
           resume: int | None, chunk_tokens: int, chunk_min: int, chunk_block_min: int,
           chunk_max: int,
           chunk_overlap: int, fuzzy_threshold: float, retry_backoff: float,
           queued: bool, follow: bool, no_cache: bool, dry_run: bool, compare_to: str | None,
           ontology: str | None, sync: bool, output: str) -> None:
    """Extract concepts and relationships from PATHS (.txt .md .pdf .html) into the graph.

    A changed file becomes a new version of its document: only its new text is extracted,
    and what only the old text supported is retracted when the new version is complete."""
    gone: list[versions.Gone] = []
    if sync:
        folders = [p for p in paths if not p.is_file()]
        if not folders or resume is not None or queued:
            raise UsageError("--sync goes with folders to ingest, without --resume or --queue: "
                             "kg ingest DIR --sync")
        database = context.database()
        try:
            gone = versions.gone_from(database, folders, recursive)
        finally:
            database.dispose()
        if dry_run:
            _report_gone(gone, output, would=True)
            return
    if not paths and resume is None:
        raise UsageError("give files or folders to ingest, or --resume RUN_ID")
    if paths and resume is not None:
        raise UsageError("--resume takes no paths: a run resumes its own documents")
    if ontology is not None and not ontology.strip():
        raise UsageError("--ontology needs an ontology name; see `kg ontology list`")
    try:
        chunking = ChunkingOptions(target_tokens=chunk_tokens, min_tokens=chunk_min,
                                   block_min_tokens=chunk_block_min, max_tokens=chunk_max,
                                   overlap_tokens=chunk_overlap)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"invalid chunk sizes: {message}") from None
    request = IngestRequest(paths=list(paths), recursive=recursive,
                            profile=context.profile_choice(profile), force=force, resume=resume,
                            chunking=chunking, fuzzy_threshold=fuzzy_threshold,
                            backoff_s=retry_backoff, cache=not no_cache, ontology=ontology)
    if compare_to is not None and not dry_run:
        raise UsageError("--compare-to goes with --dry-run (for past runs: `kg admin "
                         "extraction analytics --compare-to`)")
    if dry_run:
        if resume is not None or queued:
            raise UsageError("--dry-run plans new paths; it takes neither --resume nor --queue")
        _dry_run(request, compare_to, output)
        return
    if queued or follow:
        from kg.cli.worker import ingest_queued  # the queue's part of `kg ingest`

        ingest_queued(request, follow, output)
        return
    database = context.database()
    display = ProgressDisplay()
    try:
        if sync and not plan.discover(list(paths), recursive):
            # Every file is gone: nothing to ingest, only retractions.
            versions.retract_gone(database, gone)
            _report_gone(gone, output, would=False)
            return
        with stop_on_sigterm():
            summary = run_ingest(database, request, models_dir=context.settings().models_dir,
                                 on_progress=display.progress, on_planning=display.planning)
        # After the ingest: a moved file's new path has taken over its facts by now.
        versions.retract_gone(database, gone)
    except Terminated as exc:  # before a run existed: nothing was written
        raise Interrupted("interrupted before anything was written", 128 + exc.signum) from None
    finally:
        display.close()
        database.dispose()
    if gone and output != "json":
        _report_gone(gone, output, would=False)
    for path, reason in summary.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    for path, owner in summary.busy:
        click.echo(f"skipped {path}: being ingested by run {owner}", err=True)
    if output == "json":
        emit_object(dataclasses.asdict(summary), output)
    elif summary.run_id is None:
        emit(f"nothing to do: {len(summary.unchanged)} unchanged file(s) "
             f"(use --force to re-extract), {len(summary.skipped) + len(summary.busy)} skipped")
    else:
        _report(summary)
    if summary.error:
        click.echo(f"error: {summary.error}; fix it, then `kg ingest --resume "
                   f"{summary.run_id}`", err=True)
        sys.exit(4)
    if summary.status in (RunStatus.PARTIAL, RunStatus.FAILED):
        click.echo(f"note: {summary.chunks_failed} chunk(s) failed; see `kg runs show "
                   f"{summary.run_id}`, then `kg ingest --resume {summary.run_id}`", err=True)
        sys.exit(1)
