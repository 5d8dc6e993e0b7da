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
    database = context.database()
    with database.session() as session:
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
    database = context.database()
    with database.session() as session:
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
    database = context.database()
    with database.session() as session:
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
    database = context.database()
    with database.session() as session:
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
    database = context.database()
    with database.session() as session:
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
    database = context.database()
    with database.session() as session:
        config.delete_profile(session, name, by=context.actor(by))
    emit(f"profile {name} deleted")
