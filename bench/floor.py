"""The floor: the chat model's own `astream`, in this process, with nothing around it.

CPU is `time.process_time()` of this process (all its threads), so the fake upstream, which
runs in its own process, is never counted. The loop is uvloop when installed, as uvicorn uses
for the service, so the floor and the service pay for the same event loop.

`python -m bench.floor openai BASE_URL TOKENS REPEAT` (a stock `ChatOpenAI`; `openai-service`
for the service's own, graphs/models.py; or `offline - TOKENS REPEAT`, or `graph` / `graph+ours`
for the chat graph through `astream_events` without / with our mapping) prints the
CPU seconds per token of each repetition as JSON, for a benchmark that wants the floor measured
in a fresh process. `python -m bench.floor first-token BASE_URL PROMPT STREAMS ROUNDS` prints,
for each round, the seconds from calling `astream` to its first text chunk of each of STREAMS
calls started at once (`first-token-graph`: the same for the chat graph through
`astream_events`). `python -m bench.floor graph-rss STREAMS DELAY` prints the peak RSS
growth per run, in KB, of STREAMS concurrent runs of the `report` graph with the offline model
(tokens DELAY seconds apart) through `astream_events` alone: no HTTP, no checkpointer, no
service. With `BENCH_FLOOR_GC=service` the process first takes the service's GC thresholds
(app/gc_tuning.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from langchain_core.language_models.chat_models import BaseChatModel

from app.engine.mapping import STREAM_KWARGS

T = TypeVar("T")


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def _close_http(llm: BaseChatModel) -> None:
    """Close the model's own HTTP client (see `openai_model`) before the event loop ends."""
    http = getattr(llm, "http_async_client", None)
    if http is not None:
        await http.aclose()
    elif (client := getattr(llm, "root_async_client", None)) is not None:
        await client.close()  # the service's model: its client is its own (see graphs/models.py)


def openai_model(base_url: str) -> BaseChatModel:
    """A stock `ChatOpenAI` with the service's settings (streaming, usage, no retries), with an
    HTTP client of its own that `cpu_per_token` closes before its event loop ends (the default
    one is shared and cached, and would outlive the loop with its connection open)."""
    import httpx
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        api_key="k",
        base_url=base_url,
        model="fake",
        streaming=True,
        stream_usage=True,
        max_retries=0,
        http_async_client=httpx.AsyncClient(),
    )


def service_model(base_url: str) -> BaseChatModel:
    """The service's own `ChatOpenAI` (graphs/models.py): chunks read as dicts, no per-chunk
    `wait_for`."""
    from graphs.models import build_chat_model

    return build_chat_model(api_key="k", base_url=base_url, model="fake", max_retries=0)


def offline_model() -> BaseChatModel:
    from graphs.offline import OfflineChatModel

    return OfflineChatModel(token_delay_s=0)


def cpu_per_token(
    llm: BaseChatModel, prompt: str, tokens: int, repeat: int, warmup: int = 1
) -> list[float]:
    """CPU seconds per delivered token for each of `repeat` calls that together yield at least
    `tokens` tokens (calls repeat until then: the offline model's answer is short)."""

    async def once() -> float:
        started = time.process_time()
        n = 0
        while n < tokens:
            async for chunk in llm.astream(prompt):
                n += bool(chunk.content)
        return (time.process_time() - started) / n

    async def main() -> list[float]:
        try:
            for _ in range(warmup):
                await once()
            return [await once() for _ in range(repeat)]
        finally:
            await _close_http(llm)

    return _run(main)


def _first_token_rounds(
    llm: BaseChatModel, one: Callable[[], Coroutine[Any, Any, float]], streams: int, rounds: int
) -> list[list[float]]:
    """For each round, `streams` concurrent calls of `one` (seconds to its first text), after a
    warm-up; `llm`'s HTTP client is closed before the event loop ends."""

    async def main() -> list[list[float]]:
        try:
            await asyncio.gather(*(one() for _ in range(min(streams, 5))))  # warm up
            return [
                list(await asyncio.gather(*(one() for _ in range(streams)))) for _ in range(rounds)
            ]
        finally:
            await _close_http(llm)

    return _run(main)


def first_token_s(llm: BaseChatModel, prompt: str, streams: int, rounds: int) -> list[list[float]]:
    """For each round, `streams` concurrent `astream` calls: seconds to each one's first text."""

    async def one() -> float:
        started = time.monotonic()
        first: float | None = None
        async for chunk in llm.astream(prompt):
            if first is None and chunk.content:
                first = time.monotonic() - started
        assert first is not None, "the model sent no text"
        return first

    return _first_token_rounds(llm, one, streams, rounds)


