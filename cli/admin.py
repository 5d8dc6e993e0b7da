"""`kg admin extraction ...`: view and change the LLM settings stored in the database."""

from __future__ import annotations

from typing import Any

import click

from cli import context
from cli.render import as_json, emit, key_values, table
from kg import config


@click.group()
def admin() -> None:
    """Operator commands."""


@admin.group()
def extraction() -> None:
    """Extraction profiles: which LLM kg uses and how (changes apply to running ingestions)."""


def _display(field: str, value: Any) -> Any:
    if value is None:
        return "auto" if field == "num_threads" else "-"
    if field == "gpu_layers" and value == -1:
        return "auto (-1)"
    if field == "gpu_layers" and value == 0:
        return "0 (CPU only)"
    return value


@extraction.command()
@click.option("--profile", "name", help="Profile to show (default: the active one).")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def show(name: str | None, as_json_: bool) -> None:
    """Show every setting of the active (or named) profile."""
    with context.session() as session:
        profile = config.view(config.get_profile(session, name))
    data = profile.as_dict()
    if as_json_:
        emit(as_json(data))
    else:
        emit(key_values((k, _display(k, v)) for k, v in data.items()))


@extraction.command(name="list")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def list_(as_json_: bool) -> None:
    """List profiles; the active one is marked."""
    with context.session() as session:
        rows = [config.view(p).as_dict() for p in config.list_profiles(session)]
    if as_json_:
        emit(as_json(rows))
        return
    emit(table(
        [{**r, "active": "*" if r["active"] else ""} for r in rows],
        ["active", "name", "provider", "model", "base_url", "thinking_mode", "max_parallel",
         "revision", "updated_at"],
    ))


@extraction.command(name="set")
@click.option("--profile", "name", help="Profile to change or create (default: the active one).")
@click.option("--provider", type=str, help="ollama | vllm | openai | llamacpp")
@click.option("--model", help="Model name on the server, or a GGUF path / 'smollm2' for llamacpp.")
@click.option("--base-url", help="Server URL, e.g. http://localhost:11434 (Ollama).")
@click.option("--api-key-env", help="NAME of the environment variable holding the API key.")
@click.option("--temperature", type=float, help="0 to 2.")
@click.option("--top-p", type=float, help="Above 0, at most 1.")
@click.option("--thinking-mode", help="off | low | medium | high")
@click.option("--gpu-layers", type=int, help="-1 auto, 0 CPU only, N layers on the GPU.")
@click.option("--num-threads", type=int, help="CPU threads (omit for auto).")
@click.option("--context-window", type=int, help="Context length in tokens (num_ctx).")
@click.option("--max-output-tokens", type=int, help="Output budget per call.")
@click.option("--max-parallel", type=int, help="Requests in flight at once, 1 to 64.")
@click.option("--max-retries", type=int, help="Repair attempts per chunk, 0 to 10.")
@click.option("--timeout", "timeout_s", type=float, help="Seconds per request.")
@click.option("--keep-alive", help="Ollama keep_alive: 10m, 1h, -1 (forever), 0.")
@click.option("--activate", is_flag=True, help="Also make this the active profile.")
@click.option("--by", help="Who makes the change (default: $USER).")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def set_(name: str | None, activate: bool, by: str | None, as_json_: bool, **updates: Any) -> None:
    """Change settings (flags not given keep their value); a new --profile name creates it."""
    with context.session() as session:
        result = config.set_profile(
            session, updates, name=name, activate=activate, by=context.actor(by)
        )
    if as_json_:
        emit(as_json({
            "name": result.name, "created": result.created, "activated": result.activated,
            "revision": result.revision,
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in result.changes],
        }))
        return
    if not result.changes:
        emit(f"profile {result.name}: no changes (revision {result.revision})")
        return
    verb = "created" if result.created else "changed"
    emit(f"profile {result.name} {verb}, revision {result.revision}:")
    for change in result.changes:
        old = "" if result.created else f"{_display(change.field, change.old)} -> "
        emit(f"  {change.field}: {old}{_display(change.field, change.new)}")
    if result.activated:
        emit(f"profile {result.name} is now active")


@extraction.command()
@click.argument("name")
@click.option("--by", help="Who makes the change (default: $USER).")
def use(name: str, by: str | None) -> None:
    """Make NAME the active profile (running ingestions switch on their next chunk)."""
    with context.session() as session:
        previous, changed = config.use_profile(session, name, by=context.actor(by))
    if changed:
        emit(f"active profile: {previous or '(none)'} -> {name}")
    else:
        emit(f"profile {name} is already active")


@extraction.command()
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--profile", "name", help="Only this profile's changes.")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def history(limit: int, name: str | None, as_json_: bool) -> None:
    """Who changed which setting when, newest first."""
    with context.session() as session:
        rows = [
            {
                "changed_at": c.changed_at, "profile": c.profile_name, "revision": c.revision,
                "field": c.field, "old": c.old_value, "new": c.new_value, "by": c.changed_by,
            }
            for c in config.history(session, limit=limit, name=name)
        ]
    emit(as_json(rows) if as_json_ else table(rows))


@extraction.command()
@click.argument("name")
@click.option("--by", help="Who makes the change (default: $USER).")
def delete(name: str, by: str | None) -> None:
    """Delete a profile (not the active one)."""
    with context.session() as session:
        config.delete_profile(session, name, by=context.actor(by))
    emit(f"profile {name} deleted")


