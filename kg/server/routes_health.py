"""`/healthz`, `/readyz` (no token: probes), `/metrics` and `/whoami` (read scope)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kg.server.auth import Reader
from kg.server.errors import error_response
from kg.server.state import State, json_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Database answers and the active profile's backend is reachable")
def healthz(state: State) -> Response:
    verdict = state.health.check()
    if not verdict.ok:
        return error_response(503, verdict.detail)
    return json_response({"status": "ok", "database": "ok", "backend": verdict.detail})


@router.get("/readyz", summary="The database answers")
def readyz(state: State) -> Response:
    verdict = state.health.database()
    if not verdict.ok:
        return error_response(503, verdict.detail)
    return json_response({"status": "ok", "database": "ok"})


@router.get("/metrics", summary="Prometheus metrics, computed from the database")
def metrics(state: State,
            _who: Reader) -> Response:
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/whoami", summary="The token this request carries: name and scope")
def whoami(state: State,
           who: Reader) -> Response:
    return json_response({"name": who.name, "scope": who.scope.value,
                          "tokens_required": state.auth.required()})
