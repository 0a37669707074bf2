"""The body of a run's task: stream the graph, map each raw event, append what it maps to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

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
) -> None:
    mapper, append, record = run.mapper, run.log.append, run.record
    # It is an async generator (it has aclose); the declared type is the looser AsyncIterator.
    stream: AsyncGenerator[dict[str, Any], None] = graph.compiled.astream_events(  # type: ignore[assignment]
        payload, config, version="v2", context=context, **STREAM_KWARGS
    )
    async with asyncio.timeout(timeout_s), aclosing(stream):
        async for raw in stream:
            for event_type, data in mapper.map(raw):
                if event_type == "token" and record.first_token_ms is None:
                    record.first_token_ms = record.since_start_ms()
                append(event_type, data)
