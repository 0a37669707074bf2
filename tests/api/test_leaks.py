"""Reliability probe: 500 connections opened and abandoned in rounds leave nothing behind in the
server: its open file descriptors (/proc/PID/fd) and asyncio tasks (`GET /readyz`) return to
their baseline, and its RSS stays within a bound.

Half of each round watch one long live run and half start their own streamed run (cancelled
when its client goes); every client reads its first bytes, then goes: half close their socket,
half reset it (SO_LINGER 0), as a crashed client or a dropped network would.

The long run is silent (it waits for its first token the whole test), so what it holds stays
the same: one that kept streaming added a token to its log and LangChain's chunks ~100 times a
second, which grew the RSS on its own and hid what the rounds leave.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import _fake_upstream
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer

ROUNDS = 5
PER_ROUND = 100
RSS_BOUND_KB = 30 * 1024  # above the warmed-up baseline, after all 500
SETTLE_S = 20.0
TRANSIENT_TASKS = 2  # the idle server's count moves by one or two (the persister's wait task)


def _fds(server: LiveServer) -> int:
    assert server.proc is not None
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def _ready(server: LiveServer) -> dict[str, Any]:
    # A connection of its own each time (closed at once), so the probe holds no server fd.
    response = httpx.get(f"{server.url}/readyz", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def _abandon(server: LiveServer, request: bytes, reset: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request)
    assert sock.recv(1), "no response"  # the stream has started
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return sock


def _round(server: LiveServer, watch_path: str, n: int) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    body = b'{"input": {"query": "[[tokens=2000]] [[delay=0.01]]"}}'
    start = (
        f"POST /graphs/chat/stream HTTP/1.1\r\n{host}content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    watch = f"GET {watch_path} HTTP/1.1\r\n{host}\r\n".encode()
    socks = [_abandon(server, start if i % 2 else watch, reset=i % 4 < 2) for i in range(n)]
    for sock in socks:
        sock.close()


def _settle(server: LiveServer, baseline: dict[str, int]) -> dict[str, int]:
    """Wait until the server holds no more than at baseline (streams gone, runs cancelled,
    fds and tasks back); return what it holds then."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        ready = _ready(server)
        now = {
            "fds": _fds(server),
            "tasks": ready["tasks"],
            "streams": ready["open_streams"],
            "runs": ready["active_runs"],
        }
        slack = {"tasks": TRANSIENT_TASKS}
        if all(now[k] <= baseline[k] + slack.get(k, 0) for k in baseline):
            return now
        assert time.monotonic() < deadline, f"still holding {now} against {baseline}"
        time.sleep(0.05)


def test_abandoned_connections_leave_no_fds_tasks_or_memory_behind(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    # What the rounds' runs leave in the finished-run cache goes within a second, and the trim
    # (app/memory_trim.py) is checked every half second: what stays after that is held.
    server = LiveServer(
        tmp_path, _fake_upstream(fake, FINISHED_RUNS_CACHE_S="1", MEMORY_TRIM_S="0.5")
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            long_run = client.post(
                "/graphs/chat/runs", json={"input": {"query": "[[tokens=3]] [[first=600]]"}}
            ).json()
        watch_path = f"/runs/{long_run['run_id']}/stream"
        _round(server, watch_path, PER_ROUND)  # warm-up: caches, the first imports
        # the baseline: what it holds once the warm-up's streams and runs are gone
        baseline = _settle(server, {"fds": 10**6, "tasks": 10**6, "streams": 0, "runs": 1})
        rss0 = server.rss_kb()
        figures = []
        for _ in range(ROUNDS - 1):
            _round(server, watch_path, PER_ROUND)
            figures.append(_settle(server, baseline) | {"rss_kb": server.rss_kb()})
        deadline = time.monotonic() + SETTLE_S
        grown = server.rss_kb() - rss0
        while grown > RSS_BOUND_KB and time.monotonic() < deadline:
            time.sleep(0.25)  # memory freed is given back at the next trim
            grown = server.rss_kb() - rss0
        print(f"\nleaks: baseline {baseline}, rss {rss0} KB; after each round {figures}")
        assert grown <= RSS_BOUND_KB, f"RSS grew {grown} KB over {ROUNDS - 1} rounds"
    finally:
        server.stop()
