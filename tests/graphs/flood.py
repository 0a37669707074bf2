"""`flood`: writes `chunks` custom events of `size` bytes each (a run whose log grows large)."""

from __future__ import annotations

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    chunks: int
    size: int
    done: bool


async def flood(state: State) -> State:
    write = get_stream_writer()
    text = "x" * state.get("size", 1024)
    for _ in range(state.get("chunks", 1)):
        write({"text": text})
    return {"done": True}


graph = StateGraph(State)
graph.add_node("flood", flood)
graph.add_edge(START, "flood")
graph.add_edge("flood", END)
