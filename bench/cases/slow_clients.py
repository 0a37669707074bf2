"""Case 6, slow clients: 100 clients that open one 20,000-token run's stream and never read
(tiny receive buffers: tests/support/live.py's RawSSEClient), beside 10 normal streams of their
own runs. Server RSS growth while they stall, and the normal streams' aggregate tokens/s
against the same case without the stalled clients (alternated, so drift hits both).

The big run's tokens are 100 characters (`[[size=100]]`, ~3 MB of frames per reader). A
"stalled" reader is only stalled once the kernel stops taking its bytes (loopback send
buffers grow to 4 MB here): until then the server serves it like any live reader, which is
most of what the stalled case costs (measured: the same ratio with `[[size=400]]`).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.cases._common import Context, aio, chat, post_stream
from bench.harness import Process, service
from bench.report import Figure, Target
from tests.support.live import RawSSEClient

BIG = chat("[[tokens=20000]] [[size=100]]")


def _wait_ended(http: httpx.Client, run_id: str) -> None:
    deadline = time.monotonic() + 120
    while http.get(f"/runs/{run_id}").json()["status"] == "running":
        assert time.monotonic() < deadline, "the big run never ended"
        time.sleep(0.1)


def _scenario(server: Process, stalled: int, normal: int, tokens: int) -> tuple[float, float, int]:
    """(normal streams' aggregate tokens/s, server RSS growth in MB, normal streams that
    completed) for one scenario; only completed streams count towards tokens/s."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        run = http.post("/graphs/chat/runs", json=BIG).json()
        rss_before = server.rss_kb()
        slow = [RawSSEClient(server.url, f"/runs/{run['run_id']}/stream") for _ in range(stalled)]
        try:

            async def main() -> tuple[float, int, int]:
                peak = rss_before

                async def sample() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, server.rss_kb())
                        await asyncio.sleep(0.1)

                sampler = asyncio.create_task(sample())
                started = time.monotonic()
                results = await asyncio.gather(
                    *(post_stream(server, chat(f"[[tokens={tokens}]]")) for _ in range(normal))
                )
                wall = time.monotonic() - started
                done = sum(r.end_data.get("status") == "completed" for r in results)
                await asyncio.to_thread(_wait_ended, http, run["run_id"])
                # Keep sampling after the run's end: stalled readers then rush their backlog
                # (found late: the peak comes here, not while the run streams).
                await asyncio.sleep(2.0)
                sampler.cancel()
                return done * tokens / wall, peak, done

            rate, peak, done = aio(main())
        finally:
            for s in slow:
                s.close()
    return rate, (peak - rss_before) / 1024, done


def run(ctx: Context) -> list[Figure]:
    tokens = ctx.pick(2000, 1000)
    alone: list[float] = []
    beside: list[float] = []
    growth: list[float] = []
    growth_alone: list[float] = []
    completed: list[float] = []
    with service(ctx.upstream).start("/readyz") as server:
        _scenario(server, 0, 2, 200)  # warm up: the big run's allocations happen once
        for _ in range(ctx.pick(2, 1)):
            rate, grown, done = _scenario(server, 0, 10, tokens)
            alone.append(rate)
            growth_alone.append(grown)
            completed.append(done)
            rate, grown, done = _scenario(server, 100, 10, tokens)
            beside.append(rate)
            growth.append(grown)
            completed.append(done)
    return [
        Figure(
            "slow_clients",
            "normal streams completed per scenario",
            "streams",
            completed,
            target=Target(">=", 10, on="value"),
        ),
        Figure(
            "slow_clients",
            "10 normal streams' tok/s beside 100 stalled",
            "tok/s",
            beside,
            alone,
            "no stalled",
            Target(">=", 0.9),
        ),
        Figure(
            "slow_clients",
            "server RSS growth with 100 stalled",
            "MB",
            growth,
            growth_alone,
            "no stalled",
            target=Target("<=", 50, on="value"),
            note="the baseline is the same run's own growth (its log is kept after it ends)",
        ),
    ]
