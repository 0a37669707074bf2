"""The per-key slots shared by two real servers on one REDIS_URL and prefix, as two workers of
one service (each with its own SQLite store: only the limits are shared here): runs in progress
and open streams counted across both, a killed worker's slots freed within their lease, and
run creation refused while Redis does not answer, accepted again once it does."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis

from tests.api.test_limits import SHORT, _accepted, _error, _kill, _open_raw
from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer, wait_status
from tests.support.redis import REDIS_URL, key_prefix
from tests.support.redis_server import RedisServer

LONG = {"input": {"query": "long [[tokens=3000]] [[delay=0.02]]"}}  # ~60 s unless cancelled
# A and B renew every 5 s (the default): a slot they free that came back only by expiry would
# take up to its 15 s lease. The worker killed renews every 0.5 s: its slots' lease is 1.5 s.
RELEASED_WITHIN_S = 5.0
HEARTBEAT_S = 0.5
LEASE_S = 3 * HEARTBEAT_S  # app/auth/redis_slots.py: LEASE_RENEWALS renewals


@contextmanager
def _serving(
    tmp: Path, fake: FakeOpenAI, url: str, prefix: str, heartbeat_s: float = 5.0
) -> Iterator[LiveServer]:
    """A server with the limits on `url` under `prefix`; stopped afterwards, even when it never
    became ready."""
    env = _fake_upstream(
        fake,
        MAX_CONCURRENT_RUNS="50",
        MAX_RUNS_PER_KEY="2",
        MAX_STREAMS_PER_KEY="2",
        REDIS_URL=url,
        REDIS_KEY_PREFIX=prefix,
        WORKER_HEARTBEAT_S=str(heartbeat_s),
    )
    server = LiveServer(tmp, env)
    try:
        yield server.start()
    finally:
        server.stop()


Pair = tuple[LiveServer, LiveServer, redis.Redis, str]


@pytest.fixture(scope="module")
def servers(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Servers A and B on the machine's Redis under one fresh prefix, and a client of it."""
    with (
        key_prefix() as (conn, prefix),
        _serving(tmp_path_factory.mktemp("worker-a"), fake, REDIS_URL, prefix) as a,
        _serving(tmp_path_factory.mktemp("worker-b"), fake, REDIS_URL, prefix) as b,
    ):
        yield a, b, conn, prefix


@pytest.fixture
def pair(servers: Pair) -> Iterator[Pair]:
    """The two servers, holding no slot before the test and none (bounded wait) after it."""
    _, _, conn, prefix = servers
    assert _slot_keys(conn, prefix) == []
    yield servers
    deadline = time.monotonic() + 10
    while keys := _slot_keys(conn, prefix):
        assert time.monotonic() < deadline, f"slots still held after the test: {keys}"
        time.sleep(0.05)


def _slot_keys(conn: redis.Redis, prefix: str) -> list[bytes]:
    return list(conn.scan_iter(f"{prefix}:slots:*"))


def _client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def test_runs_in_progress_are_counted_across_workers(
    pair: Pair,
) -> None:
    a, b, _, _ = pair
    with _client(a) as on_a, _client(b) as on_b:
        runs = [on_a.post("/graphs/chat/runs", json=LONG) for _ in range(2)]
        assert [r.status_code for r in runs] == [202, 202], [r.text for r in runs]
        first, second = (r.json() for r in runs)
        third: dict[str, str] = {}
        try:
            refused = on_b.post("/graphs/chat/runs", json=SHORT)
            _error(refused, 429, "too_many_runs")
            _error(on_b.post("/graphs/chat/stream", json=SHORT), 429, "too_many_runs")
            on_a.post(first["cancel_url"])  # returns once its end is written
            # B accepts once A's release has reached Redis: at once, not at the lease's end
            third = _started_when_free(on_b, LONG, within=RELEASED_WITHIN_S)
            _error(on_a.post("/graphs/chat/runs", json=SHORT), 429, "too_many_runs")
        finally:
            on_a.post(first["cancel_url"])
            on_a.post(second["cancel_url"])
            if third:
                on_b.post(third["cancel_url"])


