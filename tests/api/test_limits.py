"""Limits per key through the real server (the default tenant): the run rate with its
`RateLimit-*` headers, in memory and in Redis; concurrent runs and open streams of one key,
freed at once when a run ends or a client goes away; all decided before anything runs."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI, free_port
from tests.support.live import (
    LiveServer,
    RawSSEClient,
    parse_sse,
    read_sse,
    refused_start,
    wait_status,
)
from tests.support.redis import key_prefix

SLOW = {"input": {"query": "slow [[tokens=500]] [[delay=0.02]]"}}  # ~10 s unless cancelled
SHORT = {"input": {"query": "short [[tokens=3]]"}}


def _serve(tmp: Path, fake: FakeOpenAI, **env: str) -> LiveServer:
    return LiveServer(tmp, _fake_upstream(fake, MAX_CONCURRENT_RUNS="50", **env)).start()


@pytest.fixture(scope="module")
def per_key(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = _serve(
        tmp_path_factory.mktemp("per-key"), fake, MAX_RUNS_PER_KEY="2", MAX_STREAMS_PER_KEY="2"
    )
    yield server
    server.stop()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert error["code"] == code
    return error


def _no_thread(c: httpx.Client, thread_id: str) -> None:
    """Nothing ran on the thread: no checkpoint was written for it."""
    _error(c.get(f"/threads/{thread_id}"), 404, "thread_not_found")


def _rate(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["ratelimit-limit"]), int(h["ratelimit-remaining"]), int(h["ratelimit-reset"])


def _rate_limit_holds(server: LiveServer) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        first = c.post("/graphs/chat/runs", json=SHORT, headers=key)
        assert first.status_code == 202 and _rate(first)[:2] == (4, 3)
        assert 55 <= _rate(first)[2] <= 60
        assert _rate(c.post("/graphs/chat/runs", json=SHORT))[:2] == (4, 2)
        # an idempotent retry attaches to its run and takes no token
        retry = c.post("/graphs/chat/runs", json=SHORT, headers=key)
        assert retry.json()["run_id"] == first.json()["run_id"]
        assert _rate(retry)[:2] == (4, 2)
        with c.stream("POST", "/graphs/chat/stream", json=SHORT) as stream:
            assert stream.status_code == 200 and _rate(stream)[:2] == (4, 1)
            assert read_sse(stream)[-1].event == "end"
        assert _rate(c.post("/graphs/chat/runs", json=SHORT))[:2] == (4, 0)

        thread = f"t-{uuid.uuid4()}"
        refused = c.post("/graphs/chat/runs", json={**SHORT, "thread_id": thread})
        _error(refused, 429, "rate_limited")
        limit, remaining, reset = _rate(refused)
        assert (limit, remaining) == (4, 0) and 1 <= reset <= 60
        assert int(refused.headers["retry-after"]) == reset
        _error(
            c.post("/graphs/chat/stream", json={**SHORT, "thread_id": thread}), 429, "rate_limited"
        )
        _no_thread(c, thread)
        # the retry of a created run is never refused by the rate: it creates nothing
        again = c.post("/graphs/chat/runs", json=SHORT, headers=key)
        assert again.status_code == 202 and again.json()["run_id"] == first.json()["run_id"]
        assert _rate(again)[1] == 0


def test_rate_limit_counts_created_runs_in_memory(fake: FakeOpenAI, tmp_path: Path) -> None:
    server = _serve(tmp_path, fake, RATE_LIMIT_RUNS="4/minute")
    try:
        _rate_limit_holds(server)
    finally:
        server.stop()


def test_rate_limit_counts_created_runs_in_redis(fake: FakeOpenAI, tmp_path: Path) -> None:
    """REDIS_URL set: the window is kept in Redis (its keys are there, under the prefix)."""
    with key_prefix() as (conn, prefix):
        server = _serve(
            tmp_path,
            fake,
            RATE_LIMIT_RUNS="4/minute",
            REDIS_URL="redis://127.0.0.1:6379/0",
            REDIS_KEY_PREFIX=prefix,
        )
        try:
            _rate_limit_holds(server)
        finally:
            server.stop()
        keys = [k.decode() for k in conn.scan_iter(f"{prefix}:limits*")]
        assert len(keys) == 1 and "/runs/default/" in keys[0]


def test_no_limit_set_sends_no_ratelimit_headers(client: httpx.Client) -> None:
    response = client.post("/graphs/chat/runs", json=SHORT)
    assert response.status_code == 202
    assert not [h for h in response.headers if h.lower().startswith("ratelimit")]


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"RATE_LIMIT_RUNS": "lots"}, "RATE_LIMIT_RUNS"),
        ({"RATE_LIMIT_RUNS": "0/minute"}, "RATE_LIMIT_RUNS"),
        ({"MAX_RUNS_PER_KEY": "0"}, "MAX_RUNS_PER_KEY"),
        ({"MAX_STREAMS_PER_KEY": "many"}, "MAX_STREAMS_PER_KEY"),
        ({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "REDIS_URL"),
    ],
)
def test_bad_limit_setting_stops_startup_with_one_line(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    logs = refused_start(tmp_path, env)
    lines = [line for line in logs.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: ") and name in lines[0], lines


def test_max_runs_per_key_refuses_before_anything_runs(per_key: LiveServer) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    with httpx.Client(base_url=per_key.url, timeout=30) as c:
        first = c.post("/graphs/chat/runs", json=SLOW, headers=key).json()
        second = c.post("/graphs/chat/runs", json=SLOW).json()
        try:
            thread = f"t-{uuid.uuid4()}"
            refused = c.post("/graphs/chat/runs", json={**SLOW, "thread_id": thread})
            _error(refused, 429, "too_many_runs")
            assert refused.headers["retry-after"] == "1"
            _error(
                c.post("/graphs/chat/stream", json={**SLOW, "thread_id": thread}),
                429,
                "too_many_runs",
            )
            _no_thread(c, thread)
            assert c.get("/readyz").json()["active_runs"] == 2
            # an idempotent retry attaches to its run: not a new run, so not refused
            retry = c.post("/graphs/chat/runs", json=SLOW, headers=key)
            assert retry.status_code == 202 and retry.json()["run_id"] == first["run_id"]
            # a run's end frees its slot (cancel returns once the end is written)
            c.post(first["cancel_url"])
            third = c.post("/graphs/chat/runs", json=SHORT)
            assert third.status_code == 202, third.text
            wait_status(c, third.json()["run_id"], "completed")
        finally:
            c.post(first["cancel_url"])
            c.post(second["cancel_url"])


def test_a_run_cancelled_by_its_vanished_client_frees_its_slot(per_key: LiveServer) -> None:
    with httpx.Client(base_url=per_key.url, timeout=30) as c:
        background = c.post("/graphs/chat/runs", json=SLOW).json()
        try:
            with c.stream("POST", "/graphs/chat/stream", json=SLOW) as stream:
                assert stream.status_code == 200
                run_id = next(parse_sse(stream.iter_lines())).data["run_id"]
                over = c.post("/graphs/chat/runs", json=SHORT)
                ran = {r: c.get(f"/runs/{r}").json() for r in (run_id, background["run_id"])}
                held = {r: (v["status"], v.get("reason"), v.get("error")) for r, v in ran.items()}
                assert over.status_code == 429, (over.status_code, held)
                _error(over, 429, "too_many_runs")
            # the client went away: its run is cancelled and its slot freed
            wait_status(c, run_id, "cancelled", timeout=10)
            assert _accepted(lambda: c.post("/graphs/chat/runs", json=SHORT), 202)
        finally:
            c.post(background["cancel_url"])


def _accepted(attempt: object, status: int, timeout: float = 5.0) -> bool:
    """Retry `attempt` while it is refused with 429, until it gets `status` (bounded)."""
    assert callable(attempt)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = attempt()
        if response.status_code == status:
            return True
        assert response.status_code == 429, response.text
        time.sleep(0.02)
    return False


def _open_raw(server: LiveServer, path: str) -> RawSSEClient:
    """A stream opened on a raw socket, once the server has answered its head with 200."""
    reader = RawSSEClient(server.url, path)
    reader.sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = reader.sock.recv(4096)
        assert chunk, "the server closed the connection"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return reader


def _kill(reader: RawSSEClient) -> None:
    """Vanish as a killed process does: the kernel resets the connection (SO_LINGER 0)."""
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reader.sock.close()


def test_max_streams_per_key_and_a_vanished_client_frees_its_slot(per_key: LiveServer) -> None:
    with httpx.Client(base_url=per_key.url, timeout=30) as c:
        run = c.post("/graphs/chat/runs", json=SLOW).json()
        path = f"/runs/{run['run_id']}/stream"
        try:
            readers = [_open_raw(per_key, path) for _ in range(2)]
            refused = c.get(path)
            _error(refused, 429, "too_many_streams")
            assert refused.headers["retry-after"] == "1"
            # a run that would stream is refused before it starts
            thread = f"t-{uuid.uuid4()}"
            _error(
                c.post("/graphs/chat/stream", json={**SLOW, "thread_id": thread}),
                429,
                "too_many_streams",
            )
            _no_thread(c, thread)
            assert c.get("/readyz").json()["active_runs"] == 1
            for reader in readers:
                _kill(reader)

            def watch() -> httpx.Response:
                return c.get(path, params={"events": "end"})

            # accepted as soon as the server has noticed the two are gone
            assert _accepted(watch, 200)
            assert _accepted(watch, 200)
        finally:
            c.post(run["cancel_url"])


def test_a_stream_that_ends_frees_its_slot(per_key: LiveServer) -> None:
    with httpx.Client(base_url=per_key.url, timeout=30) as c:
        with c.stream("POST", "/graphs/chat/stream", json=SHORT) as stream:
            assert stream.status_code == 200, stream.read()
            events = read_sse(stream)
        run_id = events[0].data["run_id"]
        for _ in range(5):  # replays: more streams, one after another, than the key may hold
            with c.stream("GET", f"/runs/{run_id}/stream") as replay:
                assert replay.status_code == 200, replay.read()
                assert read_sse(replay)[-1].event == "end"


ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef01"


@pytest.fixture(scope="module")
def keyed(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Two keys, one run and a rate of two runs a minute each."""
    server = _serve(
        tmp_path_factory.mktemp("keyed-limits"),
        fake,
        API_KEYS=f"alice={ALICE},bob={BOB}",
        MAX_RUNS_PER_KEY="1",
        RATE_LIMIT_RUNS="2/minute",
    )
    yield server
    server.stop()


