"""`kg worker`: take queued chunks (from `kg ingest --queue`) until stopped."""

from __future__ import annotations

import dataclasses
import sys

import click
from rich.progress import BarColumn, TextColumn
from rich.progress import Progress as Bars

from kg import queue
from kg import worker as kg_worker
from kg.cli import context
from kg.cli.render import console, emit, emit_object, key_values
from kg.db import Database
from kg.db.runstate import RunStatus
from kg.errors import UsageError
from kg.extraction.ingest import IngestRequest


@click.command()
@click.option("--concurrency", "-c", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Jobs (LLM requests) this worker runs at once.")
@click.option("--profile", shell_complete=context.complete_profile_names,
              help="Extract with this profile (and follow its changes); default: the one the "
                   "run was queued with if it named one, else the active profile.")
@click.option("--stalled-after", type=click.FloatRange(1, 3600), default=30.0,
              show_default=True, metavar="SECONDS",
              help="A worker silent this long is taken for dead: its jobs go to others.")
@click.option("--retry-backoff", type=click.FloatRange(0, 60), default=1.0, show_default=True,
              help="First wait in seconds before retrying a busy or timed-out server (doubles).")
def worker(concurrency: int, profile: str | None, stalled_after: float,
           retry_backoff: float) -> None:
    """Extract queued chunks with the database's profile; stops after its current jobs on
    SIGTERM or Ctrl-C. Start any number, on any machine that reaches the database (PostgreSQL).
    """
    options = kg_worker.WorkerOptions(
        concurrency=concurrency, profile=context.profile_choice(profile),
        stalled_after_s=stalled_after, backoff_s=retry_backoff,
        models_dir=context.settings().models_dir)
    database = context.database()
    try:
        queue.require_postgresql(database)
        emit(key_values(kg_worker.describe(options).items()), err=True)
        done = kg_worker.run(database, options)
    finally:
        database.dispose()
    emit(f"worker stopped: {done} job(s) done", err=True)


def ingest_queued(request: IngestRequest, follow: bool, output: str) -> None:
    """`kg ingest --queue [--follow]`: plan, queue the chunks, print the run id."""
    if request.resume is not None:
        raise UsageError("--queue does not take --resume: queue the files again, or run "
                         "`kg ingest --resume RUN_ID` without --queue")
    if follow and not request.paths:
        raise UsageError("--follow goes with --queue and files to ingest")
    database = context.database()
    try:
        queue.require_postgresql(database)
        queued = queue.enqueue(database, request)
        for path, reason in queued.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
        for path, owner in queued.busy:
            click.echo(f"skipped {path}: being ingested by run {owner}", err=True)
        if queued.run_id is None:
            if output == "json":
                emit_object(dataclasses.asdict(queued), output)
            else:
                emit(f"nothing to do: {len(queued.unchanged)} unchanged file(s) (use --force "
                     f"to re-extract), {len(queued.skipped) + len(queued.busy)} skipped")
            return
        if not follow:
            if output == "json":
                emit_object(dataclasses.asdict(queued), output)
            else:
                emit(f"run {queued.run_id}: {queued.jobs} chunk(s) of {queued.documents} "
                     f"document(s) queued; start `kg worker` processes, then `kg runs show "
                     f"{queued.run_id}`")
            return
        click.echo(f"run {queued.run_id}: {queued.jobs} chunk(s) queued", err=True)
        final = _follow(database, queued.run_id)
    finally:
        database.dispose()
    if output == "json":
        emit_object({"run_id": queued.run_id, **dataclasses.asdict(final)}, output)
    else:
        emit(key_values([("run", queued.run_id), ("status", final.status),
                         ("chunks", f"{final.chunks_ok} ok, {final.chunks_failed} failed of "
                                    f"{final.chunks_total}")]))
    if final.status != RunStatus.COMPLETED:
        click.echo(f"note: run {queued.run_id} ended {final.status}; see `kg runs show "
                   f"{queued.run_id}`", err=True)
        sys.exit(1)


def _follow(database: Database, run_id: int) -> queue.RunState:
    """Progress until the run ends: a bar on a terminal, a line per change otherwise."""
    out = console(stderr=True)
    if not out.is_terminal:
        return queue.follow(database, run_id, lambda s: click.echo(
            f"run {run_id}: {s.chunks_ok + s.chunks_failed}/{s.chunks_total} chunks "
            f"({s.chunks_failed} failed) {s.status}", err=True))
    with Bars(TextColumn("run {task.fields[run]}"), BarColumn(),
              TextColumn("{task.completed}/{task.total} chunks, {task.fields[failed]} failed"),
              console=out) as bars:
        task = bars.add_task("queued", total=None, run=run_id, failed=0)

        def show(s: queue.RunState) -> None:
            bars.update(task, total=s.chunks_total, completed=s.chunks_ok + s.chunks_failed,
                        failed=s.chunks_failed)

        return queue.follow(database, run_id, show)
