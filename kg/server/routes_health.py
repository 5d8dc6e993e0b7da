"""`/healthz`, `/readyz` (no token: probes), `/metrics` and `/whoami` (read scope).

A probe without a token learns only ok / not ok: the profile, provider, model, backend URL and
the backend's or database's error text are for callers with a token (read scope and above).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from kg.server.auth import Reader
from kg.server.errors import error_response
from kg.server.health import Verdict
from kg.server.metrics import COLLECTION
from kg.server.state import ServerState, State, json_response

router = APIRouter(tags=["health"])
NOT_OK = "not ok (a token of read scope or above gets the reason)"


def _detailed(request: Request, state: ServerState) -> bool:
    """Whether the caller may see what the probe found (a valid token, or an open app)."""
    return state.auth.optional(request.headers.get("authorization")) is not None


def _answer(verdict: Verdict, detailed: bool, details: dict[str, str]) -> Response:
    if not verdict.ok:
        return error_response(503, verdict.detail if detailed else NOT_OK)
    return json_response({"status": "ok", **details} if detailed else {"status": "ok"})


@router.get("/healthz", summary="Database answers and the active profile's backend is reachable",
            description="Without a token only `{\"status\": \"ok\"}` or a 503; with a token "
                        "of read scope or above also the database and backend it checked.")
def healthz(request: Request, state: State) -> Response:
    detailed = _detailed(request, state)
    verdict = state.health.check()
    return _answer(verdict, detailed, {"database": "ok", "backend": verdict.detail})


@router.get("/readyz", summary="The database answers",
            description="Without a token only `{\"status\": \"ok\"}` or a 503.")
def readyz(request: Request, state: State) -> Response:
    detailed = _detailed(request, state)
    return _answer(state.health.database(), detailed, {"database": "ok"})


class OnlyCollections:
    """A registry's metrics without the samples of collections a token may not use."""

    def __init__(self, registry: CollectorRegistry, names: set[str]) -> None:
        self.registry = registry
        self.names = names

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [s for s in metric.samples
                            if COLLECTION not in s.labels or s.labels[COLLECTION] in self.names]
            yield kept


@router.get("/metrics", summary="Prometheus metrics, computed from the database",
            description="Figures from the database have a `collection` label; a token limited "
                        "to some collections sees only theirs.")
def metrics(state: State,
            who: Reader) -> Response:
    if who.collections is None:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
    names = set(state.collections.allowed(who))
    return Response(generate_latest(OnlyCollections(state.registry, names)),
                    media_type=CONTENT_TYPE_LATEST)


@router.get("/whoami", summary="The token this request carries: name, scope and collections",
            description="`collections` comes only with a token limited to some collections.")
def whoami(state: State,
           who: Reader) -> Response:
    data: dict[str, Any] = {"name": who.name, "scope": who.scope.value,
                            "tokens_required": state.auth.required()}
    if who.collections is not None:
        data["collections"] = state.collections.allowed(who)
    return json_response(data)
