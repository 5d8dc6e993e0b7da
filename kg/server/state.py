"""What every request handler reaches: the database, the options, and the server's services;
for the graph and run routes, the database as the request's collection sees it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from prometheus_client import CollectorRegistry

from kg.db import Database
from kg.jsonable import json_default
from kg.server.auth import Authenticator, Caller
from kg.server.config import ServerConfig
from kg.server.events import EventHub
from kg.server.health import HealthProbe
from kg.server.jobs import RunManager
from kg.server.scoping import CollectionIndex


@dataclass
class ServerState:
    db: Database
    config: ServerConfig
    auth: Authenticator
    jobs: RunManager
    events: EventHub
    health: HealthProbe
    collections: CollectionIndex
    registry: CollectorRegistry
    upload_dir: Path
    loop: asyncio.AbstractEventLoop | None = None  # the server's, once it runs

    def stopping(self) -> None:
        """The server is going down (any thread, a signal handler too): end event streams
        and ask every run to stop, without waiting for open connections to finish."""
        self.jobs.cancel_all()
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.close)


def server(request: Request) -> ServerState:
    """A dependency: this server's state."""
    state: ServerState = request.app.state.kg
    return state


State = Annotated[ServerState, Depends(server)]


def in_collection(request: Request, principal: Caller) -> ServerState:
    """A dependency: this server's state with `db` working in the request's collection (the
    `{collection}` of /c/{collection}/..., else default), if the caller may use it."""
    state: ServerState = request.app.state.kg
    db = state.collections.resolve(request.path_params.get("collection"), principal)
    return replace(state, db=db)


Scoped = Annotated[ServerState, Depends(in_collection)]


def base_path(request: Request) -> str:
    """The prefix of the request's collection routes: `/c/NAME`, or "" for the routes of
    default without one."""
    name = request.path_params.get("collection")
    return "" if name is None else f"/c/{quote(name, safe='')}"


def json_response(data: Any, status: int = 200) -> Response:
    """Plain JSON (datetimes as ISO 8601), without FastAPI's slower generic encoder."""
    body = json.dumps(data, default=json_default, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")