@extraction.command()
def reload() -> None:
    """Unload the previous model where possible, preload the active one, confirm, time it."""
    from kg.operations import reload as do_reload

    with context.session() as session:
        result = do_reload(session, context.settings().models_dir)
    if result.unloaded:
        emit(f"unloaded {result.unloaded}")
    if result.note:
        emit(f"note: {result.note}")
    emit(f"loaded {result.provider}:{result.model} in {result.load_s:.2f}s; a schema-constrained "
         f"request answered in {result.probe_s:.2f}s; switch took {result.total_s:.2f}s")


@extraction.command(name="test")
@click.option("--profile", "name", help="Profile to check (default: the active one).")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def test_(name: str | None, as_json_: bool) -> None:
    """Preflight a profile before a long run: one line per check, exit 1 if any fails."""
    from kg.operations import preflight

    with context.session() as session:
        checks = preflight(session, name, context.settings().models_dir)
    if as_json_:
        emit(as_json([c.as_dict() for c in checks]))
    else:
        for c in checks:
            emit(f"{c.status.upper():4}  {c.name:8}  {c.detail}")
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)


@extraction.command()
@click.option("--last-30-days", is_flag=True, help="Only the last 30 days.")
@click.option("--since", help="Only calls since this date (YYYY-MM-DD, UTC).")
@click.option("--by", "by", type=click.Choice(["provider", "model", "profile", "day"]),
              default="model", show_default=True)
@click.option("--compare-to", help="A priced model: savings = its cost for the same tokens "
                                   "minus ours.")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
@click.option("--csv", "as_csv_", is_flag=True, help="CSV output.")
def analytics(last_30_days: bool, since: str | None, by: str, compare_to: str | None,
              as_json_: bool, as_csv_: bool) -> None:
    """Chunks, calls, success, first-try JSON validity, tokens, speed, latency, cost, savings."""
    from cli.render import as_csv
    from kg.analytics import analytics as compute
    from kg.analytics import parse_since

    if as_json_ and as_csv_:
        raise click.UsageError("give --json or --csv, not both")
    start = parse_since(since, last_30_days)
    with context.session() as session:
        rows = compute(session, since=start, by=by, compare_to=compare_to)
    if as_json_:
        emit(as_json(rows))
    elif as_csv_:
        flat = [{**r, "failures": ";".join(f"{k}={v}" for k, v in r["failures"].items())}
                for r in rows]
        click.echo(as_csv(flat), nl=False)
    else:
        shown = [{**r, "failures": ", ".join(f"{k} {v}" for k, v in r["failures"].items())}
                 for r in rows]
        emit(table(shown))


@extraction.command()
@click.option("--model", required=True, help="Model name, e.g. qwen3:14b.")
@click.option("--params", help="Parameter count if the name does not say it, e.g. 70B.")
@click.option("--vram", help="GPU memory to plan for, e.g. 24GB (default: nvidia-smi).")
@click.option("--context-window", type=click.IntRange(512, 2_097_152),
              help="Default: the active profile's.")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def recommend(model: str, params: str | None, vram: str | None, context_window: int | None,
              as_json_: bool) -> None:
    """Which quantization fits (FP16 / 8-bit / 4-bit / CPU offload), KV cache included."""
    from kg.recommend import recommend as advise

    if context_window is None:
        with context.session() as session:
            context_window = config.get_active(session).context_window
    data = advise(model, params=params, vram=vram, context_window=context_window)
    if as_json_:
        emit(as_json(data))
        return
    emit(f"{data['model']}: {data['params_b']:g}B parameters, context {data['context_window']}"
         f", {data['layers_assumed']} layers assumed; VRAM "
         f"{format(data['vram_gb'], '.0f') + ' GB' if data['vram_gb'] else 'unknown'} "
         f"({data['vram_source']})")
    emit(table(data["options"]))
    emit(f"recommended: {data['verdict']}")
    if data["ollama_pull"]:
        emit(f"ollama pull {data['ollama_pull']}")


@admin.group()
def prices() -> None:
    """Prices per million tokens (cost and savings in analytics; unpriced models cost 0)."""


@prices.command(name="set")
@click.argument("name")
@click.option("--prompt", type=float, required=True, help="Price per 1M prompt tokens.")
@click.option("--completion", type=float, required=True, help="Price per 1M output tokens.")
@click.option("--note", default="", help="Where the price comes from.")
def prices_set(name: str, prompt: float, completion: float, note: str) -> None:
    """Set the price of a model (as named in calls) or of a cloud reference."""
    from kg.analytics import set_price

    with context.session() as session:
        set_price(session, name, prompt, completion, note)
    emit(f"price of {name}: {prompt:g} per 1M prompt tokens, {completion:g} per 1M output tokens")


@prices.command(name="list")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def prices_list(as_json_: bool) -> None:
    """Known prices."""
    from kg.analytics import list_prices

    with context.session() as session:
        rows = list_prices(session)
    emit(as_json(rows) if as_json_ else table(rows))


@prices.command(name="delete")
@click.argument("name")
def prices_delete(name: str) -> None:
    """Forget a price."""
    from kg.analytics import delete_price

    with context.session() as session:
        delete_price(session, name)
    emit(f"price of {name} deleted")
