"""Case 4, first token: time from sending the request to the first `token` frame at the client,
minus the upstream's own first-token delay (`[[first=S]]`), at 1 and at 100 concurrent streams.

What remains is what the service adds: HTTP in, starting the run and the graph, the model
call's request to the upstream, and the way back to the client.

The floor beside it: the same model calls made with `ChatOpenAI.astream` alone, in one process
(1 call, then 100 at once). What 100 simultaneous starts cost one core there is not the
service's doing; it bounds from below what the service can reach at 100 streams.
"""

from __future__ import annotations

from bench import client
from bench.cases._common import Context, aio, chat, concurrent, post_stream
from bench.harness import Upstream, run_floor, service
from bench.report import Figure, Target, percentile

FIRST_S = 0.05


def floor_first_token_s(
    upstream: Upstream, prompt: str, streams: int, rounds: int, kind: str = "first-token"
) -> list[list[float]]:
    """`ChatOpenAI.astream` alone (or with `kind="first-token-graph"`, the chat graph through
    `astream_events`), `streams` at once, in a fresh process (bench/floor.py)."""
    rounds_s: list[list[float]] = run_floor(
        kind, upstream.base_url, prompt, str(streams), str(rounds)
    )
    return rounds_s


def _floor(ctx: Context, prompt: str, kind: str) -> tuple[list[float], list[float]]:
    """A floor's added first-token ms: each single call's, and each 100-call round's p50."""
    single = [
        (r[0] - FIRST_S) * 1000
        for r in floor_first_token_s(ctx.upstream, prompt, 1, ctx.pick(30, 10), kind)
    ]
    crowd_p50 = [
        percentile([(s - FIRST_S) * 1000 for s in r], 50)
        for r in floor_first_token_s(ctx.upstream, prompt, 100, ctx.pick(5, 2), kind)
    ]
    return single, crowd_p50


def run(ctx: Context) -> list[Figure]:
    body = chat(f"[[tokens=5]] [[first={FIRST_S}]]")
    single: list[float] = []
    crowd: list[float] = []
    crowd_p50: list[float] = []
    crowd_p99: list[float] = []

    def added(r: client.StreamResult) -> float:
        assert r.first_token_at is not None, r
        return (r.first_token_at - r.sent_at - FIRST_S) * 1000

    with service(ctx.upstream).start("/readyz") as server:

        async def one() -> client.StreamResult:
            return await post_stream(server, body)

        aio(concurrent(5, one))  # warm up
        for _ in range(ctx.pick(30, 10)):
            _, results = aio(concurrent(1, one))
            single.append(added(results[0]))
        for _ in range(ctx.pick(5, 2)):
            _, results = aio(concurrent(100, one))
            latencies = [added(r) for r in results]
            crowd.extend(latencies)
            crowd_p50.append(percentile(latencies, 50))
            crowd_p99.append(percentile(latencies, 99))
    # The floor: the same calls straight to ChatOpenAI.astream in one process, no service. At
    # 100 streams it shows what one core needs just to start 100 model calls at once. One step
    # up: the chat graph through astream_events, same process, no service. What the service
    # adds is what is left above that step.
    prompt = body["input"]["query"]
    floor_single, floor_p50 = _floor(ctx, prompt, "first-token")
    graph_single, graph_p50 = _floor(ctx, prompt, "first-token-graph")
    note = f"minus the upstream's {FIRST_S * 1000:.0f} ms; min-max over rounds"
    graph_note = "the chat graph through astream_events, in one process: no HTTP, no service"
    return [
        Figure(
            "first_token",
            "added, 1 stream: p50",
            "ms",
            [percentile(single, 50)],
            baseline=[percentile(floor_single, 50)],
            baseline_name="astream alone",
            target=Target("<=", 5, on="value"),
            note=note,
            extra={"samples": single},
        ),
        Figure(
            "first_token",
            "  of which: chat graph via astream_events, 1 stream: p50",
            "ms",
            [percentile(graph_single, 50)],
            baseline=[percentile(floor_single, 50)],
            baseline_name="astream alone",
            note=graph_note,
        ),
        Figure("first_token", "added, 1 stream: p99", "ms", [percentile(single, 99)]),
        Figure(
            "first_token",
            "added, 100 streams: p50",
            "ms",
            crowd_p50,
            baseline=floor_p50,
            baseline_name="astream alone",
            target=Target("<=", 50, on="value"),
            note=note,
        ),
        Figure(
            "first_token",
            "  of which: chat graph via astream_events, 100 streams: p50",
            "ms",
            graph_p50,
            baseline=floor_p50,
            baseline_name="astream alone",
            note=graph_note,
        ),
        Figure("first_token", "added, 100 streams: p99", "ms", crowd_p99),
    ]
