"""Case 7, memory after load: a burst of concurrent unpaced `ChatOpenAI` streams (300 x 1,000
tokens), then nothing. Peak RSS growth per concurrent stream against the naive forwarder's on
the same burst, and RSS 30 s after the burst against RSS just before it (the goal: back within
1.25x, so a container's memory limit is sized by the peak of the load it takes, not by every
load it ever took; app/memory_trim.py).

The service runs as `make run` serves it (PYTHONMALLOC=malloc, the harness's default) with its
default cache and trim settings. The naive forwarder runs as a plain uvicorn app would: its
figure after the burst is printed for reference, with no target. Each round bursts the service,
then the naive forwarder, and reads each one's RSS 30 s after its own burst ended.
"""

from __future__ import annotations

import asyncio
import time

from bench import client
from bench.cases._common import Context, aio, chat
from bench.harness import Process, baseline, service
from bench.report import Figure, Target

SETTLE_S = 30.0


def _burst(server: Process, kind: str, streams: int, tokens: int) -> int:
    """Run the burst; the peak RSS (KB) seen while it ran."""
    path = "/graphs/chat/stream" if kind == "service" else f"/stream?n={tokens}"
    body = chat(f"[[tokens={tokens}]]")

    async def main() -> int:
        peak = server.rss_kb()
        runs = asyncio.gather(
            *(client.stream(server.port, "POST", path, body) for _ in range(streams))
        )
        while not runs.done():
            peak = max(peak, server.rss_kb())
            await asyncio.wait({runs}, timeout=0.05)
        for r in runs.result():
            if kind == "service":
                assert r.end_data.get("status") == "completed", (kind, r)
            else:
                assert r.ended and r.token_frames == tokens, (kind, r.token_frames, tokens)
        return peak

    return aio(main())


def _after(server: Process, ended_at: float) -> int:
    time.sleep(max(0.0, ended_at + SETTLE_S - time.monotonic()))
    return server.rss_kb()


def run(ctx: Context) -> list[Figure]:
    streams, tokens = ctx.pick((300, 1000), (100, 500))
    rounds = ctx.pick(2, 1)
    up = ctx.upstream
    servers = {"service": service(up), "naive": baseline("naive", up)}
    per_stream: dict[str, list[float]] = {kind: [] for kind in servers}
    back: dict[str, list[float]] = {kind: [] for kind in servers}
    try:
        for kind, server in servers.items():
            server.start("/readyz" if kind == "service" else "/healthz")
            _burst(server, kind, 10, 200)  # warm up: imports, connection pools
        for _ in range(rounds):
            before, ended = {}, {}
            for kind, server in servers.items():
                before[kind] = server.rss_kb()
                peak = _burst(server, kind, streams, tokens)
                ended[kind] = time.monotonic()
                per_stream[kind].append((peak - before[kind]) / streams)
            for kind, server in servers.items():
                back[kind].append(_after(server, ended[kind]) / before[kind])
    finally:
        for server in servers.values():
            server.stop()
    load = f"{streams} streams x {tokens}"
    return [
        Figure(
            "memory",
            f"peak RSS growth per concurrent stream, {load}",
            "KB",
            per_stream["service"],
            per_stream["naive"],
            "naive",
        ),
        Figure(
            "memory",
            f"RSS {SETTLE_S:g} s after the burst / just before it",
            "x",
            back["service"],
            target=Target("<=", 1.25, on="value"),
        ),
        Figure(
            "memory",
            "  same, the naive forwarder (for reference)",
            "x",
            back["naive"],
        ),
    ]
