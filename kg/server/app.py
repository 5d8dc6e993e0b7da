"""The FastAPI application: routes, error handling, limits, the web page and its lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from kg import __version__
from kg.db import Database
from kg.server import (
    errors,
    routes_ask,
    routes_collections,
    routes_curation,
    routes_graph,
    routes_health,
    routes_profiles,
    routes_resolution,
    routes_runs,
)
from kg.server.auth import Authenticator
from kg.server.config import ServerConfig
from kg.server.events import EventHub
from kg.server.guard import RequestGuard, allowed_hosts, declared_content_type
from kg.server.health import HealthProbe
from kg.server.jobs import RunManager
from kg.server.limits import BodyLimit, SecurityHeaders
from kg.server.metrics import HttpCounters, HttpMetrics, registry_for
from kg.server.scoping import CollectionIndex
from kg.server.state import ServerState
from kg.settings import load_settings

STATIC = Path(__file__).resolve().parent / "static"
DESCRIPTION = """The kg knowledge graph over HTTP: concepts, relationships and their verbatim
evidence, the graph around a concept, exports, extraction profiles and runs with live progress
(Server-Sent Events). The graph and run routes answer for one collection: under
`/c/{collection}/...`, or `default` without the prefix (`GET /collections` lists those a token
may use). Send `Authorization: Bearer TOKEN` (`kg admin tokens create NAME`): the read scope
covers every GET, admin also profile changes, runs and curation (accepting or rejecting
duplicates); a token may be limited to some
collections (`--collection NAME`). Bodies are JSON
(`Content-Type: application/json`; `POST /runs` also takes multipart uploads); requests from
browser pages of other origins may not change anything. Errors are `{"error": "one line"}`."""


def collection_parameter(collection: Annotated[str, PathParam(
        description="A collection's name (`GET /collections`); the same route without "
                    "/c/{collection} is the default collection's.")]) -> None:
    """Declares `{collection}` for the docs; `in_collection` resolves it, after the token."""


def create_app(db: Database, config: ServerConfig | None = None) -> FastAPI:
    """The application serving one database (which it does not close)."""
    config = config or ServerConfig()
    settings = load_settings()
    models_dir = config.models_dir or settings.models_dir
    registry = registry_for(db, config.metrics_ttl_s)
    state = ServerState(
        db=db, config=config,
        auth=Authenticator(db, open_until_first_token=config.loopback
                           and config.open_until_first_token, ttl_s=config.token_ttl_s),
        jobs=RunManager(db, models_dir, config.max_runs),
        events=EventHub(db, config.poll_s),
        health=HealthProbe(db, models_dir, ttl_s=config.health_ttl_s,
                           timeout_s=config.health_timeout_s),
        collections=CollectionIndex(db, config.collection_ttl_s),
        registry=registry, upload_dir=config.upload_dir or settings.home / "uploads")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        yield
        # Streams end, runs stop where they stand (interrupted, resumable), threads finish.
        state.events.close()
        await to_thread.run_sync(state.jobs.shutdown)
        state.auth.close()

    app = FastAPI(title="kg", version=__version__, description=DESCRIPTION, docs_url=None,
                  redoc_url=None, lifespan=lifespan,
                  dependencies=[Depends(declared_content_type)])
    app.state.kg = state
    errors.install(app)
    # Profiles, health and tokens belong to no collection: only at the root.
    for module in (routes_health, routes_collections, routes_profiles):
        app.include_router(module.router)
    for module in (routes_runs, routes_graph, routes_ask, routes_resolution, routes_curation):
        app.include_router(module.router)
        app.include_router(module.router, prefix="/c/{collection}",
                           dependencies=[Depends(collection_parameter)])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        # Swagger UI from the wheel, not from a CDN: /docs works air-gapped. It starts from
        # static/docs.js, not an inline script, so /docs gets a CSP without 'unsafe-inline'.
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    app.add_middleware(BodyLimit, json_limit=config.max_json_bytes,
                       upload_limit=config.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    # Outside the body limit and CORS: a request from a foreign host or origin is refused
    # before anything reads it (body types are checked by `declared_content_type`).
    app.add_middleware(RequestGuard, hosts=allowed_hosts(config.host, config.allowed_hosts),
                       cors_origins=config.cors_origins)
    app.add_middleware(HttpMetrics, counters=HttpCounters(registry))
    return app
