"""`kg admin extraction ...`: view and change the LLM settings stored in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from kg.cli import context
from kg.cli.render import as_json, emit, emit_object, emit_rows, key_values, output_option
from kg.cli.routing import routing
from kg.cli.tokens import tokens
from kg.profiles import storage
from kg.profiles.fields import SETTINGS, Setting
from kg.profiles.validation import check_actor
from kg.profiles.views import view
from kg.providers import registry
from kg.urls import redact_url

F = TypeVar("F", bound=Callable[..., Any])
PROFILE_COLUMNS = ["active", "name", "provider", "model", "base_url", "thinking_mode",
                   "max_parallel", "revision", "updated_at"]
# The analytics table keeps what fits 100 columns; --json / --csv keep every figure.
ANALYTICS_TABLE = {"chunks": "chunks", "calls": "calls", "success_rate": "ok",
                   "valid_first_try_rate": "1st try", "failures": "failures",
                   "tokens_per_s": "tok/s", "latency_p50_ms": "p50 ms",
                   "latency_p95_ms": "p95 ms", "cost": "cost", "savings": "savings",
                   "fallback_rate": "fallback", "cache_hit_rate": "cached"}


@click.group()
def admin() -> None:
    """Operator commands."""


@admin.group()
def extraction() -> None:
    """Extraction profiles: which LLM kg uses and how (changes apply to running ingestions)."""


class _Clearable(click.ParamType):
    """A number, or '' to clear a setting that may be empty."""

    def __init__(self, inner: click.ParamType) -> None:
        self.inner = inner
        self.name = inner.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            return ""
        return self.inner.convert(value, param, ctx)


def _click_type(setting: Setting) -> click.ParamType:
    if setting.kind is str:
        return click.STRING
    number = click.INT if setting.kind is int else click.FLOAT
    return _Clearable(number) if setting.nullable else number


def setting_options(func: F) -> F:
    """One flag per profile setting, generated from kg.profiles.settings.ProfileSettings."""
    for setting in reversed(SETTINGS.values()):
        # base_url: repeated for several endpoints (joined with commas by `set`).
        func = click.option(setting.flag, setting.name, type=_click_type(setting),
                            multiple=setting.name == "base_url", help=setting.help())(func)
    return func


def _actor(by: str | None) -> str:
    """--by as given (checked, so --by '' is refused rather than ignored), else $USER."""
    return context.actor(check_actor(by) if by is not None else None)


def _display(field: str, value: Any, provider: str | None = None) -> Any:
    if value is None:
        if field == "num_threads":
            return "auto"
        if field == "base_url" and provider and registry.is_registered(provider):
            fallback = registry.spec(provider).base_url_fallback
            return f"- ({fallback})" if fallback else "-"
        return "-"
    if field == "gpu_layers" and value == -1:
        return "auto (-1)"
    if field == "gpu_layers" and value == 0:
        return "0 (CPU only)"
    return value


@extraction.command()
@click.option("--profile", "name",
              shell_complete=context.complete_profile_names,
              help="Profile to show (default: the active one).")
@output_option
def show(name: str | None, output: str) -> None:
    """Show every setting of the active (or named) profile."""
    with context.session() as session:
        data = view(storage.get_profile(session, name)).as_dict()
    if output != "table":
        emit_object(data, output)
        return
    emit(key_values((k, _display(k, v, data["provider"])) for k, v in data.items()))


@extraction.command(name="list")
@output_option
def list_(output: str) -> None:
    """List profiles; the active one is marked."""
    with context.session() as session:
        rows = [view(p).as_dict() for p in storage.list_profiles(session)]
    if output == "table":
        rows = [{**r, "active": "*" if r["active"] else ""} for r in rows]
    emit_rows(rows, output, PROFILE_COLUMNS if output == "table" else None)


@extraction.command(name="set")
@click.option("--profile", "name",
              shell_complete=context.complete_profile_names,
              help="Profile to change or create (default: the active one).")
@setting_options
@click.option("--activate", is_flag=True, help="Also make this the active profile.")
@click.option("--by", help="Who makes the change (default: $USER).")
@click.option("--json", "as_json_", is_flag=True, help="Machine-readable output.")
def set_(name: str | None, activate: bool, by: str | None, as_json_: bool, **updates: Any) -> None:
    """Change settings (flags not given keep their value); a new --profile name creates it."""
    urls = updates.get("base_url")
    if isinstance(urls, tuple):  # --base-url repeated: several endpoints of one model
        updates["base_url"] = None if not urls else ",".join(urls) if all(urls) else ""
    with context.session() as session:
        result = storage.set_profile(
            session, updates, name=name, activate=activate, by=_actor(by)
        )
    for warning in result.warnings:
        emit(f"warning: {warning}", err=True)
    if as_json_:
        emit(as_json({
            "name": result.name, "created": result.created, "activated": result.activated,
            "revision": result.revision,
            "changes": [{"field": c.field, "old": _shown(c.field, c.old),
                         "new": _shown(c.field, c.new)} for c in result.changes],
        }))
        return
    if not result.changes:
        emit(f"profile {result.name}: no changes (revision {result.revision})")
        return
    verb = "created" if result.created else "changed"
    emit(f"profile {result.name} {verb}, revision {result.revision}:")
    for change in result.changes:
        new = _display(change.field, _shown(change.field, change.new))
        old = _display(change.field, _shown(change.field, change.old))
        emit(f"  {change.field}: {new}" if result.created else f"  {change.field}: {old} -> {new}")
    if result.activated:
        emit(f"profile {result.name} is now active")


def _shown(field: str, value: Any) -> Any:
    return redact_url(value) if field == "base_url" else value


@extraction.command()
@click.argument("name", shell_complete=context.complete_profile_names)
@click.option("--by", help="Who makes the change (default: $USER).")
def use(name: str, by: str | None) -> None:
    """Make NAME the active profile (running ingestions switch on their next chunk)."""
    with context.session() as session:
        previous, changed = storage.use_profile(session, name, by=_actor(by))
    if changed:
        emit(f"active profile: {previous or '(none)'} -> {name}")
    else:
        emit(f"profile {name} is already active")


@extraction.command()
@click.option("--limit", default=20, show_default=True, type=context.LIMIT)
@click.option("--profile", "name",
              shell_complete=context.complete_profile_names,
              help="Only this profile's changes.")
@output_option
def history(limit: int, name: str | None, output: str) -> None:
    """Who changed which setting when, newest first."""
    with context.session() as session:
        rows = storage.history(session, limit=limit, name=name)
    emit_rows(rows, output)


@extraction.command()
@click.argument("name", shell_complete=context.complete_profile_names)
@click.option("--by", help="Who makes the change (default: $USER).")
def delete(name: str, by: str | None) -> None:
    """Delete a profile (not the active one)."""
    with context.session() as session:
        storage.delete_profile(session, name, by=_actor(by))
    emit(f"profile {name} deleted")


@extraction.command()
@output_option
def providers(output: str) -> None:
    """Registered providers: what each needs, how it takes structured output, thinks, reloads."""
    rows = [s.as_dict() for s in registry.specs()]
    if output == "table":
        rows = [{**r, "defaults": None} for r in rows]
    emit_rows(rows, output, ["name", "needs_base_url", "structured_output", "thinking", "reload",
                             "images", "summary"] if output == "table" else None)


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
@click.option("--profile", "name",
              shell_complete=context.complete_profile_names,
              help="Profile to check (default: the active one).")
@output_option
def test_(name: str | None, output: str) -> None:
    """Preflight a profile before a long run: one line per check, exit 1 if any fails."""
    from kg.extraction import vision
    from kg.operations import preflight

    with context.session() as session:
        checks = preflight(session, name, context.settings().models_dir)
        # A vision profile: can its model see? (one line; none without a vision profile)
        checks += vision.checks(session, name, context.settings().models_dir)
    if output == "table":
        for c in checks:
            emit(f"{c.status.value.upper():4}  {c.name:8}  {c.detail}")
    else:
        emit_rows([c.as_dict() for c in checks], output)
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)


@extraction.command()
@click.option("--last-30-days", is_flag=True, help="Only the last 30 days.")
@click.option("--since", help="Only calls since this date (YYYY-MM-DD, UTC).")
@click.option("--by", "by", type=click.Choice(["provider", "model", "profile", "day",
                                               "endpoint", "kind"]),
              default="model", show_default=True,
              help="Group by; kind splits extraction from the readers of images "
                   "(describe, ocr).")
@click.option("--compare-to", help="A priced model: savings = its cost for the same tokens "
                                   "minus ours.")
@output_option
def analytics(last_30_days: bool, since: str | None, by: str, compare_to: str | None,
              output: str) -> None:
    """Chunks, calls, success, first-try JSON validity, tokens, speed, latency, cost, savings."""
    from kg.analytics import analytics as compute
    from kg.analytics import parse_since

    start = parse_since(since, last_30_days)
    with context.session() as session:
        rows = compute(session, since=start, by=by, compare_to=compare_to)
    if output == "json" or output == "jsonl":
        emit_rows(rows, output)
    elif output == "csv":
        emit_rows([{**r, "failures": ";".join(f"{k}={v}" for k, v in r["failures"].items())}
                   for r in rows], output)
    else:
        emit_rows([_analytics_cells(r, by) for r in rows], output)


def _analytics_cells(row: dict[str, Any], by: str) -> dict[str, Any]:
    cells: dict[str, Any] = {by: row[by]}
    for key, label in ANALYTICS_TABLE.items():
        if key not in row:
            continue
        value = row[key]
        if key.endswith("_rate") and value is not None:
            value = f"{value * 100:.1f}%"
        elif key == "failures":
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        cells[label] = value
    return cells


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
            context_window = storage.get_active(session).context_window
    data = advise(model, params=params, vram=vram, context_window=context_window)
    if as_json_:
        emit(as_json(data))
        return
    emit(f"{data['model']}: {data['params_b']:g}B parameters, context {data['context_window']}"
         f", {data['layers_assumed']} layers assumed; VRAM "
         f"{format(data['vram_gb'], '.0f') + ' GB' if data['vram_gb'] else 'unknown'} "
         f"({data['vram_source']})")
    emit_rows(data["options"], "table")
    emit(f"recommended: {data['verdict']}")
    if data["ollama_pull"]:
        emit(f"ollama pull {data['ollama_pull']}")


@admin.group()
def prices() -> None:
    """Prices per million tokens (cost and savings in analytics; unpriced models cost 0)."""


@prices.command(name="set")
@click.argument("name")
@click.option("--prompt", type=float, required=True, help="Price per 1M prompt tokens, 0 or more.")
@click.option("--completion", type=float, required=True,
              help="Price per 1M output tokens, 0 or more.")
@click.option("--note", default="", help="Where the price comes from.")
def prices_set(name: str, prompt: float, completion: float, note: str) -> None:
    """Set the price of a model (as named in calls) or of a cloud reference."""
    from kg.analytics import set_price

    with context.session() as session:
        set_price(session, name, prompt, completion, note)
    emit(f"price of {name}: {prompt:g} per 1M prompt tokens, {completion:g} per 1M output tokens")


@prices.command(name="list")
@output_option
def prices_list(output: str) -> None:
    """Known prices."""
    from kg.analytics import list_prices

    with context.session() as session:
        rows = list_prices(session)
    emit_rows(rows, output)


@prices.command(name="delete")
@click.argument("name")
def prices_delete(name: str) -> None:
    """Forget a price."""
    from kg.analytics import delete_price

    with context.session() as session:
        delete_price(session, name)
    emit(f"price of {name} deleted")


admin.add_command(tokens)  # `kg admin tokens ...` (API tokens for `kg serve`)
admin.add_command(routing)  # `kg admin routing ...` (which profile serves which chunks)
