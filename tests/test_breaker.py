"""The circuit breaker: its states on a clock we move, then whole runs against failing servers."""

from __future__ import annotations

import json
import threading

import pytest

from kg.errors import ServerFailure
from kg.extraction.breaker import CircuitBreaker, State
from tests.fakes import FakeOllama, FakeVLLM, Reply, chunk_of, graph_reply
from tests.test_ingest import paragraphs, rows, small_chunks, use_server, write

BOOM = ServerFailure("Ollama at http://x failed (500): boom")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures_and_a_success_resets() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://x", threshold=3, window_s=60, clock=clock)
    assert not breaker.failure(BOOM) and not breaker.failure(BOOM)
    breaker.success()  # the streak ends
    assert not breaker.failure(BOOM) and not breaker.failure(BOOM)
    assert breaker.allows() and breaker.capacity(8) == 8
    assert breaker.failure(BOOM)  # third in a row: open
    assert breaker.state == State.OPEN and not breaker.allows() and breaker.capacity(8) == 0
    assert not breaker.failure(BOOM)  # already open: reported once
    message = breaker.error().message
    assert "http://x" in message and "3 times in a row within 60s" in message
    assert "boom" in message and "\n" not in message


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://x", threshold=3, window_s=60, clock=clock)
    breaker.failure(BOOM)
    breaker.failure(BOOM)
    clock.now += 61  # a 500 now and then over a long run never adds up
    assert not breaker.failure(BOOM)
    clock.now += 1
    assert not breaker.failure(BOOM)
    assert breaker.failure(BOOM)


def test_half_open_sends_one_probe_first_failure_opens_success_closes() -> None:
    probe = CircuitBreaker("http://x", threshold=5, half_open=True)
    assert probe.capacity(8) == 1 and probe.allows()
    assert probe.failure(BOOM)
    assert probe.state == State.OPEN
    assert "failed again on the first request after resuming" in probe.error().message
    healed = CircuitBreaker("http://x", threshold=5, half_open=True)
    healed.success()
    assert healed.state == State.CLOSED and healed.capacity(8) == 8


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", threshold=0)


# -- whole runs ---------------------------------------------------------------------------

def test_a_server_failing_every_request_stops_the_run_then_resume_probes_once(
        kg, db, tmp_path) -> None:
    with FakeOllama(responder=lambda b: Reply(status=500, error="boom")) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "1")
        doc = write(tmp_path, "many.txt", paragraphs(12))
        result = kg("ingest", str(doc), *small_chunks(), "--retry-backoff", "0", "--json")
        assert result.exit_code == 4
        summary = json.loads(result.stdout)
        assert summary["status"] == "failed" and summary["chunks_total"] >= 10
        error = result.stderr.strip().splitlines()
        assert len(error) == 1 and server.url in error[0] and "boom" in error[0]
        assert "5 times in a row" in error[0]
        assert f"kg ingest --resume {summary['run_id']}" in error[0]
        # Five requests, not three per chunk for every chunk; each one is a calls row.
        assert server.chat_count == 5
        assert rows(db, "SELECT count(*) FROM calls") == [(5,)]
        assert rows(db, "SELECT status FROM runs") == [("failed",)]

        again = kg("ingest", "--resume", str(summary["run_id"]), "--json")
        assert again.exit_code == 4 and "after resuming" in again.stderr
        assert server.chat_count == 6  # the half-open probe alone
        assert rows(db, "SELECT count(*) FROM calls") == [(6,)]

        server.responder = lambda b: Reply(graph_reply(chunk_of(b)))
        healed = kg("ingest", "--resume", str(summary["run_id"]), "--json")
        assert healed.exit_code == 0, healed.stderr
        done = json.loads(healed.stdout)
        assert done["status"] == "completed" and done["chunks_ok"] == done["chunks_total"]
        assert rows(db, "SELECT count(*) FROM calls")[0][0] == server.chat_count


