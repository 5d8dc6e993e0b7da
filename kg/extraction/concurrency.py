"""Adaptive concurrency for one endpoint: max_parallel is a ceiling, not a promise.

The window is the number of requests kept in service. A busy answer (503/429) while some of
our requests are being served means we asked for more than the server takes: the window drops
to what it is serving right then. A timeout halves it, and so does latency rising well above
the recent median (the server queues). Every answer adds 1/window (one more request per window of
answers), so the window climbs back to the ceiling when the server keeps up. A request turned
away waits here for one of ours to finish, then goes again: overload costs a short wait,
never a repair attempt or the chunk.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

# Latency this many times the recent median counts as the server queueing our requests
# (generous: replies of different lengths take different times).
SLOW = 3.0
MIN_LATENCY_S = 0.001
WAIT_S = 30.0  # the longest a turned-away request waits for a turn before going anyway


class AdaptiveLimit:
    """Additive-increase, multiplicative-decrease window; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.window: float | None = None  # None: the ceiling (no overload seen yet)
        self.in_service = 0
        self.overloads = 0
        self.ceiling = 64
        self._recent: deque[float] = deque(maxlen=32)  # latencies of the last answers
        self._answers_since_cut = 0
        self._clock = clock
        self._cond = threading.Condition()
        self._local = threading.local()

    def limit(self, ceiling: int) -> int:
        """Requests that may be in service now, at most `ceiling` (max_parallel)."""
        with self._cond:
            self.ceiling = ceiling
            return self._limit()

    def _limit(self) -> int:
        if self.window is None:
            return self.ceiling
        return max(1, min(self.ceiling, math.floor(self.window)))

    def started(self) -> None:
        with self._cond:
            if getattr(self._local, "started", None) is not None:
                self._finished()  # this thread's last request ended without a word (fatal)
            self.in_service += 1
            self._local.started = self._clock()

    def _finished(self) -> float | None:
        self.in_service = max(0, self.in_service - 1)
        self._cond.notify_all()
        started = getattr(self._local, "started", None)
        self._local.started = None
        return None if started is None else self._clock() - started

    def _cut(self, to: float) -> None:
        self.window = max(1.0, to)
        self._answers_since_cut = 0

    def answered(self) -> None:
        """The server answered (whatever the model said)."""
        with self._cond:
            latency = self._finished()
            # Replies under a millisecond did not queue anywhere (cache hits): not a baseline.
            if latency is not None and latency > MIN_LATENCY_S:
                usual = statistics.median(self._recent) if len(self._recent) >= 8 else None
                self._recent.append(latency)
                if (usual is not None and latency > SLOW * usual
                        and self._answers_since_cut >= self._limit() and self._limit() > 1):
                    self._cut(self._limit() / 2)
                    return
            self._answers_since_cut += 1
            if self.window is not None:
                self.window += 1 / self.window
                if self.window >= self.ceiling:
                    self.window = None

    def overloaded(self) -> bool:
        """A busy answer; True if it was our own overload (others of ours in service)."""
        with self._cond:
            self._finished()
            self.overloads += 1
            if self.in_service == 0:
                # Busy with nothing of ours in service: someone else's load, or a sick server.
                self._cut(self._limit() / 2)
                return False
            self._cut(min(self.window or self.ceiling, self.in_service))
            return True

    def timed_out(self) -> None:
        with self._cond:
            self._finished()
            self._cut(self._limit() / 2)

    def failed(self) -> None:
        with self._cond:
            self._finished()

    def wait_turn(self, timeout_s: float = WAIT_S) -> None:
        """Block until fewer requests than the window are in service (or the timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self.in_service < self._limit(), timeout=timeout_s)
