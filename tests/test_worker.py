"""`kg worker` processes on a real PostgreSQL with real procrastinate, against the fake Ollama
server: concurrent resolution, a SIGKILLed worker's jobs taken over, SIGTERM stops cleanly, and
the graph equals a single-process `kg ingest` of the same files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from kg.db import Database
from tests.fakes import FakeOllama, Reply, chunk_of
from tests.test_concurrency import (
    CHUNKING,
    Gate,
    configure,
    extraction,
    graph_of,
    ingest_at_once,
    paid,
    write_corpus,
)

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 120.0  # every wait is bounded: a stuck worker fails the test instead of hanging it


@pytest.fixture
def dialect() -> str:
    return "postgresql"  # the queue is PostgreSQL only (the SQLite refusal: test_queue.py)


class Workers:
    """`kg worker` subprocesses of one test; whatever is still running at the end is killed."""

    def __init__(self, url: str, home: Path) -> None:
        self.env = {**os.environ, "KG_DATABASE_URL": url, "KG_HOME": str(home), "USER": "w"}
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []

    def kg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kg.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=WAIT_S,
                              stdin=subprocess.DEVNULL)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kg.cli", "worker", *args], cwd=ROOT, env=self.env,
            stdout=(self.home / f"w{n}.out").open("wb"),
            stderr=(self.home / f"w{n}.err").open("wb"), stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.home / f"w{self.procs.index(proc)}.err").read_text()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(db_url, tmp_path / "home")
    yield pool
    pool.stop_all()


def until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll until `condition()` is truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def scalar(url: str, sql: str, **params: Any) -> Any:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        db.dispose()


def queue_files(pool: Workers, files: list[Path]) -> int:
    done = pool.kg("ingest", "--queue", *map(str, files), *CHUNKING)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[1].rstrip(":"))  # "run N: ..."


def run_status(url: str, run_id: int) -> str:
    return str(scalar(url, "SELECT status FROM runs WHERE id = :r", r=run_id))


def duplicates(url: str) -> int:
    """Rows stored twice: an outcome per (run, chunk) and evidence per (chunk, item, quote)."""
    return int(scalar(url, """
        SELECT (SELECT count(*) FROM (SELECT run_id, chunk_id FROM chunk_extractions
                                      GROUP BY run_id, chunk_id HAVING count(*) > 1) a)
             + (SELECT count(*) FROM (SELECT chunk_id, concept_id, relationship_id, quote
                                      FROM evidence GROUP BY chunk_id, concept_id,
                                      relationship_id, quote HAVING count(*) > 1) b)"""))


def test_two_workers_racing_two_spellings_make_one_concept(db_url, workers, tmp_path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Sherlock Holmes lit his pipe.\n", encoding="utf-8")
    (docs / "b.md").write_text("Holmes, Sherlock was not at home.\n", encoding="utf-8")
    gate = Gate(width=2, patience=90)  # both wait until both are in flight: workers overlap
    with FakeOllama(responder=gate) as server:
        configure(db_url, server.url, max_parallel=1)
        run_id = queue_files(workers, sorted(docs.iterdir()))
        workers.start()
        workers.start()
        until(lambda: run_status(db_url, run_id) != "running", "the run to finish")
    assert gate.opened_full, "the two workers never had a request in flight together"
    assert run_status(db_url, run_id) == "completed"
    graph = graph_of(db_url)
    assert list(graph["concepts"]) in (["Sherlock Holmes"], ["Holmes, Sherlock"])
    assert len(graph["aliases"]) == 1
    assert scalar(db_url, "SELECT count(DISTINCT worker) FROM chunk_extractions") == 2
    shown = workers.kg("runs", "show", str(run_id))
    assert "chunks by worker" in shown.stdout


def test_queued_run_builds_the_single_process_graph(db_url, other_db_url, workers,
                                                   tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=4, paragraphs=4)
    with FakeOllama(responder=Gate()) as server:
        configure(db_url, server.url, max_parallel=2)
        configure(other_db_url, server.url)
        run_id = queue_files(workers, files)
        for _ in range(3):
            workers.start("--concurrency", "2")
        serial = ingest_at_once(other_db_url, tmp_path / "serial", [files])
        until(lambda: run_status(db_url, run_id) != "running", "the run to finish")
    assert serial[0].exit_code == 0, serial[0].stderr
    assert run_status(db_url, run_id) == "completed"
    assert graph_of(db_url) == graph_of(other_db_url)
    bill = paid(db_url)
    assert bill["calls"] == bill["chunks"] and bill["chunks_paid_twice"] == 0
    assert bill["documents_not_ingested"] == 0
    assert duplicates(db_url) == 0


class Slow:
    """Replies after `delay`; counts requests so a test can see one is in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            self.started += 1
        return Reply(extraction(chunk_of(body)), delay=self.delay)


