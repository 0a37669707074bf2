"""The service on PostgreSQL (`DATABASE_URL=postgresql://...`), real uvicorn on the machine's
real server, each module's data in a schema of its own: runs, threads and their state live in
the database (a server started later on it finds them), several worker processes start on it,
and a URL that does not answer stops startup naming DATABASE_URL. The rollback cancel on
PostgreSQL: tests/api/test_rollback.py (its `postgres` store)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _fake_upstream
from tests.support import postgres
from tests.support.fake_openai import FakeOpenAI, free_port
from tests.support.live import (
    LiveServer,
    read_sse,
    refused_start,
    stream_run,
    tokens_text,
    wait_status,
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres.schema() as url:
        yield url


def _start(tmp: Path, fake: FakeOpenAI, url: str, *args: str) -> LiveServer:
    return LiveServer(tmp, _fake_upstream(fake, DATABASE_URL=url), args=args).start()


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with postgres.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_runs_and_threads_live_in_postgresql_and_outlive_the_server(
    database: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    server = _start(tmp_path, fake, database)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            events = stream_run(client, "chat", {"input": {"query": "[[tokens=8]] hi"}})
            assert events[-1].event == "end" and events[-1].data["status"] == "completed"
            chat_run = events[0].data["run_id"]
            assert tokens_text(events)

            def ask(text: str) -> str:
                body = {
                    "input": {"messages": [{"role": "user", "content": text}]},
                    "thread_id": "pg-thread",
                }
                run = stream_run(client, "agent", body)
                assert run[-1].data["status"] == "completed"
                return str(run[0].data["run_id"])

            ask("[[echo]] my name is Ada")
            second = ask("what is my name?")
            state = client.get("/threads/pg-thread").json()
            assert state["graph"] == "agent"
            roles = [m["role"] for m in state["values"]["messages"]]
            assert roles == ["user", "assistant", "user", "assistant"]
            wait_status(client, second, "completed")
            ran = client.get(f"/runs/{chat_run}").json()
    finally:
        server.stop()

    # In the database: the runs (sealed: one compressed chunk each) and the thread's checkpoints.
    stored = _rows(database, "SELECT status FROM svc_runs WHERE run_id = %s", chat_run)
    assert stored == [("completed",)]
    chunks = _rows(database, "SELECT codec FROM svc_event_chunks WHERE run_id = %s", chat_run)
    assert chunks == [(1,)]
    assert _rows(database, "SELECT 1 FROM checkpoints WHERE thread_id = 'pg-thread' LIMIT 1")

    later = _start(tmp_path, fake, database)
    try:
        with httpx.Client(base_url=later.url, timeout=30) as client:
            assert client.get(f"/runs/{chat_run}").json() == ran
            with client.stream("GET", f"/runs/{chat_run}/stream") as response:
                replayed = read_sse(response)  # from the store (tokens merged: read at once)
            assert (replayed[-1].event, replayed[-1].id) == ("end", events[-1].id)
            assert tokens_text(replayed) == tokens_text(events)
            assert client.get("/threads/pg-thread").json() == state
    finally:
        later.stop()


def test_several_worker_processes_start_on_postgresql_and_serve(
    database: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    """SQLite refuses `--workers 2` (tests/api/test_restart.py); PostgreSQL is what several
    workers share. Both workers start, and a run one of them finished is read by either."""
    server = _start(tmp_path, fake, database, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while len(re.findall(r"Application startup complete", server.logs())) < 2:
            assert server.proc is not None and server.proc.poll() is None, server.logs()
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
        assert "cannot start" not in server.logs()
        runs = []
        for n in range(6):
            with httpx.Client(base_url=server.url, timeout=30) as client:  # a new connection
                events = stream_run(client, "chat", {"input": {"query": f"[[tokens=3]] q{n}"}})
                assert events[-1].data["status"] == "completed"
                runs.append(events[0].data["run_id"])
        for run_id in runs:
            for _ in range(4):
                with httpx.Client(base_url=server.url, timeout=30) as client:
                    assert wait_status(client, run_id, "completed")["run_id"] == run_id
    finally:
        server.stop()


def test_a_postgresql_url_that_does_not_answer_stops_startup_naming_it(tmp_path: Path) -> None:
    url = f"postgresql://svc:hunter2-secret@127.0.0.1:{free_port()}/nowhere"
    logs = refused_start(tmp_path, {"DATABASE_URL": url})
    assert "DATABASE_URL: no answer from postgresql://127.0.0.1:" in logs
    assert "hunter2" not in logs


@pytest.mark.parametrize(
    "table",
    [
        "svc_thread_claims",  # the starts wait on their thread claim: no run exists yet
        "svc_id_ceilings",  # they wait after their record is written: the run is torn down
    ],
)
def test_a_pool_out_of_connections_refuses_a_start_with_503_and_fails_no_live_run(
    database: str, fake: FakeOpenAI, tmp_path: Path, table: str
) -> None:
    """Starts that find no free connection in time get `503 store_unavailable` (retry), never
    a 500; the store is busy, not down, so a live run that did not meet the full pool goes on.
    (A run whose own write meets it fails alone, so this one is still streaming tokens, with no
    checkpoint to write, until the pool is free again and it is cancelled.)"""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    env = _fake_upstream(fake, DATABASE_URL=database, DATABASE_POOL_SIZE="2")
    server = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            live = client.post(
                "/graphs/chat/runs",
                json={"input": {"query": "[[tokens=100000]] [[delay=0.01]] keep going"}},
            ).json()
            with postgres.connect(database) as holder:
                holder.autocommit = False
                holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

                def start(i: int) -> httpx.Response:
                    return client.post("/graphs/chat/runs", json={"input": {"query": f"b{i}"}})

                with ThreadPoolExecutor(4) as pool:
                    futures = [pool.submit(start, i) for i in range(4)]
                    # two starts hold both connections, waiting on the lock; the others find
                    # none free and are answered
                    first, _ = wait(futures, timeout=50, return_when=FIRST_COMPLETED)
                    assert first, "no start was answered while the pool was full"
                    holder.rollback()  # the lock goes; the waiting starts go on
                    answers = [f.result() for f in futures]
            statuses = sorted(a.status_code for a in answers)
            assert 503 in statuses and 500 not in statuses, [a.text for a in answers]
            refused = next(a for a in answers if a.status_code == 503)
            assert refused.json()["error"]["code"] == "store_unavailable"
            for answer in answers:  # the starts that got through finish on the freed pool
                if answer.status_code == 202:
                    wait_status(client, answer.json()["run_id"], "completed", timeout=60)
            assert client.get(f"/runs/{live['run_id']}").json()["status"] == "running"
            cancelled = client.post(f"/runs/{live['run_id']}/cancel")
            assert cancelled.status_code == 202, cancelled.text
            assert cancelled.json()["status"] == "cancelled"
    finally:
        server.stop()
