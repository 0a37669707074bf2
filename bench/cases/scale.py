"""Case 3, scale: many concurrent paced streams on one worker.

Offline: 1,000 concurrent runs of the offline model at 10 tokens/s (`OFFLINE_TOKEN_DELAY_S=0.1`;
the `report` graph, whose offline answer is ~250 tokens in three streamed sections, the nearest
the offline model comes to 200 tokens). All must complete; client-side p50/p99 gap between
tokens, p99 time to first token, the server's peak RSS and RSS per stream (peak minus the
warmed-up server's RSS, over the streams).

ChatOpenAI: 200 tokens at 10 tokens/s from the fake (`[[delay=0.1]]`) at growing numbers of
streams; the largest that completes with p99 gap <= 500 ms is reported.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench import client
from bench.cases._common import Context, aio, chat
from bench.harness import Process, run_floor, service
from bench.report import Figure, Target, percentile

GAP_P99_MS = 500.0


def _paced(server: Process, streams: int, path: str, body: dict[str, Any]) -> dict[str, float]:
    async def main() -> tuple[list[client.StreamResult], int]:
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.rss_kb())
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        try:
            results = await asyncio.gather(
                *(
                    client.stream(server.port, "POST", path, body, record_arrivals=True)
                    for _ in range(streams)
                )
            )
        finally:
            sampler.cancel()
        return list(results), peak

    rss_before = server.rss_kb()
    results, peak = aio(main())
    completed = sum(r.end_data.get("status") == "completed" for r in results)
    gaps = [g for r in results for g in r.gaps_ms]
    ttft = [(r.first_token_at - r.sent_at) * 1000 for r in results if r.first_token_at]
    return {
        "streams": streams,
        "completed": completed,
        "tokens_per_stream": statistics.median(r.token_frames for r in results),
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p99_ms": percentile(gaps, 99),
        "ttft_p99_ms": percentile(ttft, 99),
        "rss_before_kb": rss_before,
        "rss_peak_kb": peak,
        "rss_per_stream_kb": (max(peak, rss_before) - rss_before) / streams,
    }


def _offline(streams: int) -> dict[str, float]:
    body = {"input": {"topic": "tides"}}
    with service(None, OFFLINE_TOKEN_DELAY_S="0.1").start("/readyz") as server:
        _paced(server, 5, "/graphs/report/stream", body)
        result = _paced(server, streams, "/graphs/report/stream", body)
    # The floor: the same runs through `astream_events` alone, in one fresh process.
    result["graph_rss_per_run_kb"] = float(run_floor("graph-rss", str(streams), "0.1"))
    return result


def _openai(ctx: Context, steps: list[int]) -> tuple[int, list[dict[str, float]]]:
    body = chat("[[tokens=200]] [[delay=0.1]]")
    best = 0
    seen: list[dict[str, float]] = []
    with service(ctx.upstream).start("/readyz") as server:
        _paced(server, 5, "/graphs/chat/stream", chat("[[tokens=20]] [[delay=0.01]]"))
        for streams in steps:
            got = _paced(server, streams, "/graphs/chat/stream", body)
            seen.append(got)
            if got["completed"] < streams or got["gap_p99_ms"] > GAP_P99_MS:
                break
            best = streams
    return best, seen


def run(ctx: Context) -> list[Figure]:
    streams = ctx.pick(1000, 200)
    off = _offline(streams)
    best, steps = _openai(ctx, ctx.pick([100, 200, 300, 500, 1000], [100, 200]))
    extra: dict[str, Any] = {"offline": off, "openai_steps": steps}
    name = f"offline, {streams} streams"
    figures = [
        Figure(
            "scale",
            f"{name}: completed",
            "streams",
            [off["completed"]],
            target=Target(">=", streams, on="value"),
            extra=extra,
        ),
        Figure("scale", f"{name}: p50 gap", "ms", [off["gap_p50_ms"]]),
        Figure(
            "scale",
            f"{name}: p99 gap",
            "ms",
            [off["gap_p99_ms"]],
            target=Target("<=", GAP_P99_MS, on="value"),
        ),
        Figure("scale", f"{name}: p99 first token", "ms", [off["ttft_p99_ms"]]),
        Figure("scale", f"{name}: peak RSS", "MB", [off["rss_peak_kb"] / 1024]),
        Figure(
            "scale",
            f"{name}: RSS per stream",
            "KB",
            [off["rss_per_stream_kb"]],
            baseline=[off["graph_rss_per_run_kb"]],
            baseline_name="graph alone",
            target=Target("<=", 100, on="value"),
            note="baseline: the same runs through astream_events in one process, no service",
        ),
        Figure(
            "scale",
            "ChatOpenAI: most streams with p99 gap <=500ms",
            "streams",
            [best],
            note=f"tried {[s['streams'] for s in steps]}",
        ),
    ]
    for s in steps:
        n = int(s["streams"])
        figures += [
            Figure(
                "scale",
                f"ChatOpenAI, {n} streams: completed",
                "streams",
                [s["completed"]],
                target=Target(">=", n, on="value"),
            ),
            Figure("scale", f"ChatOpenAI, {n} streams: p50 gap", "ms", [s["gap_p50_ms"]]),
            Figure(
                "scale",
                f"ChatOpenAI, {n} streams: p99 gap",
                "ms",
                [s["gap_p99_ms"]],
                target=Target("<=", GAP_P99_MS, on="value"),
            ),
            Figure("scale", f"ChatOpenAI, {n} streams: p99 first token", "ms", [s["ttft_p99_ms"]]),
            Figure(
                "scale",
                f"ChatOpenAI, {n} streams: RSS per stream",
                "KB",
                [s["rss_per_stream_kb"]],
                target=Target("<=", 100, on="value"),
            ),
        ]
    return figures
