"""Several workers as one service (PostgreSQL + Redis): three uvicorn processes on different
ports, one database schema and one Redis key prefix. A run created on A is streamed, replayed,
inspected, cancelled, rolled back and resumed through B and C; a thread busy on A is busy on
all; a SIGKILLed worker's runs end `worker_lost` on the others' streams and their threads
continue."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import postgres
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import SSE, LiveServer, parse_sse, stream_run, tokens_text
from tests.support.workers import Workers, several_workers
from tests.support.workers import stream_of as _stream

SLOW = "[[tokens=400]] [[delay=0.01]]"


@pytest.fixture
def workers(fake: FakeOpenAI, tmp_path: Path) -> Iterator[Workers]:
    with several_workers(fake, tmp_path, 3) as running:
        yield running


def _start(client: httpx.Client, graph: str, body: dict[str, object]) -> dict[str, str]:
    response = client.post(f"/graphs/{graph}/runs", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_a_run_created_on_one_worker_streams_and_replays_on_the_others(
    workers: Workers,
) -> None:
    with workers.client(0) as a, workers.client(1) as b, workers.client(2) as c:
        run = _start(a, "chat", {"input": {"query": "[[tokens=60]] [[delay=0.01]] tides"}})
        live = _stream(b, run["run_id"])
        assert live[0].event == "metadata" and live[-1].event == "end"
        assert live[-1].data["status"] == "completed"
        record = c.get(f"/runs/{run['run_id']}").json()
        assert record["status"] == "completed"  # final by the time any stream saw `end`
        ids = [e.id or 0 for e in live]
        assert ids == sorted(set(ids))
        # replay on C from the middle: exactly the rest, nothing repeated
        middle = ids[len(ids) // 2]
        rest = _stream(c, run["run_id"], last=middle)
        assert [e.id for e in rest][-1] == ids[-1]
        assert all((e.id or 0) > middle for e in rest)
        whole = _stream(c, run["run_id"])
        assert tokens_text(whole) == tokens_text(live)
        state = b.get(f"/threads/{run['thread_id']}").json()
        assert tokens_text(live) == state["values"]["answer"]


def test_a_replay_on_another_worker_while_the_run_is_live_loses_nothing(
    workers: Workers,
) -> None:
    with workers.client(0) as a, workers.client(1) as b, workers.client(2) as c:
        run = _start(a, "chat", {"input": {"query": "[[tokens=200]] [[delay=0.01]] waves"}})
        seen: list[SSE] = []
        with b.stream("GET", f"/runs/{run['run_id']}/stream") as response:
            for event in parse_sse(response.iter_lines()):
                seen.append(event)
                if event.event == "token" and len(seen) > 20:
                    break  # a dropped client
        rest = _stream(c, run["run_id"], last=seen[-1].id)
        assert rest[-1].event == "end" and rest[-1].data["status"] == "completed"
        assert (rest[0].id or 0) > (seen[-1].id or 0)
        assert tokens_text(seen) + tokens_text(rest) == tokens_text(_stream(a, run["run_id"]))


def test_cancel_through_a_third_worker_ends_every_stream_and_closes_the_model_call(
    workers: Workers, fake: FakeOpenAI
) -> None:
    abandoned = fake.snapshot().abandoned
    with workers.client(0) as a, workers.client(1) as b, workers.client(2) as c:
        run = _start(a, "chat", {"input": {"query": f"stop me {SLOW}"}})
        events: list[SSE] = []
        with b.stream("GET", f"/runs/{run['run_id']}/stream") as response:
            for event in parse_sse(response.iter_lines()):
                events.append(event)
                if event.event == "token" and len(events) == 5:
                    cancelled = c.post(f"/runs/{run['run_id']}/cancel")
                    assert cancelled.status_code == 202, cancelled.text
                    assert cancelled.json()["status"] == "cancelled"
        assert events[-1].event == "end" and events[-1].data["status"] == "cancelled"
        assert sum(1 for e in events if e.event == "token") < 200
        fake.wait_for(lambda s: s.abandoned >= abandoned + 1, timeout=10)
        on_a = _stream(a, run["run_id"])
        assert on_a[-1].data["status"] == "cancelled"
        assert a.get(f"/runs/{run['run_id']}").json()["status"] == "cancelled"


def test_a_thread_busy_on_one_worker_is_busy_on_all_and_continues_anywhere(
    workers: Workers,
) -> None:
    with workers.client(0) as a, workers.client(1) as b, workers.client(2) as c:
        first = _start(
            a, "chat", {"input": {"query": f"busy {SLOW}"}, "thread_id": "shared-thread"}
        )
        busy = b.post(
            "/graphs/chat/runs", json={"input": {"query": "me too"}, "thread_id": "shared-thread"}
        )
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["code"] == "thread_busy"
        assert c.get("/threads/shared-thread").json()["active_run_id"] == first["run_id"]
        assert b.post(f"/runs/{first['run_id']}/cancel").json()["status"] == "cancelled"
        assert c.get("/threads/shared-thread").json()["active_run_id"] is None

        def ask(client: httpx.Client, text: str) -> str:
            body = {
                "input": {"messages": [{"role": "user", "content": text}]},
                "thread_id": "agent-thread",
            }
            events = stream_run(client, "agent", body)
            assert events[-1].data["status"] == "completed", events[-1]
            return tokens_text(events)

        ask(a, "what is 2+3?")
        ask(b, "and times 4?")
        messages = c.get("/threads/agent-thread").json()["values"]["messages"]
        humans = [m for m in messages if m["role"] == "user"]
        assert [m["content"] for m in humans] == ["what is 2+3?", "and times 4?"]


def test_a_run_paused_on_one_worker_is_resumed_on_another(workers: Workers) -> None:
    with workers.client(0) as a, workers.client(1) as b:
        paused = stream_run(a, "approval", {"input": {"request": "a haiku"}, "thread_id": "hitl"})
        assert paused[-1].data["status"] == "paused"
        body = {"resume": {"approved": True}, "thread_id": "hitl"}
        resumed = stream_run(b, "approval", body)
        assert resumed[-1].data["status"] == "completed", resumed[-1]
        assert a.get("/threads/hitl").json()["values"]["approved"] is True


def test_a_rollback_through_another_worker_restores_the_thread(workers: Workers) -> None:
    with workers.client(0) as a, workers.client(1) as b:
        done = stream_run(a, "chat", {"input": {"query": "[[tokens=3]] one"}, "thread_id": "rb"})
        assert done[-1].data["status"] == "completed"
        before = a.get("/threads/rb").json()
        run = _start(a, "chat", {"input": {"query": f"two {SLOW}"}, "thread_id": "rb"})
        with b.stream("GET", f"/runs/{run['run_id']}/stream") as response:
            for event in parse_sse(response.iter_lines()):
                if event.event == "token":
                    break
        record = b.post(f"/runs/{run['run_id']}/cancel", json={"action": "rollback"}).json()
        assert record["status"] == "cancelled" and record["reason"] == "rollback", record
        after = b.get("/threads/rb").json()
        assert after["checkpoint_id"] == before["checkpoint_id"]
        assert after["values"] == before["values"]


def test_a_killed_workers_runs_end_worker_lost_everywhere_and_their_threads_continue(
    workers: Workers,
) -> None:
    a_server = workers.servers[0]
    with workers.client(0) as a, workers.client(1) as b, workers.client(2) as c:
        run = _start(a, "chat", {"input": {"query": f"doomed {SLOW}"}, "thread_id": "lost"})
        events: list[SSE] = []
        killed_at = 0.0
        with b.stream("GET", f"/runs/{run['run_id']}/stream") as response:
            for event in parse_sse(response.iter_lines()):
                events.append(event)
                if event.event == "token" and not killed_at:
                    a_server.signal(signal.SIGKILL)
                    killed_at = time.monotonic()
        assert [e.event for e in events[-2:]] == ["error", "end"], events[-3:]
        assert events[-2].data["code"] == "worker_lost"
        assert events[-1].data["status"] == "failed"
        ids = [e.id or 0 for e in events]
        assert ids == sorted(set(ids))
        record = c.get(f"/runs/{run['run_id']}").json()
        assert record["status"] == "failed" and record["error"]["code"] == "worker_lost"
        # 3 heartbeats of 0.5 s, plus the next beat of a worker that notices
        assert time.monotonic() - killed_at < 10
        # a client that saw some of it reconnects elsewhere: the rest, then the ending
        tail = _stream(c, run["run_id"], last=events[2].id)
        assert [e.event for e in tail[-2:]] == ["error", "end"]
        assert c.get("/threads/lost").json()["active_run_id"] is None
        again = stream_run(
            c, "chat", {"input": {"query": "[[tokens=3]] again"}, "thread_id": "lost"}
        )
        assert again[-1].data["status"] == "completed"


def test_a_worker_that_starts_or_restarts_leaves_the_other_workers_runs_alone(
    workers: Workers, tmp_path: Path
) -> None:
    with workers.client(0) as a, workers.client(1) as b:
        run = _start(a, "chat", {"input": {"query": "[[tokens=1500]] [[delay=0.01]] long"}})
        first = b.get(f"/runs/{run['run_id']}").json()
        assert first["status"] == "running"
        restarted = workers.servers[2]
        restarted.signal(signal.SIGTERM)
        restarted.wait_exit(30)
        restarted.stop()
        # a new process on the same store (a restart, or one more worker): its startup
        # recovery and its lease passes see A's lease alive
        newcomer = LiveServer(tmp_path, restarted.env).start(wait=False)
        workers.servers.append(newcomer)
        newcomer.wait_ready(60)
        with httpx.Client(base_url=newcomer.url, timeout=30) as d:
            assert d.get(f"/runs/{run['run_id']}").json()["status"] == "running"
            events = _stream(d, run["run_id"])
        assert events[-1].data["status"] == "completed", events[-2:]
        assert "worker was lost" not in newcomer.logs()


def test_a_cancel_whose_message_was_missed_is_found_on_the_runs_record(
    workers: Workers, fake: FakeOpenAI
) -> None:
    """The broker's fallback: a request noted on the record (as `POST /cancel` does before it
    publishes) and never published reaches the owner on its next heartbeat."""
    abandoned = fake.snapshot().abandoned
    with workers.client(0) as a, workers.client(1) as b:
        run = _start(a, "chat", {"input": {"query": f"unheard {SLOW}"}})
        with postgres.connect(workers.database_url) as conn:
            conn.execute(
                "INSERT INTO svc_cancel_requests (run_id, action) VALUES (%s, 'interrupt')",
                (run["run_id"],),
            )
        events = _stream(b, run["run_id"])
        assert events[-1].data["status"] == "cancelled", events[-2:]
        assert sum(1 for e in events if e.event == "token") < 300
        fake.wait_for(lambda s: s.abandoned >= abandoned + 1, timeout=10)
