"""Case 5, cancel: from `POST /runs/{id}/cancel` to the stream's `end` at the client, to the
fake upstream seeing its request closed (its `abandoned_at`), and how many tokens the upstream
produced after the cancel was sent (its `[[trace]]` of body chunks).

Each repetition starts a background run of 2,000 tokens at 5 ms, watches it, and cancels it once
the first token has arrived, so the model is mid-stream when the cancel lands.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench import client
from bench.cases._common import Context, aio, chat
from bench.harness import Process, Upstream, service
from bench.report import Figure, Target, percentile


async def _once(server: Process, upstream: Upstream) -> tuple[float, float, int]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        run = (
            await http.post(
                "/graphs/chat/runs", json=chat("[[tokens=2000]] [[delay=0.005]] [[trace]]")
            )
        ).json()
        abandoned = upstream.stats()["abandoned"]
        first = asyncio.Event()
        path = f"/runs/{run['run_id']}/stream"
        reader = asyncio.create_task(client.stream(server.port, "GET", path, first_token=first))
        await asyncio.wait_for(first.wait(), 10)
        t0 = time.monotonic()
        await http.post(f"/runs/{run['run_id']}/cancel")
        result = await asyncio.wait_for(reader, 10)
    assert result.end_data.get("status") == "cancelled", result
    assert result.end_at is not None
    stats = await asyncio.to_thread(
        upstream.wait_stats, lambda s: s["abandoned"] > abandoned and s["active"] == 0
    )
    closed_at = stats["abandoned_at"][-1]
    after = sum(t > t0 for t in stats["trace"])
    return (result.end_at - t0) * 1000, (closed_at - t0) * 1000, after


def run(ctx: Context) -> list[Figure]:
    to_end: list[float] = []
    to_upstream: list[float] = []
    after: list[float] = []
    with service(ctx.upstream).start("/readyz") as server:
        aio(_once(server, ctx.upstream))  # warm up
        for _ in range(ctx.pick(20, 5)):
            end_ms, upstream_ms, tokens = aio(_once(server, ctx.upstream))
            to_end.append(end_ms)
            to_upstream.append(upstream_ms)
            after.append(tokens)
    note = f"{len(to_end)} cancels"
    return [
        Figure(
            "cancel",
            "to stream end: p50",
            "ms",
            [percentile(to_end, 50)],
            note=note,
            extra={"samples": to_end},
        ),
        Figure(
            "cancel",
            "to stream end: p99",
            "ms",
            [percentile(to_end, 99)],
            target=Target("<=", 20, on="value"),
        ),
        Figure(
            "cancel",
            "to upstream closed: p50",
            "ms",
            [percentile(to_upstream, 50)],
            extra={"samples": to_upstream},
        ),
        Figure(
            "cancel",
            "to upstream closed: p99",
            "ms",
            [percentile(to_upstream, 99)],
            target=Target("<=", 20, on="value"),
        ),
        Figure(
            "cancel",
            "upstream tokens after cancel: p99",
            "tokens",
            [percentile(after, 99)],
            target=Target("<=", 1, on="value"),
            extra={"samples": after},
        ),
    ]
