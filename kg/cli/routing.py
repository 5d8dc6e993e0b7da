"""`kg admin routing add|list|delete|test`: which profile serves which chunks."""

from __future__ import annotations

from pathlib import Path

import click

from kg.cli import context
from kg.cli.render import emit, emit_object, emit_rows, json_option, output_option
from kg.routing import rules as rules_

COLUMNS = ["id", "priority", "when", "profile"]


@click.group()
def routing() -> None:
    """Routing rules: chunks matching an expression go to another profile."""


@routing.command(name="add")
@click.option("--when", "expr", required=True,
              help="e.g. 'words > 500 and code_blocks >= 1' or 'path ~ \"docs/*.md\"'; "
                   "features: words, code_blocks, tables, language, path, type.")
@click.option("--profile", required=True, shell_complete=context.complete_profile_names,
              help="The profile that serves matching chunks.")
@click.option("--priority", type=int, default=100, show_default=True,
              help="Rules are tried lowest first; the first match wins.")
@click.option("--by", help="Who makes the change (default: $USER).")
@json_option
def add(expr: str, profile: str, priority: int, by: str | None, output: str) -> None:
    """Add a rule (checked: its expression parses and the profile exists)."""
    with context.session() as session:
        row = rules_.add_rule(session, expr, profile, priority, by=context.actor(by))
        data = {"id": row.id, "priority": row.priority, "when": row.expr,
                "profile": row.profile}
    if output == "json":
        emit_object(data, output)
    else:
        emit(f"routing rule {data['id']} added: {expr} -> {profile}")


@routing.command(name="list")
@output_option
def list_(output: str) -> None:
    """Rules in the order they are tried."""
    with context.session() as session:
        rows = [r.as_dict() for r in rules_.rules(session)]
    emit_rows(rows, output, COLUMNS if output in ("table", "csv") else None)


@routing.command(name="delete")
@click.argument("rule_id", type=context.ROW_ID)
def delete(rule_id: int) -> None:
    """Delete rule RULE_ID."""
    with context.session() as session:
        rules_.delete_rule(session, rule_id)
    emit(f"routing rule {rule_id} deleted")


@routing.command(name="test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--recursive", "-r", is_flag=True, help="Descend into folders.")
@click.option("--profile", shell_complete=context.complete_profile_names,
              help="The run's own profile (default: $KG_PROFILE, else the active one).")
@output_option
def test(paths: tuple[Path, ...], recursive: bool, profile: str | None, output: str) -> None:
    """Show which profile each chunk of PATHS would get (nothing is sent or written)."""
    from kg.routing.preview import preview

    with context.session() as session:
        rows = preview(session, list(paths), recursive, context.profile_choice(profile))
    emit_rows(rows, output, ["path", "chunk", "words", "code_blocks", "tables", "language",
                             "type", "rule", "profile"] if output == "table" else None)
