"""`kg mcp`: serve the graph to agents over the Model Context Protocol (stdio or HTTP)."""

from __future__ import annotations

import click

from kg.cli import context
from kg.errors import UsageError


@click.command(name="mcp")
@click.option("--http", "http", is_flag=True,
              help="Serve streamable HTTP (at /mcp) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on with --http (no authentication: keep it local).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on with --http.")
@click.option("--token", envvar="KG_MCP_TOKEN", metavar="SECRET",
              help="An admin API token: also offer the curation tools (rename, merge). "
                   "Without it the tools are read-only. [env: KG_MCP_TOKEN]")
def mcp(http: bool, host: str, port: int, token: str | None) -> None:
    """Tools for agents: search, concept, neighbors, evidence, ask (the official MCP SDK)."""
    try:
        from kg.server.mcp import admin_actor, build
    except ImportError as exc:
        raise UsageError(f"kg mcp needs the server extra ({exc.name} is missing): "
                         "pip install 'kg[server]'") from None
    db = context.database()
    try:
        server = build(db, actor=admin_actor(db, token), models_dir=context.settings().models_dir)
        if http:
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")
    finally:
        db.dispose()
