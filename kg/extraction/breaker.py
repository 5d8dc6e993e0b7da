"""A circuit breaker per endpoint: a server that keeps failing stops the run instead of costing
every chunk its retries and backoff.

Closed: requests flow. After `threshold` consecutive server failures (5xx, busy, timeout)
within `window_s` seconds it opens: no new request is sent, chunks in flight stop retrying,
and the run stops with one line naming the endpoint and the last error (exit 4, resumable).
A resumed run starts half-open: its first chunk is sent alone, as a probe; one server failure
opens the circuit again at once, any reply closes it.

Defaults: 5 failures within 60 s. Five in a row is more than the three attempts one chunk
makes by default, so one unlucky chunk never trips it; the window keeps failures spread over
a long healthy run (a 503 now and then) from adding up. The scheduler raises the threshold to
max_parallel + 1 so that one wave of parallel requests hitting a momentary blip does not trip
it either. Connection refused is not counted here: it is fatal at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from kg.errors import ProviderError, ProviderTimeout, ServerBusy
from kg.extraction.concurrency import AdaptiveLimit

FAILURES = 5
WINDOW_S = 60.0


class CircuitOpen(ProviderError):
    """The endpoint failed too often in a row: the run stops (resumable)."""

    fatal = True


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive server failures of one endpoint; thread-safe."""

    def __init__(self, endpoint: str, *, threshold: int = FAILURES, window_s: float = WINDOW_S,
                 half_open: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1 or window_s <= 0:
            raise ValueError("threshold must be >= 1 and window_s > 0")
        self.endpoint = endpoint
        self.threshold = threshold
        self.window_s = window_s
        self.state = State.HALF_OPEN if half_open else State.CLOSED
        self.last_error: str | None = None
        self._failures: deque[float] = deque()
        self._clock = clock
        self._lock = threading.Lock()
        self.pace = AdaptiveLimit()

    def allows(self) -> bool:
        """May a request (a first attempt or a retry) be sent now? A yes counts it as sent
        (the adaptive window counts requests in service)."""
        if self.state == State.OPEN:
            return False
        self.pace.started()
        return True

    def capacity(self, limit: int) -> int:
        """How many requests may be in flight: the adaptive window (max_parallel at most)
        when closed, one probe when half-open."""
        if self.state == State.CLOSED:
            return self.pace.limit(limit)
        return 1 if self.state == State.HALF_OPEN else 0

    def overload(self, error: ProviderError) -> bool:
        """A busy answer. True when it is our own overload: the request waits for a turn and
        goes again, costing the chunk nothing. False: count it as a failure."""
        if not isinstance(error, ServerBusy) or not self.pace.overloaded():
            return False
        self.pace.wait_turn()
        return True

    def success(self) -> None:
        """The endpoint answered (whatever the model said): the failure streak ends."""
        self.pace.answered()
        with self._lock:
            self._failures.clear()
            if self.state == State.HALF_OPEN:
                self.state = State.CLOSED

    def failure(self, error: ProviderError) -> bool:
        """Count one server failure; True if this one opened the circuit."""
        if isinstance(error, ProviderTimeout):
            self.pace.timed_out()
        elif not isinstance(error, ServerBusy):  # a busy answer was counted by overload()
            self.pace.failed()
        with self._lock:
            if self.state == State.OPEN:
                return False
            self.last_error = error.message
            now = self._clock()
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()
            if self.state == State.HALF_OPEN or len(self._failures) >= self.threshold:
                self.state = State.OPEN
                return True
            return False

    def trip(self, error: ProviderError) -> None:
        """Open at once (the endpoint is unreachable: its chunks go to a fallback)."""
        with self._lock:
            self.last_error = error.message
            self.state = State.OPEN

    @property
    def is_open(self) -> bool:
        return self.state == State.OPEN

    def error(self) -> CircuitOpen:
        """The one-line reason the run stopped."""
        if self.state == State.OPEN and len(self._failures) < self.threshold:
            what = "failed again on the first request after resuming"
        else:
            what = (f"failed {len(self._failures)} times in a row within "
                    f"{self.window_s:g}s")
        return CircuitOpen(f"stopped sending to {self.endpoint}: it {what} "
                           f"(last error: {self.last_error})")
