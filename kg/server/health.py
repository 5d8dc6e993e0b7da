"""Health: the database answers and the active profile's backend is reachable.

The backend check is the provider's own preflight (server up, model present, thinking
supported) with a short timeout; its verdict is cached for a few seconds so that frequent
probes do not turn into a stream of requests to the model server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kg.db import Database
from kg.errors import KgError
from kg.profiles import storage, views
from kg.providers import build_provider


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str  # what answered, or the one-line reason it did not


class HealthProbe:
    """Checks the database and the active backend; `check()` is cached for `ttl_s`."""

    def __init__(self, db: Database, models_dir: Path | None, *, ttl_s: float = 5.0,
                 timeout_s: float = 3.0) -> None:
        self.db = db
        self.models_dir = models_dir
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cached: tuple[float, Verdict] | None = None

    def database(self) -> Verdict:
        try:
            self.db.ping()
        except KgError as exc:
            return Verdict(False, f"database: {exc.message}")
        return Verdict(True, "ok")

    def check(self) -> Verdict:
        # One probe at a time; the others wait for it and share its verdict.
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
            verdict = self._probe()
            self._cached = (time.monotonic(), verdict)
            return verdict

    def _probe(self) -> Verdict:
        database = self.database()
        if not database.ok:
            return database
        try:
            with self.db.session() as session:
                settings = views.provider_settings(storage.get_active(session))
            quick = settings.model_copy(update={"timeout_s": min(settings.timeout_s,
                                                                 self.timeout_s)})
            provider = build_provider(quick, self.models_dir)
            try:
                provider.check()
            finally:
                provider.close()
        except KgError as exc:
            return Verdict(False, f"backend: {exc.message}")
        except Exception as exc:  # a probe must answer, whatever the provider raised
            return Verdict(False, f"backend: {type(exc).__name__}: {exc}")
        return Verdict(True, f"{settings.profile_name}: {settings.provider} {settings.model}")