def test_every_busy_and_timed_out_request_is_a_calls_row(kg, db, tmp_path) -> None:
    with FakeVLLM(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        use_server(kg, server.base_url, "vllm", "Qwen/Qwen3-8B", "--max-parallel", "2",
                   "--timeout", "0.5")
        busy = Reply(status=503, error="busy")
        slow = Reply(graph_reply("Late Answer"), delay=1.0)
        # Four failures: fewer than the breaker's five, so the run goes on and retries them.
        server.queue.extend([busy, slow, Reply(status=500, error="oops"), busy])
        doc = write(tmp_path, "many.txt", paragraphs(6))
        result = kg("ingest", str(doc), *small_chunks(), "--retry-backoff", "0.01", "--json")
        summary = json.loads(result.stdout)
        assert summary["chunks_total"] >= 5
    calls = rows(db, "SELECT status, error_kind FROM calls")
    assert len(calls) == server.chat_count == summary["calls"]
    kinds = sorted(k for s, k in calls if s == "error")
    assert kinds == ["ProviderTimeout", "ServerBusy", "ServerBusy", "ServerFailure"]


def test_malformed_200_replies_are_retried_recorded_and_never_leave_a_run_running(
        kg, db, tmp_path) -> None:
    with FakeOllama(responder=lambda b: Reply(graph_reply(chunk_of(b)))) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "1")
        server.queue.extend([Reply(raw="<html>proxy error</html>"), Reply(raw='{"model": 1}')])
        doc = write(tmp_path, "story.txt", paragraphs(1))
        result = kg("ingest", str(doc), "--json")
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["calls"] == 3 == server.chat_count
    calls = rows(db, "SELECT attempt, status, error_kind FROM calls ORDER BY id")
    assert calls == [(1, "invalid", "malformed_reply"), (2, "invalid", "malformed_reply"),
                     (3, "ok", None)]

    with FakeOllama(responder=lambda b: Reply(raw="not json at all")) as server:
        use_server(kg, server.url, "ollama", "qwen3:8b", "--max-parallel", "1",
                   "--max-retries", "1")
        other = write(tmp_path, "other.txt", paragraphs(1).replace("Agent", "Pilot"))
        result = kg("ingest", str(other), "--json")
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        summary = json.loads(result.stdout)
    assert summary["status"] == "failed" and summary["chunks_failed"] == 1
    assert rows(db, "SELECT status FROM runs ORDER BY id") == [("completed",), ("failed",)]


# -- adaptive concurrency (the window inside each breaker) ---------------------------------

def start(pace, n: int) -> None:
    """n requests put in service, each by its own thread (as the engine's workers do)."""
    threads = [threading.Thread(target=pace.started) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_adaptive_window_falls_to_what_the_server_serves_and_climbs_back() -> None:
    from kg.extraction.concurrency import AdaptiveLimit

    pace = AdaptiveLimit()
    assert pace.limit(8) == 8  # no overload seen: max_parallel
    start(pace, 8)
    for _ in range(5):  # five turned away while three are being served
        assert pace.overloaded() is True
    assert pace.in_service == 3 and pace.limit(8) == 3
    for _ in range(3):
        pace.answered()
    climbed = pace.limit(8)
    assert climbed == 3  # +1/window per answer: one more request per window of answers
    for _ in range(40):
        start(pace, 1)
        pace.answered()
    assert pace.limit(8) == 8  # the server kept up: back to the ceiling


def test_adaptive_window_halves_on_timeouts_and_foreign_overload() -> None:
    from kg.extraction.concurrency import AdaptiveLimit

    pace = AdaptiveLimit()
    pace.limit(8)
    start(pace, 1)
    pace.timed_out()
    assert pace.limit(8) == 4
    start(pace, 1)
    # Busy with nothing of ours in service: not our overload (counts as a failure).
    assert pace.overloaded() is False
    assert pace.limit(8) == 2


def test_busy_answers_while_others_are_served_do_not_count_as_failures() -> None:
    from kg.errors import ServerBusy

    breaker = CircuitBreaker("http://x", threshold=2)
    assert breaker.allows()
    start(breaker.pace, 1)  # two requests in service
    threading.Timer(0.2, breaker.pace.answered).start()  # the other one ends a bit later
    # One turned away while the other is served: it waits for that one, then may go again.
    assert breaker.overload(ServerBusy("busy")) is True
    assert breaker.state == State.CLOSED and breaker.pace.in_service == 0
