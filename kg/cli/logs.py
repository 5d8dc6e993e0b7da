"""`kg logs`: the prompt, reply, errors and timings of stored LLM calls, newest first."""

from __future__ import annotations

import click
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from kg import call_logs
from kg.cli import context
from kg.cli.context import complete_profile_names, complete_run_ids
from kg.cli.render import emit, emit_rows, output_option

TERMINAL_LIMIT = 10
COLUMNS = ["id", "run_id", "chunk_id", "document", "chunk_ordinal", "attempt", "provider",
           "model", "profile_name", "profile_revision", "status", "error_kind", "error",
           "finish_reason", "prompt_tokens", "completion_tokens", "thinking_tokens",
           "latency_ms", "load_ms", "prompt_eval_ms", "eval_ms", "started_at", "repair_of",
           "prompt", "response"]
STATUS_STYLE = {"ok": "green", "invalid": "yellow", "error": "red"}


@click.command()
@click.option("--run", "run_id", type=context.ROW_ID, metavar="N", shell_complete=complete_run_ids,
              help="Calls of run N (default: the last run).")
@click.option("--chunk", "chunk_id", type=context.ROW_ID, metavar="N",
              help="Calls for chunk N, in every run.")
@click.option("--failed", is_flag=True, help="Only calls whose reply was unusable or that "
                                            "failed (status invalid or error).")
@click.option("--profile", metavar="NAME", shell_complete=complete_profile_names,
              help="Only calls made with this profile.")
@click.option("--all", "every_run", is_flag=True,
              help="Calls of every run and of `kg eval`, not only the last run.")
@click.option("-n", "--limit", type=context.LIMIT, metavar="N",
              help=f"At most N calls (default: {TERMINAL_LIMIT} in the terminal view, all "
                   "with --json/--jsonl/--csv).")
@output_option
def logs(run_id: int | None, chunk_id: int | None, failed: bool, profile: str | None,
         every_run: bool, limit: int | None, output: str) -> None:
    """The stored prompt, reply, errors and timings of LLM calls, newest first.

    Without --run, --chunk or --all: the calls of the last run. API keys are never stored,
    so they cannot appear here.
    """
    human = output == "table"
    wanted = limit if limit is not None or not human else TERMINAL_LIMIT
    scope = call_logs.CallFilter(run_id=run_id, chunk_id=chunk_id, failed=failed, profile=profile,
                            every_run=every_run, limit=limit)
    with context.session() as session:
        scope = call_logs.resolve_scope(session, scope)
        if wanted is not None:  # one more than shown tells whether there are more
            scope = scope.model_copy(update={"limit": wanted + 1})
        calls = call_logs.list_calls(session, scope)
    more = wanted is not None and len(calls) > wanted
    calls = calls[:wanted] if wanted is not None else calls
    if not human:
        emit_rows([c.model_dump() for c in calls], output, COLUMNS)
        return
    if not calls:
        emit("(none)" if scope.run_id is not None or scope.chunk_id is not None
             or scope.every_run else "(none: no run yet; see `kg ingest --help`)")
        return
    for number, call in enumerate(calls):
        if number:
            emit("")
        emit(_render(call))
    if more:
        emit(f"\n(the {wanted} newest shown; more with --limit N, all with --json)")


def _header(call: call_logs.CallLog) -> Text:
    parts = [f"#{call.id}", f"run {call.run_id}" if call.run_id is not None else "kg eval"]
    if call.chunk_id is not None:
        where = f" ({call.document} #{call.chunk_ordinal})" if call.document else ""
        parts.append(f"chunk {call.chunk_id}{where}")
    parts.append(f"attempt {call.attempt}")
    parts.append(f"{call.profile_name} r{call.profile_revision}: {call.provider} {call.model}")
    head = Text("  ".join(parts), style="bold")
    head.append("  ")
    head.append(call.status, style=STATUS_STYLE.get(call.status, "bold"))
    tokens = f"{call.prompt_tokens}+{call.completion_tokens} tokens"
    if call.thinking_tokens:
        tokens += f" ({call.thinking_tokens} thinking)"
    head.append(f"  {tokens}  {call.latency_ms / 1000:.2f} s", style="bold")
    if call.finish_reason and call.finish_reason != "stop":
        head.append(f"  finish {call.finish_reason}", style="yellow")
    head.append(f"  {call.started_at.isoformat(sep=' ', timespec='seconds')}", style="dim")
    return head


def _section(title: str, body: str | None, style: str = "") -> list[RenderableType]:
    return [Text(f"{title}:", style="dim"), Padding(Text(body or "(empty)", style=style),
                                                     (0, 0, 0, 2))]


def _render(call: call_logs.CallLog) -> RenderableType:
    parts: list[RenderableType] = [_header(call)]
    if call.error:
        parts.append(Text(f"error ({call.error_kind or 'unknown'}): {call.error}", style="red"))
    if call.prompt is None:
        parts.append(Text("prompt: not stored (kg eval keeps no chunks)", style="dim"))
    else:
        title = "prompt"
        if call.repair_of is not None:
            title += f" (with the reply and errors of #{call.repair_of} sent back)"
        parts += _section(title, call.prompt)
    if call.response is not None or call.status != "error":
        parts += _section("reply", call.response)
    return Group(*parts)
