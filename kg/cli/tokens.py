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
@click.option("--collection", "collections", multiple=True, metavar="NAME",
              shell_complete=context.complete_collection_names,
              help="Limit the token to this collection (repeat for several; default: every "
                   "collection, also those made later).")
@BY
@json_option
def create(name: str, scope: str, collections: tuple[str, ...], by: str | None,
           output: str) -> None:
    """Create a token NAME and print its secret (once: only its hash is kept)."""
    with context.session() as session:
        data, secret = api_tokens.create(session, name, scope, by=context.actor(by),
                                         collections=collections or None)
    if output != "table":
        emit_object({**data, "token": secret}, output)
        return
    emit(secret)
    where = f", collections {', '.join(data['collections'])}" if data["collections"] else ""
    emit(f"token {name} ({scope}{where}) created; this is the only time it is shown: send it "
         "as `Authorization: Bearer TOKEN`", err=True)


@tokens.command(name="list")
@click.option("--all", "include_revoked", is_flag=True, help="Also revoked tokens.")
@output_option
def list_(include_revoked: bool, output: str) -> None:
    """Tokens (never their secrets): name, scope, collections, when created and last used."""
    with context.session() as session:
        rows = api_tokens.list_tokens(session, include_revoked=include_revoked)
    if output in ("table", "csv"):
        # In JSON a token of every collection has null; a cell needs a word for it.
        rows = [{**r, "collections": "all" if r["collections"] is None
                 else ", ".join(r["collections"]) or "none"} for r in rows]
    columns = ["name", "scope", "collections", "hint", "created_at", "created_by",
               "last_used_at"]
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