def doing(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"))


def test_sigkilled_worker_jobs_are_taken_by_another(db_url, other_db_url, workers,
                                                    tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=2, paragraphs=4)
    with FakeOllama(responder=Slow(1.0)) as server:
        configure(db_url, server.url, max_parallel=2)
        configure(other_db_url, server.url)
        run_id = queue_files(workers, files)
        victim = workers.start("--concurrency", "2", "--stalled-after", "2")
        until(lambda: doing(db_url) == 2, "the first worker to hold two jobs")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        held = doing(db_url)
        assert held >= 1  # jobs of the dead worker, stuck in 'doing' until rescued
        workers.start("--concurrency", "2", "--stalled-after", "2")
        until(lambda: run_status(db_url, run_id) != "running", "the run to finish")
        serial = ingest_at_once(other_db_url, tmp_path / "serial", [files])
    assert serial[0].exit_code == 0, serial[0].stderr
    total = scalar(db_url, "SELECT chunks_total FROM runs WHERE id = :r", r=run_id)
    assert run_status(db_url, run_id) == "completed"
    assert scalar(db_url, "SELECT count(*) FROM chunk_extractions WHERE run_id = :r AND "
                          "status = 'ok'", r=run_id) == total  # 0 chunks lost
    assert scalar(db_url, "SELECT chunks_ok FROM runs WHERE id = :r", r=run_id) == total
    assert duplicates(db_url) == 0
    assert graph_of(db_url) == graph_of(other_db_url)


def test_sigterm_stops_after_the_current_jobs(db_url, workers, tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=1, paragraphs=6)
    slow = Slow(1.5)
    with FakeOllama(responder=slow) as server:
        configure(db_url, server.url, max_parallel=1)
        run_id = queue_files(workers, files)
        proc = workers.start()
        until(lambda: slow.started >= 1, "the worker to send a request")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=WAIT_S)
    assert code == 0, workers.stderr(proc)
    assert "worker stopped: 1 job(s) done" in workers.stderr(proc)
    # The job in hand was finished and committed; the others wait for the next worker.
    assert scalar(db_url, "SELECT count(*) FROM chunk_extractions WHERE run_id = :r",
                  r=run_id) == 1
    assert doing(db_url) == 0
    assert scalar(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") \
        == scalar(db_url, "SELECT chunks_total FROM runs WHERE id = :r", r=run_id) - 1
    assert run_status(db_url, run_id) == "running"


def test_follow_shows_progress_until_the_run_ends(db_url, workers, tmp_path) -> None:
    files = write_corpus(tmp_path / "docs", files=1, paragraphs=3)
    with FakeOllama(responder=Gate()) as server:
        configure(db_url, server.url, max_parallel=1)
        workers.start()
        done = workers.kg("ingest", "--queue", "--follow", *map(str, files), *CHUNKING,
                          "--json")
    assert done.returncode == 0, done.stderr
    assert '"status": "completed"' in done.stdout
    assert "chunks (0 failed)" in done.stderr  # plain progress lines when piped
