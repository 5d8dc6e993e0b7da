"""`kg admin tokens create|list|revoke`: bearer tokens for `kg serve`."""

from __future__ import annotations

import click

from kg import tokens as api_tokens
from kg.cli import context
from kg.cli.render import emit, emit_object, emit_rows, json_option, output_option

BY = click.option("--by", help="Who makes the change (default: $USER).")


@click.group()
def tokens() -> None:
    """API tokens for `kg serve` (stored hashed; the secret is shown once, at creation)."""


@tokens.command(name="create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "admin"]), default="read",
              show_default=True,
              help="read: every GET; admin: also profile changes and runs.")
@BY
@json_option
def create(name: str, scope: str, by: str | None, output: str) -> None:
    """Create a token NAME and print its secret (once: only its hash is kept)."""
    with context.session() as session:
        data, secret = api_tokens.create(session, name, scope, by=context.actor(by))
    if output != "table":
        emit_object({**data, "token": secret}, output)
        return
    emit(secret)
    emit(f"token {name} ({scope}) created; this is the only time it is shown: send it as "
         "`Authorization: Bearer TOKEN`", err=True)


@tokens.command(name="list")
@click.option("--all", "include_revoked", is_flag=True, help="Also revoked tokens.")
@output_option
def list_(include_revoked: bool, output: str) -> None:
    """Tokens (never their secrets): name, scope, when created and last used."""
    with context.session() as session:
        rows = api_tokens.list_tokens(session, include_revoked=include_revoked)
    columns = ["name", "scope", "hint", "created_at", "created_by", "last_used_at"]
    if include_revoked:
        columns.append("revoked_at")
    emit_rows(rows, output, columns if output in ("table", "csv") else None)


@tokens.command(name="revoke")
@click.argument("name")
@BY
def revoke(name: str, by: str | None) -> None:
    """Revoke token NAME: requests that carry it are refused from now on."""
    with context.session() as session:
        api_tokens.revoke(session, name, by=context.actor(by))
    emit(f"token {name} revoked")