def test_open_streams_are_counted_across_workers(
    pair: Pair,
) -> None:
    a, b, _, _ = pair
    with _client(a) as on_a, _client(b) as on_b:
        run_a = on_a.post("/graphs/chat/runs", json=LONG).json()
        run_b = on_b.post("/graphs/chat/runs", json=LONG).json()
        path_a, path_b = (f"/runs/{run['run_id']}/stream" for run in (run_a, run_b))
        readers = []
        try:
            readers = [_open_raw(a, path_a), _open_raw(b, path_b)]
            _error(on_b.get(path_b), 429, "too_many_streams")
            _error(on_a.get(path_a), 429, "too_many_streams")
            _error(on_b.post("/graphs/chat/stream", json=SHORT), 429, "too_many_streams")
            _kill(readers[0])  # A's stream ends: B may open one more
            assert _accepted(lambda: _opened(on_b, path_b), 200, RELEASED_WITHIN_S)
        finally:
            for reader in readers:
                reader.close()
            on_a.post(run_a["cancel_url"])
            on_b.post(run_b["cancel_url"])


def _opened(c: httpx.Client, path: str) -> httpx.Response:
    """The answer to opening the stream at `path` (closed at once if it opened)."""
    with c.stream("GET", path) as response:
        if response.status_code != 200:
            response.read()
        return response


def _scores(conn: redis.Redis, key: str) -> dict[bytes, float]:
    return dict(cast(list[tuple[bytes, float]], conn.zrange(key, 0, -1, withscores=True)))


def _server_ms(conn: redis.Redis) -> float:
    seconds, micros = conn.time()
    return seconds * 1000 + micros / 1000


def test_a_killed_workers_slots_are_freed_within_the_lease(
    pair: Pair, fake: FakeOpenAI, tmp_path: Path
) -> None:
    _, b, conn, prefix = pair
    runs_key = f"{prefix}:slots:runs:default"
    taken: list[dict[str, str]] = []
    try:
        with (
            _serving(tmp_path, fake, REDIS_URL, prefix, heartbeat_s=HEARTBEAT_S) as victim,
            _client(victim) as on_victim,
            _client(b) as on_b,
        ):
            for _ in range(2):
                assert on_victim.post("/graphs/chat/runs", json=LONG).status_code == 202
            _error(on_victim.post("/graphs/chat/runs", json=SHORT), 429, "too_many_runs")
            first = _scores(conn, runs_key)
            assert len(first) == 2
            # it renews: past the first lease its slots are still held, with later expiries
            deadline = time.monotonic() + 10 * LEASE_S
            while _server_ms(conn) <= max(first.values()):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            _error(on_b.post("/graphs/chat/runs", json=SHORT), 429, "too_many_runs")
            renewed = _scores(conn, runs_key)
            assert renewed.keys() == first.keys()
            assert all(renewed[m] > first[m] for m in first)

            victim.signal(signal.SIGKILL)
            victim.wait_exit()
            killed = time.monotonic()
            for _ in range(2):  # both of its slots come free
                taken.append(_started_when_free(on_b, LONG, within=LEASE_S + 5))
            assert time.monotonic() - killed <= LEASE_S + 1.0
            _error(on_b.post("/graphs/chat/runs", json=SHORT), 429, "too_many_runs")
    finally:
        with _client(b) as on_b:
            for run in taken:
                on_b.post(run["cancel_url"])


def _started_when_free(c: httpx.Client, body: object, within: float) -> dict[str, str]:
    """Start a run, retrying while it is refused `too_many_runs` (bounded); its record."""
    deadline = time.monotonic() + within
    while (response := c.post("/graphs/chat/runs", json=body)).status_code == 429:
        _error(response, 429, "too_many_runs")
        assert time.monotonic() < deadline, "never accepted"
        time.sleep(0.02)
    assert response.status_code == 202, response.text
    run: dict[str, str] = response.json()
    return run


def test_redis_down_refuses_new_runs_and_streams_until_it_answers_again(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    with (
        RedisServer(tmp_path) as store,
        _serving(tmp_path, fake, store.url, "down") as server,
        _client(server) as c,
    ):
        before = c.post("/graphs/chat/runs", json=SHORT)
        assert before.status_code == 202, before.text
        wait_status(c, before.json()["run_id"], "completed")
        store.stop()
        for path in ("/graphs/chat/runs", "/graphs/chat/stream"):
            refused = c.post(path, json=SHORT)
            error = _error(refused, 503, "store_unavailable")
            assert "limit storage is unreachable" in error["message"]
            assert refused.headers["retry-after"] == "5"
        store.start()
        deadline = time.monotonic() + 10
        while (again := c.post("/graphs/chat/runs", json=SHORT)).status_code == 503:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.05)
        assert again.status_code == 202, again.text
        wait_status(c, again.json()["run_id"], "completed")
