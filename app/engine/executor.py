"""The body of a run's task: stream the graph, map each raw event, append what it maps to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from app.engine.limits import RunTooLarge
from app.engine.mapping import STREAM_KWARGS

if TYPE_CHECKING:
    from app.engine.registry import GraphEntry
    from app.engine.run import Run


async def execute(
    run: Run,
    graph: GraphEntry,
    payload: Any,
    config: RunnableConfig,
    context: Any,
    timeout_s: float,
    max_log_bytes: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Stream the graph into the run's log; `RunTooLarge` (the run ends failed,
    `run_too_large`) once its events' payloads pass `max_log_bytes`. `extra`: the request's own
    `astream_events` arguments (`interrupt_before`/`interrupt_after`)."""
    mapper, append, record = run.mapper, run.log.append, run.record
    size = 0
    # It is an async generator (it has aclose); the declared type is the looser AsyncIterator.
    stream: AsyncGenerator[dict[str, Any], None] = graph.compiled.astream_events(  # type: ignore[assignment]
        payload, config, version="v2", context=context, **STREAM_KWARGS, **(extra or {})
    )
    async with asyncio.timeout(timeout_s), aclosing(stream):
        async for raw in stream:
            for event_type, data in mapper.map(raw):
                if event_type == "token" and record.first_token_ms is None:
                    record.first_token_ms = record.since_start_ms()
                size += len(append(event_type, data).payload)
                if size > max_log_bytes:
                    raise RunTooLarge(max_log_bytes)
