"""`burst`: a node that writes `Controls.burst` custom events, paced or as fast as it can (what
the event-id reservation is measured against: app/engine/ids.py)."""

from __future__ import annotations

import asyncio

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from tests.engine.graphs._controls import Controls


class State(TypedDict, total=False):
    query: str


async def write(state: State, runtime: Runtime[Controls]) -> State:
    writer = get_stream_writer()
    for i in range(runtime.context.burst):
        writer(i)
        if i % 100 == 99:
            await asyncio.sleep(runtime.context.burst_pause_s)
    return {}


graph = StateGraph(State, context_schema=Controls)
graph.add_node("write", write)
graph.add_edge(START, "write")
graph.add_edge("write", END)
