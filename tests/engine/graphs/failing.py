"""`failing`: a node that raises `ValueError("boom")` (no model call)."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    query: str
    answer: str


async def explode(state: State) -> State:
    raise ValueError("boom")


graph = StateGraph(State)
graph.add_node("explode", explode)
graph.add_edge(START, "explode")
graph.add_edge("explode", END)
