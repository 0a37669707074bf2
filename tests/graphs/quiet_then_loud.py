"""`quiet_then_loud`: a model call tagged `nostream` (LangGraph's convention: its tokens are not
streamed) followed by an ordinary one, to pin that the first streams no tokens for anyone."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    plan: str
    answer: str


async def quiet(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    llm = runtime.context.llm.with_config(tags=["nostream"])
    return {"plan": (await llm.ainvoke(state["query"])).text}


async def loud(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    return {"answer": (await runtime.context.llm.ainvoke(state["query"])).text}


graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("quiet", quiet)
graph.add_node("loud", loud)
graph.add_edge(START, "quiet")
graph.add_edge("quiet", "loud")
graph.add_edge("loud", END)
