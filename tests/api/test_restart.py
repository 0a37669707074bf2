"""Process lifecycle with a real SQLite file: SIGKILL and restart, SIGTERM with open streams,
records and replay across restarts, one process per database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import (
    ROOT,
    SSE,
    LiveServer,
    RawSSEClient,
    parse_sse,
    stream_run,
    wait_status,
)


def _env(fake: FakeOpenAI, db: Path, **settings: str) -> dict[str, str]:
    return _fake_upstream(fake, DATABASE_URL=f"sqlite:///{db}", EVENT_FLUSH_S="0.1", **settings)


def _replay(client: httpx.Client, run_id: str, last: int = 0) -> list[SSE]:
    with client.stream(
        "GET", f"/runs/{run_id}/stream", headers={"Last-Event-ID": str(last)}
    ) as response:
        assert response.status_code == 200, response.read()
        return list(parse_sse(response.iter_lines()))


def _assert_clean_exit(server: LiveServer, code: int) -> None:
    """uvicorn re-raises the SIGTERM it handled once it has shut down, so a clean stop exits
    "killed by SIGTERM" after the lifespan's shutdown completed."""
    server.stop()
    assert code in (0, -signal.SIGTERM), server.logs()
    assert "Application shutdown complete" in server.logs()


def _normalized(events: list[SSE]) -> tuple[list[tuple[Any, ...]], str]:
    """Non-token events as they are, and all token text: a replay may merge tokens differently
    from the live stream (API.md, backpressure), never change them."""
    others = [(e.id, e.event, e.data) for e in events if e.event != "token"]
    return others, "".join(e.data["text"] for e in events if e.event == "token")


