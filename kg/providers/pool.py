"""Several endpoints behind one profile (`--base-url` given more than once).

Each request goes to the healthy endpoint with the fewest requests outstanding (ties in turn,
so equal servers share evenly). An endpoint that fails (no connection, 5xx, timeout) is
ejected and the same request goes at once to another one; after a cool-down it gets one
request as a probe, and only a good answer brings it back. Only when every endpoint is ejected
does the failure reach the engine (and its circuit breaker): a run stops when all are down.
A busy answer (503/429) is overload, not failure: it is passed on for the engine to back off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kg.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    ServerFailure,
)
from kg.providers.base import (
    CheckResult,
    CheckStatus,
    Completion,
    Image,
    LoadedModel,
    Message,
    ModelEntry,
    Provider,
)
from kg.urls import redact_url

if TYPE_CHECKING:
    from kg.profiles.settings import ProviderSettings

log = logging.getLogger(__name__)

COOL_DOWN_S = 5.0
MAX_COOL_DOWN_S = 60.0
# Failures that say the endpoint (not the request) is the problem.
EJECTING = (ProviderUnavailable, ServerFailure, ProviderTimeout)
SEPARATOR = ","


def split_urls(value: str | None) -> list[str]:
    """The URLs of a base_url setting (one, or several separated by commas)."""
    if not value:
        return []
    return [u.strip().rstrip("/") for u in value.split(SEPARATOR) if u.strip()]


@dataclass
class Endpoint:
    url: str
    provider: Provider
    outstanding: int = 0
    ejected_until: float = 0.0  # monotonic time; 0 = healthy
    cool_down_s: float = COOL_DOWN_S
    probing: bool = False  # one request is testing it after a cool-down
    requests: int = 0
    failures: int = 0

    @property
    def shown(self) -> str:
        return redact_url(self.url) or self.url


class EndpointPool:
    """A Provider over several endpoints of the same backend and model; thread-safe."""

    def __init__(self, settings: ProviderSettings,
                 build: Callable[[ProviderSettings], Provider], *,
                 cool_down_s: float = COOL_DOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = 0
        self.endpoints = [
            Endpoint(url, build(settings.model_copy(update={"base_url": url})),
                     cool_down_s=cool_down_s)
            for url in split_urls(settings.base_url)
        ]

    # -- choosing --------------------------------------------------------------------------
    def _pick(self, tried: set[int]) -> Endpoint | None:
        """A cooled-down endpoint to probe, else the healthy one with the fewest outstanding
        requests."""
        now = self._clock()
        with self._lock:
            candidates = []
            for i, e in enumerate(self.endpoints):
                if i in tried:
                    continue
                if e.ejected_until == 0.0:
                    candidates.append((e.outstanding, (i - self._turn) % len(self.endpoints), i))
                elif e.ejected_until <= now and not e.probing:
                    # Cooled down: it gets the next request, alone, as a probe (on failure the
                    # request moves on to a healthy endpoint at once).
                    candidates.append((-1, (i - self._turn) % len(self.endpoints), i))
            if not candidates:
                return None
            _, _, index = min(candidates)
            chosen = self.endpoints[index]
            self._turn = (index + 1) % len(self.endpoints)
            if chosen.ejected_until:
                chosen.probing = True
            chosen.outstanding += 1
            chosen.requests += 1
            return chosen

    def _done(self, endpoint: Endpoint, error: ProviderError | None) -> None:
        with self._lock:
            endpoint.outstanding -= 1
            was_probe, endpoint.probing = endpoint.probing, False
            if error is None:
                if endpoint.ejected_until:
                    log.info("endpoint %s answers again: back in the pool", endpoint.shown)
                endpoint.ejected_until, endpoint.cool_down_s = 0.0, self.cool_down_s
                return
            endpoint.failures += 1
            if was_probe:
                endpoint.cool_down_s = min(MAX_COOL_DOWN_S, endpoint.cool_down_s * 2)
            endpoint.ejected_until = self._clock() + endpoint.cool_down_s
            log.warning("endpoint %s ejected for %.0fs: %s", endpoint.shown,
                        endpoint.cool_down_s, error.message)

    def _each(self, work: Callable[[Provider], Any]) -> Any:
        """Run one request on the best endpoint, moving on while endpoints fail."""
        tried: set[int] = set()
        last: ProviderError | None = None
        while True:
            endpoint = self._pick(tried)
            if endpoint is None:
                if last is not None:
                    raise last
                raise ProviderUnavailable(
                    f"every endpoint of profile {self.settings.profile_name} is cooling down "
                    "after failures; check the servers, then resume")
            tried.add(self.endpoints.index(endpoint))
            try:
                result = work(endpoint.provider)
            except EJECTING as exc:
                self._done(endpoint, exc)
                last = exc
                continue
            except BaseException:
                self._done(endpoint, None)  # the server answered; the request was the problem
                raise
            self._done(endpoint, None)
            if isinstance(result, Completion):
                result.endpoint = endpoint.shown
            return result

    # -- the Provider protocol -------------------------------------------------------------
    def complete(self, messages: list[Message], json_schema: dict[str, Any]) -> Completion:
        result: Completion = self._each(lambda p: p.complete(messages, json_schema))
        return result

    def check(self) -> list[CheckResult]:
        """Every endpoint is checked; the run starts if at least one is ready."""
        results: list[CheckResult] = []
        errors: list[ProviderError] = []
        for e in self.endpoints:
            try:
                for r in e.provider.check():
                    results.append(CheckResult(r.name, r.status, f"{e.shown}: {r.detail}"))
            except ProviderError as exc:
                if not isinstance(exc, EJECTING):
                    raise  # wrong model or key: the same everywhere, fix the profile
                errors.append(exc)
                e.ejected_until = self._clock() + e.cool_down_s
                results.append(CheckResult("server", CheckStatus.WARN,
                                           f"{e.shown}: {exc.message}"))
        if len(errors) == len(self.endpoints):
            raise errors[0]
        return results

    def context_check(self) -> CheckResult:
        return self._each(lambda p: p.context_check())

    def describe(self, prompt: str, image: Image) -> Completion:
        """An image request, routed like any other (vision profiles with several endpoints)."""
        result: Completion = self._each(lambda p: p.describe(prompt, image))  # type: ignore[attr-defined]
        return result

    def vision_check(self) -> CheckResult:
        return self._each(lambda p: p.vision_check())  # type: ignore[attr-defined]

    def load(self) -> None:
        for e in self.endpoints:
            e.provider.load()

    def unload(self) -> None:
        for e in self.endpoints:
            e.provider.unload()

    def status(self) -> list[LoadedModel]:
        return [m for e in self.endpoints for m in e.provider.status()]

    def models(self) -> list[ModelEntry]:
        return self._each(lambda p: p.models())

    def close(self) -> None:
        for e in self.endpoints:
            e.provider.close()

    def shares(self) -> dict[str, int]:
        """Requests sent to each endpoint so far (benchmarks, `kg admin extraction test`)."""
        with self._lock:
            return {e.shown: e.requests for e in self.endpoints}
