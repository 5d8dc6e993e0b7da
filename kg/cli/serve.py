"""`kg serve`: the HTTP API, live run progress, health, metrics and the web page."""

from __future__ import annotations

import socket
from pathlib import Path
from types import FrameType

import click

from kg import tokens
from kg.cli import context
from kg.cli.render import emit
from kg.errors import UsageError

GRACE_S = 5  # requests still open at shutdown get this long to finish
# Idle keep-alive connections close after this long. uvicorn's default (5 s) closes connections
# that clients polling every few seconds are about to reuse, which a loaded server turns into
# reset connections on the client's side.
KEEP_ALIVE_S = 30


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
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def serve(host: str, port: int, roots: tuple[Path, ...], max_upload_mb: float, max_runs: int,
          cors_origins: tuple[str, ...], access_log: bool) -> None:
    """Serve the graph over HTTP: JSON API (docs at /docs), run progress as Server-Sent
    Events, /healthz, /readyz, /metrics, and a web page at / to explore the graph."""
    try:
        import uvicorn

        from kg.server import ServerConfig, create_app
        from kg.server.config import MB, is_loopback, resolve_roots
    except ImportError as exc:
        raise UsageError(f"kg serve needs the server extra ({exc.name} is missing): "
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
                              cors_origins=cors_origins,
                              models_dir=context.settings().models_dir)
        app = create_app(database, config)
        shown = f"[{host}]" if ":" in host else host
        emit(f"kg serve: http://{shown}:{config.port}/ (API docs at /docs; database "
             f"{database.display_url}; path runs under: "
             f"{', '.join(map(str, allowed)) or 'none (uploads only)'})", err=True)
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
