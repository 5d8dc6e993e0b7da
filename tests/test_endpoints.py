"""Several endpoints per profile, and adaptive concurrency against a server with a capacity."""

from __future__ import annotations

import json
import threading

from tests.fakes import FakeOllama, FakeVLLM, Reply, chunk_of, graph_reply
from tests.test_ingest import paragraphs, rows, small_chunks, write
from tests.test_providers import free_port


def answer(delay: float = 0.0):
    return lambda body: Reply(graph_reply(chunk_of(body)), delay=delay)


def pool_profile(kg, *urls: str, extra: tuple[str, ...] = ()) -> None:
    flags = [f for url in urls for f in ("--base-url", url)]
    result = kg("admin", "extraction", "set", "--profile", "pool", "--provider", "vllm",
                "--model", "Qwen/Qwen3-8B", *flags, "--max-retries", "1", "--timeout", "5",
                "--activate", *extra)
    assert result.exit_code == 0, result.stderr


def test_two_equal_endpoints_share_the_work(kg, db, tmp_path) -> None:
    with FakeVLLM(responder=answer(0.02)) as a, FakeVLLM(responder=answer(0.02)) as b:
        pool_profile(kg, a.base_url, b.base_url, extra=("--max-parallel", "4"))
        shown = json.loads(kg("admin", "extraction", "show", "--json").stdout)
        assert shown["base_url"] == f"{a.base_url},{b.base_url}"
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(16))), *small_chunks(),
                    "--json")
        assert result.exit_code == 0, result.stderr
        sent_a, sent_b = len(a.chat_bodies()), len(b.chat_bodies())
    summary = json.loads(result.stdout)
    assert summary["chunks_failed"] == 0 and sent_a + sent_b == summary["calls"]
    assert abs(sent_a / (sent_a + sent_b) - 0.5) <= 0.15
    by_endpoint = dict(rows(db, "SELECT endpoint, count(*) FROM calls GROUP BY endpoint"))
    assert by_endpoint == {a.base_url: sent_a, b.base_url: sent_b}


def test_an_endpoint_killed_mid_run_costs_no_chunk(kg, db, tmp_path) -> None:
    with FakeVLLM(responder=answer(0.05)) as survivor:
        victim = FakeVLLM()
        seen = {"n": 0}

        def dying(body):
            seen["n"] += 1
            if seen["n"] == 4:  # dies while this request (and others) are being served
                threading.Timer(0.02, victim.kill).start()
            return Reply(graph_reply(chunk_of(body)), delay=0.1)

        victim.responder = dying
        victim.__enter__()
        pool_profile(kg, victim.base_url, survivor.base_url, extra=("--max-parallel", "4"))
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(16))), *small_chunks(),
                    "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["chunks_failed"] == 0
    assert victim.killed and len(survivor.chat_bodies()) > summary["chunks_total"] // 2


def test_a_run_starts_when_one_endpoint_is_down_and_stops_only_when_all_are(
        kg, db, tmp_path) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    with FakeVLLM(responder=answer()) as up:
        pool_profile(kg, down, up.base_url)
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(4))), *small_chunks(),
                    "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["chunks_failed"] == 0
    pool_profile(kg, down, f"http://127.0.0.1:{free_port()}/v1")
    stopped = kg("ingest", str(write(tmp_path, "b.txt", paragraphs(4))), *small_chunks())
    assert stopped.exit_code == 4 and "no OpenAI-compatible server" in stopped.stderr


def test_one_base_url_still_works_and_duplicates_are_refused(kg, db) -> None:
    one = kg("admin", "extraction", "set", "--profile", "x", "--provider", "vllm", "--model",
             "m", "--base-url", "http://gpu:8000/v1/")
    assert one.exit_code == 0, one.stderr
    assert rows(db, "SELECT base_url FROM extraction_profiles WHERE name = 'x'") == [
        ("http://gpu:8000/v1",)]
    twice = kg("admin", "extraction", "set", "--profile", "x", "--base-url", "http://a:1/v1",
               "--base-url", "http://a:1/v1")
    assert twice.exit_code == 2 and "same URL twice" in twice.stderr


def test_capacity_three_server_with_max_parallel_eight_fails_nothing(kg, db, tmp_path) -> None:
    with FakeOllama(responder=answer(0.05)) as server:
        server.capacity = 3
        result = kg("admin", "extraction", "set", "--profile", "busy", "--provider", "ollama",
                    "--model", "qwen3:8b", "--base-url", server.url, "--max-parallel", "8",
                    "--max-retries", "0", "--timeout", "5", "--activate")
        assert result.exit_code == 0, result.stderr
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(20))), *small_chunks(),
                    "--json")
        assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    # 503s happened, yet with no repair budget at all (max-retries 0) no chunk failed:
    # overload is waited out, not charged to the chunk.
    assert server.busy_answers > 0
    assert summary["status"] == "completed" and summary["chunks_failed"] == 0
    busy = rows(db, "SELECT count(*) FROM calls WHERE error_kind = 'ServerBusy'")[0][0]
    assert busy == server.busy_answers  # every request is a calls row
    assert server.max_in_flight <= 3


def test_an_ejected_endpoint_is_probed_after_its_cool_down() -> None:
    from kg.providers import build_provider
    from kg.providers.pool import COOL_DOWN_S, EndpointPool
    from tests.test_providers import MESSAGES, SCHEMA, settings

    now = [1000.0]
    down = f"http://127.0.0.1:{free_port()}/v1"
    with FakeVLLM(responder=lambda b: Reply('{"concepts": []}')) as up:
        s = settings("vllm", base_url=f"{down},{up.base_url}", model="Qwen/Qwen3-8B")
        assert isinstance(build_provider(s), EndpointPool)
        pool = EndpointPool(s, lambda one: build_provider(one), clock=lambda: now[0])
        for _ in range(4):  # the first request finds `down` dead and moves on at once
            assert pool.complete(MESSAGES, SCHEMA).endpoint == up.base_url
        dead = pool.endpoints[0]
        assert dead.requests == 1 and dead.ejected_until == 1000.0 + COOL_DOWN_S
        now[0] += COOL_DOWN_S + 0.1  # cooled down: the next request probes it, once
        assert pool.complete(MESSAGES, SCHEMA).endpoint == up.base_url
        assert dead.requests == 2 and dead.cool_down_s == 2 * COOL_DOWN_S  # failed again
        assert pool.shares() == {down: 2, up.base_url: 5}
        pool.close()
