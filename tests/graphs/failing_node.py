"""`failing_node`: a node that calls the model, then raises `ValueError("boom")`."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    answer: str


async def fail(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    await runtime.context.llm.ainvoke(state["query"])
    raise ValueError("boom")


graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("fail", fail)
graph.add_edge(START, "fail")
graph.add_edge("fail", END)