def test_each_key_has_its_own_limits(keyed: LiveServer) -> None:
    with (
        httpx.Client(base_url=keyed.url, timeout=30, headers={"X-Api-Key": ALICE}) as alice,
        httpx.Client(
            base_url=keyed.url, timeout=30, headers={"Authorization": f"Bearer {BOB}"}
        ) as bob,
    ):
        busy = alice.post("/graphs/chat/runs", json=SLOW)
        assert busy.status_code == 202, busy.text
        assert _rate(busy)[:2] == (2, 1)
        _error(alice.post("/graphs/chat/runs", json=SHORT), 429, "too_many_runs")
        # Alice's run in progress and her spent token are hers: Bob has his own.
        for left in (1, 0):
            started = bob.post("/graphs/chat/runs", json=SHORT)
            assert started.status_code == 202 and _rate(started)[:2] == (2, left), started.text
            wait_status(bob, started.json()["run_id"], "completed")
        refused = bob.post("/graphs/chat/runs", json=SHORT)
        _error(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        # Bob's window is full; Alice's still has one run, once hers is over.
        alice.post(f"/runs/{busy.json()['run_id']}/cancel")
        wait_status(alice, busy.json()["run_id"], "cancelled")
        again = alice.post("/graphs/chat/runs", json=SHORT)
        assert again.status_code == 202 and _rate(again)[:2] == (2, 0), again.text