def test_a_run_killed_with_the_server_is_failed_after_restart_and_its_thread_continues(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "kill.db"
    first = LiveServer(tmp_path, _env(fake, db)).start()
    topic = "[[tokens=60]] [[delay=0.02]] tides"
    with httpx.Client(base_url=first.url, timeout=30) as client:
        run = client.post(
            "/graphs/report/runs", json={"input": {"topic": topic}, "thread_id": "kill-1"}
        ).json()
        seen: list[SSE] = []
        with client.stream("GET", run["stream_url"]) as response:
            for event in parse_sse(response.iter_lines()):
                seen.append(event)
                if event.event == "token" and event.data["node"] == "write_section":
                    break
            time.sleep(0.3)  # a few flushes of the event log
            first.signal(signal.SIGKILL)
            first.wait_exit(10)
            first.stop()

    second = LiveServer(tmp_path, _env(fake, db)).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            record = client.get(f"/runs/{run['run_id']}").json()
            assert record["status"] == "failed"
            assert record["reason"] == "interrupted_by_restart"
            assert record["error"]["code"] == "interrupted_by_restart"

            replay = _replay(client, run["run_id"])
            ids = [e.id or 0 for e in replay]
            assert ids == sorted(set(ids))  # strictly increasing
            # what the client saw before the kill is all still there
            seen_others, seen_text = _normalized(seen)
            others, text = _normalized(replay)
            assert others[: len(seen_others)] == seen_others
            assert text.startswith(seen_text)
            assert [e.event for e in replay[-2:]] == ["error", "end"]
            assert replay[-1].data["status"] == "failed"
            # a client that reconnects with the id it last saw gets the rest and the failure
            tail = _replay(client, run["run_id"], last=seen[-1].id or 0)
            assert (tail[0].id or 0) > (seen[-1].id or 0)
            assert _normalized(tail)[1] == text.removeprefix(seen_text)
            assert [e.event for e in tail[-2:]] == ["error", "end"]

            state = client.get("/threads/kill-1").json()
            assert state["next"] == ["write_section"]  # the last completed checkpoint: plan
            assert state["values"]["topic"] == topic
            assert state["active_run_id"] is None

            resumed = stream_run(client, "report", {"input": None, "thread_id": "kill-1"})
            nodes = [e.data["node"] for e in resumed if e.event == "node_start"]
            assert nodes[0] == "write_section" and nodes[-1] == "assemble"
            assert resumed[-1].data["status"] == "completed"
            assert client.get("/threads/kill-1").json()["values"]["report"].startswith("# ")
        assert "cut off by a restart" in second.logs()
    finally:
        second.stop()


def test_a_client_ahead_of_the_database_gets_error_and_end_after_a_kill(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Issue 12.1: live events reach clients before they are written, so at a SIGKILL the
    client had seen ids the database did not hold; recovery wrote `error`/`end` after the last
    *stored* id, reusing ids the client had seen, and its reconnect got `204` and no ending.
    A flush period far longer than the run so far makes the client surely ahead."""
    db = tmp_path / "ahead.db"
    env = _env(fake, db) | {"EVENT_FLUSH_S": "30"}
    first = LiveServer(tmp_path, env).start()
    with httpx.Client(base_url=first.url, timeout=30) as client:
        run = client.post(
            "/graphs/chat/runs", json={"input": {"query": "[[tokens=500]] [[delay=0.01]]"}}
        ).json()
        seen: list[SSE] = []
        with client.stream("GET", run["stream_url"]) as response:
            for event in parse_sse(response.iter_lines()):
                seen.append(event)
                if sum(e.event == "token" for e in seen) == 40:
                    break
            first.signal(signal.SIGKILL)
            first.wait_exit(10)
            first.stop()

    second = LiveServer(tmp_path, env).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            for last in (seen[-1].id or 0, seen[len(seen) // 2].id or 0, 0):
                tail = _replay(client, run["run_id"], last=last)
                assert [e.event for e in tail[-2:]] == ["error", "end"], (last, tail)
                assert all((e.id or 0) > last for e in tail)
                assert (tail[-2].id or 0) > (seen[-1].id or 0)  # above every id it was sent
                assert tail[-1].data["reason"] == "interrupted_by_restart"
            record = client.get(f"/runs/{run['run_id']}").json()
            assert record["events"] == tail[-1].id
    finally:
        second.stop()


def test_finished_runs_keep_their_records_and_replay_across_a_restart(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "keep.db"
    first = LiveServer(tmp_path, _env(fake, db)).start()
    with httpx.Client(base_url=first.url, timeout=30) as client:
        completed = stream_run(client, "chat", {"input": {"query": "[[tokens=30]]"}})
        paused = stream_run(client, "approval", {"input": {"request": "x"}, "thread_id": "keep-1"})
        failed = stream_run(client, "chat", {"input": {"query": "[[fail=500]]"}})
        runs = {e[0].data["run_id"]: e for e in (completed, paused, failed)}
        records = {run_id: client.get(f"/runs/{run_id}").json() for run_id in runs}
    first.signal(signal.SIGTERM)
    _assert_clean_exit(first, first.wait_exit(10))

    second = LiveServer(tmp_path, _env(fake, db)).start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as client:
            for run_id, events in runs.items():
                assert client.get(f"/runs/{run_id}").json() == records[run_id]
                assert _normalized(_replay(client, run_id)) == _normalized(events)
                last = events[-1].id
                done = client.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": str(last)})
                assert done.status_code == 204
            # the paused approval resumes on the new process
            resumed = stream_run(
                client, "approval", {"thread_id": "keep-1", "resume": {"approved": True}}
            )
            assert resumed[-1].data["status"] == "completed"
    finally:
        second.stop()


def _read_in_background(
    url: str, path: str, body: dict[str, Any] | None, out: list[tuple[float, SSE]]
) -> threading.Thread:
    """Read one stream in a thread, noting when each frame arrived (`time.monotonic()`)."""

    def read() -> None:
        with (
            httpx.Client(base_url=url, timeout=30) as client,
            client.stream("POST" if body else "GET", path, json=body) as response,
        ):
            try:
                for event in parse_sse(response.iter_lines()):
                    out.append((time.monotonic(), event))
            except httpx.RemoteProtocolError:
                pass  # cut without its end: the test's assertion names the stream

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _ended_s_after(record: dict[str, Any], signalled_at: float) -> float:
    """Seconds from the signal (wall clock) to the run's `ended_at`."""
    return datetime.fromisoformat(record["ended_at"]).timestamp() - signalled_at


def test_sigterm_gives_unwatched_background_runs_the_whole_grace(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Regression: with no connection open, uvicorn runs the lifespan shutdown at once, and a
    background run nobody watched was cancelled 0.15 s after SIGTERM. Now a run that finishes
    within SHUTDOWN_GRACE_S completes, and one that does not is cancelled at its end."""
    grace = 3.0
    db = tmp_path / "unwatched.db"
    server = LiveServer(tmp_path, _env(fake, db, SHUTDOWN_GRACE_S=str(grace))).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        short = client.post(  # ~1.5 s of tokens: ends inside the grace
            "/graphs/chat/runs", json={"input": {"query": "[[tokens=75]] [[delay=0.02]]"}}
        ).json()
        long = client.post(  # ~40 s: cut by the grace
            "/graphs/chat/runs", json={"input": {"query": "[[tokens=2000]] [[delay=0.02]]"}}
        ).json()
        for run in (short, long):
            deadline = time.monotonic() + 10
            while client.get(f"/runs/{run['run_id']}").json()["first_token_ms"] is None:
                assert time.monotonic() < deadline, "the run did not start streaming"
                time.sleep(0.02)
    # no connection is open now: nobody watches either run
    signalled_at = time.time()
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.wait_exit(grace + 10)
    took = time.monotonic() - started
    _assert_clean_exit(server, code)

    again = LiveServer(tmp_path, _env(fake, db)).start()
    try:
        with httpx.Client(base_url=again.url, timeout=30) as client:
            done = client.get(f"/runs/{short['run_id']}").json()
            cut = client.get(f"/runs/{long['run_id']}").json()
    finally:
        again.stop()
    assert (done["status"], done["reason"]) == ("completed", "done"), done
    assert (cut["status"], cut["reason"]) == ("cancelled", "shutdown"), cut
    # in this order: the short run ended on its own, the long one at the end of the grace
    # (tolerances: the wall clock of two processes, and a loaded machine)
    assert _ended_s_after(done, signalled_at) < _ended_s_after(cut, signalled_at)
    assert grace - 0.2 <= _ended_s_after(cut, signalled_at) <= grace + 1.0, cut
    assert grace - 0.2 <= took <= grace + 2.0, f"exit took {took:.2f}s with a {grace}s grace"


def test_sigterm_ends_every_open_stream_with_end_and_exits_after_the_grace(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Watched runs get the same grace as unwatched ones (it was 1.5 s shorter); every stream,
    a `max_rate` one included (it got no `end`: cut while it paced), a client that reads
    nothing aside, gets its `end` and then the process exits."""
    grace = 3.0
    db = tmp_path / "term.db"
    server = LiveServer(tmp_path, _env(fake, db, SHUTDOWN_GRACE_S=str(grace))).start()
    long_body: dict[str, Any] = {"input": {"query": "[[tokens=2000]] [[delay=0.02]]"}}
    short_body = {"input": {"query": "[[tokens=75]] [[delay=0.02]]"}}  # ~1.5 s: ends in the grace
    paced_body = {**long_body, "max_rate": 2}
    streams: list[list[tuple[float, SSE]]] = [[], [], [], []]
    readers = [
        _read_in_background(server.url, "/graphs/chat/stream", body, out)
        for body, out in zip((long_body, long_body, paced_body), streams, strict=False)
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        stalled_run = client.post(
            "/graphs/chat/runs", json={"input": {"query": "[[tokens=20000]] [[size=400]]"}}
        ).json()
        watched = client.post("/graphs/chat/runs", json=short_body).json()
    readers.append(
        _read_in_background(server.url, f"/runs/{watched['run_id']}/stream", None, streams[3])
    )
    stalled = RawSSEClient(server.url, f"/runs/{stalled_run['run_id']}/stream", rcvbuf=1024)
    deadline = time.monotonic() + 10
    while not all(any(e.event == "token" for _, e in s) for s in streams):
        assert time.monotonic() < deadline, "streams did not start"
        time.sleep(0.02)

    started = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.wait_exit(grace + 10)
    took = time.monotonic() - started
    for reader in readers:
        reader.join(5)
    stalled.close()

    _assert_clean_exit(server, code)
    assert took <= grace + 2.0, f"exit took {took:.2f}s with a {grace}s grace"
    ends = {}
    for name, received in zip(("long", "long2", "paced", "short"), streams, strict=True):
        assert received and received[-1][1].event == "end", (name, received[-3:])
        ends[name] = (received[-1][0] - started, received[-1][1].data)
    for name in ("long", "long2", "paced"):
        assert (ends[name][1]["status"], ends[name][1]["reason"]) == ("cancelled", "shutdown")
        assert grace - 0.2 <= ends[name][0] <= grace + 1.0, (name, ends[name][0])
    assert ends["short"][1]["status"] == "completed"
    assert ends["short"][0] < min(ends[name][0] for name in ("long", "long2", "paced"))

    again = LiveServer(tmp_path, _env(fake, db)).start()
    try:
        with httpx.Client(base_url=again.url, timeout=30) as client:
            record = client.get(f"/runs/{streams[0][0][1].data['run_id']}").json()
            assert (record["status"], record["reason"]) == ("cancelled", "shutdown")
    finally:
        again.stop()


def test_a_second_server_on_the_same_sqlite_file_is_refused(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    db = tmp_path / "one.db"
    first = LiveServer(tmp_path, _env(fake, db)).start()
    try:
        second = LiveServer(tmp_path, _env(fake, db)).start(wait=False)
        assert second.wait_exit(30) != 0
        second.stop()
        logs = second.logs()
        assert f"is already served by process {first.proc.pid if first.proc else ''}" in logs
        assert "start one server per database file" in logs
        assert httpx.get(f"{first.url}/readyz").status_code == 200  # the first one is unharmed
    finally:
        first.stop()


def test_no_other_path_to_the_database_gets_around_the_single_writer_lock(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Regression: the lock was a `<db>.lock` side file, so a server given a symlink to the
    database (or started after someone deleted the side file) got in, marked the first one's
    live run `interrupted_by_restart` and took a run on its busy thread. The lock is now on the
    database file itself: a symlink or a hard link meets it, and there is no side file."""
    db = tmp_path / "data" / "one.db"
    first = LiveServer(tmp_path, _env(fake, db)).start()
    (tmp_path / "link.db").symlink_to(db)
    os.link(db, tmp_path / "hard.db")
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            live = client.post(
                "/graphs/chat/runs",
                json={"input": {"query": "[[tokens=3000]] [[delay=0.02]]"}, "thread_id": "busy"},
            ).json()
            for other in ("link.db", "hard.db"):
                second = LiveServer(tmp_path, _env(fake, tmp_path / other)).start(wait=False)
                code = second.wait_exit(30)
                second.stop()
                assert code != 0, second.logs()
                pid = first.proc.pid if first.proc else ""
                assert f"is already served by process {pid}:" in second.logs()
                assert client.get(f"/runs/{live['run_id']}").json()["status"] == "running"
            client.post(f"/runs/{live['run_id']}/cancel")
            record = wait_status(client, live["run_id"], "cancelled")
            assert record["reason"] == "cancelled"  # not failed by the second server's recovery
        assert not list(db.parent.glob("*.lock"))  # no side file to delete
    finally:
        first.stop()


def test_several_workers_on_sqlite_exit_non_zero_at_once(tmp_path: Path) -> None:
    """Regression: uvicorn's supervisor stopped with status 0 about 10 s after its workers
    refused SQLite, so an orchestrator saw a clean exit. Now the first worker stops it before
    the app's slow imports: non-zero, within a few seconds, the advice in the log, and no
    worker left serving the port."""
    db = tmp_path / "workers.db"
    server = LiveServer(tmp_path, {"DATABASE_URL": f"sqlite:///{db}"}, args=("--workers", "2"))
    started = time.monotonic()
    server.start(wait=False)
    try:
        code = server.wait_exit(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"uvicorn --workers 2 on SQLite kept running:\n{server.logs()}")
    finally:
        server.stop()
    took = time.monotonic() - started
    assert code != 0, server.logs()
    assert took < 8, f"took {took:.1f}s to refuse"
    logs = server.logs()
    assert "2 workers requested" in logs
    assert "without --workers (or with --workers 1)" in logs
    assert "Application startup complete" not in logs
    deadline = time.monotonic() + 10
    while True:  # the other worker stops on its own, before it serves
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                pass
        except OSError:
            break
        assert time.monotonic() < deadline, "a worker is still listening"
        time.sleep(0.05)


def test_the_cli_entry_point_is_the_one_the_readme_gives() -> None:
    """`python -m uvicorn app.main:app` is how the README and the tests start the server."""
    out = subprocess.run(
        [sys.executable, "-c", "import app.main; print(type(app.main.app).__name__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "memory://"},
    )
    assert out.stdout.strip() == "FastAPI"
