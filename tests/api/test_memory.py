"""Memory after a burst goes back to the system (app/memory_trim.py).

A burst of concurrent `ChatOpenAI` streams raises the server's RSS severalfold; once it is over
and what it left in the finished-run cache has expired, RSS must come back to within 1.25x of
what it was before the burst. Before the trimmer (and with Python's own allocator) it stayed at
its peak for good: 150 streams of 1,000 tokens left a 129 MB server at 529 MB.

In a server of the test's own (memory freed by earlier tests would blur the baseline), with the
cache's time bound and the trim check shortened so the test waits seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import client
from tests.conftest import _fake_upstream, _serve
from tests.support.fake_openai import FakeOpenAI
from tests.support.live import LiveServer

STREAMS = 120
TOKENS = 600
BACK_WITHIN = 1.25


@pytest.fixture
def trimmed_server(fake: FakeOpenAI, tmp_path: Path) -> Iterator[LiveServer]:
    yield from _serve(
        tmp_path,
        _fake_upstream(
            fake,
            MAX_CONCURRENT_RUNS=str(STREAMS),
            FINISHED_RUNS_CACHE_S="1",
            MEMORY_TRIM_S="0.5",
            LOG_LEVEL="WARNING",
        ),
    )


async def _streams(server: LiveServer, streams: int, tokens: int) -> list[client.StreamResult]:
    body = {"input": {"query": f"[[tokens={tokens}]]"}}
    return await asyncio.gather(
        *(client.stream(server.port, "POST", "/graphs/chat/stream", body) for _ in range(streams))
    )


def test_rss_comes_back_after_a_burst_of_streams(trimmed_server: LiveServer) -> None:
    server = trimmed_server
    asyncio.run(_streams(server, 10, 200))  # warm up: imports, pools, first compiled paths
    baseline = server.rss_kb()
    peak = 0

    async def burst() -> list[client.StreamResult]:
        nonlocal peak
        streams = asyncio.create_task(_streams(server, STREAMS, TOKENS))
        while not streams.done():
            peak = max(peak, server.rss_kb())
            await asyncio.wait({streams}, timeout=0.05)
        return streams.result()

    results = asyncio.run(burst())
    assert all(r.end_data.get("status") == "completed" for r in results)
    # The burst must have mattered, or coming back proves nothing.
    assert peak > 1.8 * baseline, f"peak {peak} KB against a baseline of {baseline} KB"

    deadline = time.monotonic() + 30
    rss = server.rss_kb()
    while rss > BACK_WITHIN * baseline and time.monotonic() < deadline:
        time.sleep(0.25)
        rss = server.rss_kb()
    print(f"baseline {baseline} KB, peak {peak} KB, after {rss} KB ({rss / baseline:.2f}x)")
    assert rss <= BACK_WITHIN * baseline, (
        f"RSS {rss} KB 30 s after the burst: {rss / baseline:.2f}x the {baseline} KB before it "
        f"(peak {peak} KB)"
    )
