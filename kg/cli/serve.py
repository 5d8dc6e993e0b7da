"""`kg serve`: the HTTP API, live run progress, health, metrics and the web page."""

from __future__ import annotations

import socket
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from kg import tokens
from kg.cli import context
from kg.cli.render import emit
from kg.db.scope import rls_available
from kg.errors import UsageError

if TYPE_CHECKING:
    from kg.db import Database

GRACE_S = 5  # requests still open at shutdown get this long to finish
# Idle keep-alive connections close after this long. uvicorn's default (5 s) closes connections
# that clients polling every few seconds are about to reuse, which a loaded server turns into
# reset connections on the client's side.
KEEP_ALIVE_S = 30
FIRST_TOKEN = "kg-serve"  # the admin token a first start creates


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket, or a one-line UsageError (port taken, unknown host)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}; give an address or host "
                         "name of this machine with --host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another "
                         "--port or stop what uses it") from None
    return sock


def _first_token(database: Database, base: str) -> None:
    """No open mode, as notebook servers do it: when no token was ever created, create an
    admin token now and print a URL carrying it. The token is in the fragment (`#token=`),
    which the browser never sends to a server, so it stays out of access logs and Referer
    headers; the page moves it into sessionStorage and removes it from the address bar."""
    with database.session() as session:
        if tokens.any_live(session):
            return
        if tokens.any_issued(session):
            emit("kg serve: every API token is revoked, so every request is refused; create "
                 "one with `kg admin tokens create NAME --scope admin`", err=True)
            return
        _row, secret = tokens.create(session, FIRST_TOKEN, "admin",
                                     by=context.actor(None))
    emit(f"kg serve: first start, so it created the admin token {FIRST_TOKEN} (shown only "
         f"now; revoke it with `kg admin tokens revoke {FIRST_TOKEN}`). Open {base}#token="
         f"{secret} or send `Authorization: Bearer {secret}`", err=True)


def _say_isolation(database: Database) -> None:
    """On PostgreSQL without the role the policies are for, collections are kept apart by
    kg's own filters only: say so once, with the fix."""
    if database.dialect != "postgresql":
        return
    with database.transaction() as conn:
        available = rls_available(conn)
    if not available:
        emit("note: row-level security is off (migration 0015 could not create the role "
             "kg_scoped: the database user lacks CREATEROLE); collections are kept apart by "
             "kg's filters only. Run `CREATE ROLE kg_scoped NOLOGIN; GRANT kg_scoped TO "
             "<user>;` as a superuser, then `kg db downgrade 0014 --yes && kg db upgrade`",
             err=True)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than loopback needs an API token first.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--root", "roots", multiple=True, metavar="DIR",
              type=click.Path(path_type=Path, file_okay=False),
              help="A folder whose files `POST /runs` may ingest by path (repeatable). "
                   "Default: none, so runs take uploaded files only.")
@click.option("--max-upload-mb", type=click.FloatRange(0.001, 10240), default=50.0,
              show_default=True, help="Largest upload `POST /runs` accepts (all files).")
@click.option("--max-runs", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Ingestions this server runs at once.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let browser pages from ORIGIN call the API (repeatable; off by default).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another host name clients may use for this server (repeatable), e.g. the "
                   "name a reverse proxy forwards; loopback names and --host always work.")
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def serve(host: str, port: int, roots: tuple[Path, ...], max_upload_mb: float, max_runs: int,
          cors_origins: tuple[str, ...], allowed_hosts: tuple[str, ...],
          access_log: bool) -> None:
    """Serve the graph over HTTP: JSON API (docs at /docs), run progress as Server-Sent
    Events, /healthz, /readyz, /metrics, and a web page at / to explore the graph.

    Every request needs a token. The first start (no token created yet) creates an admin
    token and prints a URL that carries it: open it, and the page keeps the token for that
    browser tab."""
    try:
        import uvicorn

        from kg.server import ServerConfig, create_app
        from kg.server.config import MB, is_loopback, resolve_roots
    except ImportError as exc:
        missing = exc.name or (str(exc).splitlines() or ["a package"])[0]
        raise UsageError(f"kg serve needs the server extra ({missing} is missing): "
                         "pip install 'kg[server]'") from None
    allowed = resolve_roots(roots)
    database = context.database()
    try:
        if not is_loopback(host):
            with database.session() as session:
                if not tokens.any_live(session):
                    raise UsageError(
                        f"refusing to listen on {host} while no API token exists (anyone who "
                        "reaches it could start runs); create one with `kg admin tokens "
                        "create NAME --scope admin`, or keep --host 127.0.0.1")
        sock = _listen(host, port)
        config = ServerConfig(host=host, port=sock.getsockname()[1], roots=allowed,
                              max_upload_bytes=int(max_upload_mb * MB), max_runs=max_runs,
                              cors_origins=cors_origins, allowed_hosts=allowed_hosts,
                              models_dir=context.settings().models_dir)
        app = create_app(database, config)
        shown = f"[{host}]" if ":" in host else host
        base = f"http://{shown}:{config.port}/"
        emit(f"kg serve: {base} (API docs at /docs; database "
             f"{database.display_url}; path runs under: "
             f"{', '.join(map(str, allowed)) or 'none (uploads only)'})", err=True)
        _first_token(database, base)
        _say_isolation(database)
        state = app.state.kg

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                # Event streams never finish by themselves: end them (and stop runs) as soon
                # as the signal arrives, so the shutdown does not wait out the grace period.
                state.stopping()
                super().handle_exit(sig, frame)

        server = Server(uvicorn.Config(
            app, log_level="info" if access_log else "warning", access_log=access_log,
            timeout_graceful_shutdown=GRACE_S, timeout_keep_alive=KEEP_ALIVE_S,
            server_header=False))
        server.run(sockets=[sock])
    finally:
        database.dispose()