def _chat_graph(base_url: str) -> tuple[BaseChatModel, Any, Any]:
    """The `chat` graph with an in-memory checkpointer, the service's model, and its context."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graphs.chat import graph
    from graphs.models import ModelContext

    llm = service_model(base_url)
    return llm, graph.compile(checkpointer=InMemorySaver()), ModelContext(llm=llm)


def graph_first_token_s(base_url: str, prompt: str, streams: int, rounds: int) -> list[list[float]]:
    """As `first_token_s`, for the `chat` graph run through `astream_events` in this process
    (the service's filter and model, an in-memory checkpointer): what starting a LangGraph run
    adds to starting the model call, without HTTP, SSE or the service."""
    llm, compiled, context = _chat_graph(base_url)

    async def one() -> float:
        started = time.monotonic()
        config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
        first: float | None = None
        async for raw in compiled.astream_events(
            {"query": prompt}, config, version="v2", **STREAM_KWARGS, context=context
        ):
            stream = raw["event"] == "on_chat_model_stream"
            if first is None and stream and raw["data"]["chunk"].content:
                first = time.monotonic() - started
        assert first is not None, "the model sent no text"
        return first

    return _first_token_rounds(llm, one, streams, rounds)


def graph_cpu_per_token(base_url: str, tokens: int, repeat: int, ours: bool) -> list[float]:
    """CPU seconds per token of the `chat` graph run through `astream_events` in this process,
    with the service's filter, on the service's `ChatOpenAI`: what LangGraph and
    `astream_events` add to the model call. With `ours`, each raw event also goes through the
    service's `EventMapper` into a `MemoryEventLog` (payloads encoded): the service's run loop
    without HTTP and SSE."""
    from app.engine.mapping import EventMapper
    from app.log.memory import MemoryEventLog

    llm, compiled, context = _chat_graph(base_url)

    async def once() -> float:
        started = time.process_time()
        config: Any = {"configurable": {"thread_id": str(time.monotonic())}}
        mapper, log, n = EventMapper(), MemoryEventLog(), 0
        async for raw in compiled.astream_events(
            {"query": f"[[tokens={tokens}]]"},
            config,
            version="v2",
            **STREAM_KWARGS,
            context=context,
        ):
            if ours:
                for event_type, data in mapper.map(cast("dict[str, Any]", raw)):
                    n += event_type == "token"
                    log.append(event_type, data)
            elif raw["event"] == "on_chat_model_stream" and raw["data"]["chunk"].content:
                n += 1
        return (time.process_time() - started) / n

    async def main() -> list[float]:
        try:
            await once()
            return [await once() for _ in range(repeat)]
        finally:
            await _close_http(llm)

    return _run(main)


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


RunReport = Callable[..., Coroutine[Any, Any, None]]


def _report_runs(delay_s: float) -> tuple[RunReport, Any, Any]:
    """One `report` graph run through `astream_events` (compiled without a checkpointer), as
    the scale case's floors run it; `on_token` is called at each token. With a paced and an
    unpaced offline model context."""
    from graphs.models import ModelContext
    from graphs.offline import OfflineChatModel
    from graphs.report import graph

    compiled = graph.compile()

    async def one(context: Any, on_token: Callable[[], None] | None = None) -> None:
        async for event in compiled.astream_events(
            {"topic": "tides"}, version="v2", context=context, **STREAM_KWARGS
        ):
            if on_token is not None and event["event"] == "on_chat_model_stream":
                on_token()

    paced = ModelContext(llm=OfflineChatModel(token_delay_s=delay_s))
    return one, paced, ModelContext(llm=OfflineChatModel(token_delay_s=0))


def graph_rss_per_run_kb(streams: int, delay_s: float) -> float:
    """Peak RSS growth per run of `streams` concurrent `report` graph runs, sampled every
    0.25 s, after a warm-up of 5 unpaced runs: what LangGraph and LangChain hold per live run."""
    import gc

    one, paced, unpaced = _report_runs(delay_s)

    async def main() -> float:
        await asyncio.gather(*(one(unpaced) for _ in range(5)))
        gc.collect()
        before = peak = _rss_kb()
        runs = asyncio.gather(*(one(paced) for _ in range(streams)))
        while not runs.done():
            await asyncio.sleep(0.25)
            peak = max(peak, _rss_kb())
        await runs
        return (peak - before) / streams

    return _run(main)


def graph_gap_p99_ms(streams: int, delay_s: float) -> float:
    """p99 gap between consecutive tokens of `streams` concurrent `report` graph runs through
    `astream_events`, in-process, no HTTP: what one core gives that many runs by itself."""
    from bench.report import percentile

    one, paced, unpaced = _report_runs(delay_s)
    gaps: list[float] = []

    def gap_timer() -> Callable[[], None]:
        last: float | None = None

        def tick() -> None:
            nonlocal last
            now = time.monotonic()
            if last is not None:
                gaps.append((now - last) * 1000)
            last = now

        return tick

    async def main() -> float:
        await asyncio.gather(*(one(unpaced) for _ in range(5)))
        await asyncio.gather(*(one(paced, gap_timer()) for _ in range(streams)))
        return percentile(gaps, 99)

    return _run(main)


def main() -> None:
    if os.environ.get("BENCH_FLOOR_GC") == "service":
        from app.gc_tuning import tune_gc

        tune_gc()  # the service's GC thresholds, to show what they do for the floor itself
    if sys.argv[1] == "graph-rss":
        print(json.dumps(graph_rss_per_run_kb(int(sys.argv[2]), float(sys.argv[3]))))
        return
    if sys.argv[1] == "graph-gaps":
        print(json.dumps(graph_gap_p99_ms(int(sys.argv[2]), float(sys.argv[3]))))
        return
    if sys.argv[1] == "first-token":
        base_url, prompt, streams, rounds = sys.argv[2:6]
        print(json.dumps(first_token_s(openai_model(base_url), prompt, int(streams), int(rounds))))
        return
    if sys.argv[1] == "first-token-graph":
        base_url, prompt, streams, rounds = sys.argv[2:6]
        print(json.dumps(graph_first_token_s(base_url, prompt, int(streams), int(rounds))))
        return
    kind, base_url, tokens, repeat = sys.argv[1:5]
    if kind in ("graph", "graph+ours"):
        ours = kind == "graph+ours"
        print(json.dumps(graph_cpu_per_token(base_url, int(tokens), int(repeat), ours)))
        return
    models = {"openai": openai_model, "openai-service": service_model}
    llm = models[kind](base_url) if kind in models else offline_model()
    prompt = "Explain attention" if kind == "offline" else f"[[tokens={tokens}]]"
    print(json.dumps(cpu_per_token(llm, prompt, int(tokens), int(repeat))))


if __name__ == "__main__":
    main()
