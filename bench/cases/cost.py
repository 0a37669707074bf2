"""Case 1, cost per token: the service's CPU seconds per delivered token, against the model's
own `astream` alone in a process of its own (the floor).

The service's CPU is read from /proc/<pid>/stat before and after; the floor's is its process's
`time.process_time()`. The fake upstream runs in a third process, counted in neither. Same for
the offline model (no key, `OFFLINE_TOKEN_DELAY_S=0`), whose answer is short, so both sides
repeat calls until they have the token count: its figure includes the per-run overhead.

The floor is a stock `ChatOpenAI`. The service's own model client (graphs/models.py: chunks
read as dicts, no per-chunk `wait_for`) costs less per token than that, so a second floor, the
service's client alone, shows what everything else in the service costs. Two steps between that
floor and the service, each in a fresh process, show where that cost comes from: the `chat`
graph through `astream_events` with the service's filter (LangGraph and LangChain's event
stream, an in-memory checkpointer), then the same plus our `EventMapper` and event log. What
the service adds beyond the second step is HTTP, SSE and the SQLite checkpointer/store.
"""

from __future__ import annotations

from bench.cases._common import Context, aio, chat, post_stream
from bench.harness import Process, Upstream, run_floor, service
from bench.report import Figure, Target

OFFLINE_PROMPT = "Explain attention"


def floor_cpu_per_token(
    kind: str, upstream: Upstream | None, tokens: int, repeat: int, service_gc: bool = False
) -> list[float]:
    """The floor, measured in a fresh process (bench/floor.py); with `service_gc`, that
    process uses the service's GC thresholds."""
    base_url = upstream.base_url if upstream is not None else "-"
    values: list[float] = run_floor(kind, base_url, str(tokens), str(repeat), service_gc=service_gc)
    return values


def service_cpu_per_token(
    server: Process, query: str, tokens: int, repeat: int, warmup: int = 1
) -> list[float]:
    """Service CPU seconds per delivered token, for `repeat` sequences of streams that each
    deliver at least `tokens` tokens (one stream when the model answers that many)."""

    async def once() -> float:
        cpu = server.cpu_s()
        delivered = 0
        while delivered < tokens:
            result = await post_stream(server, chat(query))
            assert result.ended and result.end_data.get("status") == "completed", result
            delivered += int(result.end_data["usage"]["output_tokens"])
        return (server.cpu_s() - cpu) / delivered

    async def main() -> list[float]:
        for _ in range(warmup):
            await once()
        return [await once() for _ in range(repeat)]

    return aio(main())


def run(ctx: Context) -> list[Figure]:
    tokens = ctx.pick(5000, 2000)
    repeat = ctx.pick(5, 3)
    up = ctx.upstream
    floor = floor_cpu_per_token("openai", up, tokens, repeat)
    # The service raises CPython's GC thresholds (app/gc_tuning.py). The same for the floor
    # shows how much of the ratio that is, so it can be read fairly.
    floor_gc = floor_cpu_per_token("openai", up, tokens, repeat, service_gc=True)
    client = floor_cpu_per_token("openai-service", up, tokens, repeat)
    # Where the service's cost comes from, in steps, each in a fresh process: the chat graph
    # through astream_events (LangGraph + LangChain's event stream), then plus our mapping
    # and event log (the service's run loop without HTTP and SSE).
    graph = floor_cpu_per_token("graph", up, tokens, repeat)
    graph_ours = floor_cpu_per_token("graph+ours", up, tokens, repeat)
    with service(up).start("/readyz") as server:
        measured = service_cpu_per_token(server, f"[[tokens={tokens}]]", tokens, repeat)
    offline_floor = floor_cpu_per_token("offline", None, tokens, repeat)
    with service(None).start("/readyz") as server:
        offline = service_cpu_per_token(server, OFFLINE_PROMPT, tokens, repeat)
    us = 1e6
    return [
        Figure(
            "cost",
            f"CPU/token, ChatOpenAI, 1 stream of {tokens}",
            "us",
            [v * us for v in measured],
            [v * us for v in floor],
            "astream alone",
            Target("<=", 1.25),
        ),
        Figure(
            "cost",
            "  same, floor with the service's GC thresholds",
            "us",
            [v * us for v in measured],
            [v * us for v in floor_gc],
            "astream alone",
            note="context: app/gc_tuning.py applied to the floor's process too",
        ),
        Figure(
            "cost",
            "  same, floor on the service's model client",
            "us",
            [v * us for v in measured],
            [v * us for v in client],
            "its astream",
            note="graphs/models.py's ChatOpenAI alone: what the rest of the service costs",
        ),
        Figure(
            "cost",
            "  of which: chat graph via astream_events, in-process",
            "us",
            [v * us for v in graph],
            [v * us for v in client],
            "its astream",
            note="LangGraph and astream_events around the same model call; no service code",
        ),
        Figure(
            "cost",
            "  of which: + our event mapping and log, in-process",
            "us",
            [v * us for v in graph_ours],
            [v * us for v in client],
            "its astream",
            note="the service's run loop without HTTP and SSE",
        ),
        Figure(
            "cost",
            f"CPU/token, offline model, {tokens} tokens",
            "us",
            [v * us for v in offline],
            [v * us for v in offline_floor],
            "astream alone",
            note="context only: the offline answer is ~80 tokens, so per-run overhead dominates",
        ),
    ]
