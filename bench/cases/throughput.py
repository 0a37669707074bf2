"""Case 2, throughput: aggregate delivered tokens/s with 1, 10 and 100 concurrent unpaced
streams, against the naive forwarder (the obvious implementation), the same forwarder on the
service's model client, and the bare sse-starlette endpoint (the transport limit), all in
bench/baselines.py and served like the service.

The four servers run side by side and are measured in turn, level by level, repetition by
repetition, so a burst of load from elsewhere hits all three alike. Tokens/s is streams x
tokens per stream / wall time from the first request to the last stream's end; a stream
counts only if it ended `completed` (the service) or delivered every token (the baselines).
"""

from __future__ import annotations

from bench import client
from bench.cases._common import Context, aio, chat, concurrent
from bench.harness import Process, baseline, service
from bench.report import Figure, Target


def tokens_per_s(server: Process, kind: str, streams: int, tokens: int) -> float:
    path = "/graphs/chat/stream" if kind == "service" else f"/stream?n={tokens}"
    body = chat(f"[[tokens={tokens}]]")

    async def one() -> client.StreamResult:
        return await client.stream(server.port, "POST", path, body)

    wall, results = aio(concurrent(streams, one))
    for r in results:
        if kind == "service":
            assert r.end_data.get("status") == "completed", (kind, r)
        else:
            assert r.ended and r.token_frames == tokens, (kind, r.token_frames, tokens)
    return streams * tokens / wall


def run(ctx: Context) -> list[Figure]:
    levels = ctx.pick({1: 5000, 10: 1000, 100: 200}, {1: 2000, 10: 300})
    repeat = ctx.pick(3, 2)
    up = ctx.upstream
    servers = {
        "service": service(up),
        "naive": baseline("naive", up),
        "naive_client": baseline("naive_client", up),
        "bare": baseline("bare", up),
    }
    rates: dict[tuple[str, int], list[float]] = {}
    try:
        for kind, server in servers.items():
            server.start("/readyz" if kind == "service" else "/healthz")
            tokens_per_s(server, kind, 2, 200)  # warm up: imports, connection pools
        for _ in range(repeat):
            for streams, tokens in levels.items():
                for kind, server in servers.items():
                    rate = tokens_per_s(server, kind, streams, tokens)
                    rates.setdefault((kind, streams), []).append(rate)
    finally:
        for server in servers.values():
            server.stop()
    figures = []
    for streams, tokens in levels.items():
        service_rates = rates[("service", streams)]
        name = f"tokens/s, {streams} stream(s) x {tokens}"
        figures.append(
            Figure(
                "throughput",
                name,
                "tok/s",
                service_rates,
                rates[("naive", streams)],
                "naive",
                Target(">=", 1.5) if streams == 100 else None,
            )
        )
        figures.append(
            Figure(
                "throughput",
                "  same, naive forwarder on the service's model client",
                "tok/s",
                service_rates,
                rates[("naive_client", streams)],
                "naive+client",
                note="graphs/models.py's client in both: what the rest of the service adds",
            )
        )
        figures.append(
            Figure(
                "throughput",
                name + " vs bare SSE",
                "tok/s",
                service_rates,
                rates[("bare", streams)],
                "bare",
            )
        )
    return figures
