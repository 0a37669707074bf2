"""`faulty_tool`: a node that calls a tool which raises, to pin how tool failures end a run."""

from __future__ import annotations

from langchain_core.tools import ToolException, tool
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    query: str
    answer: str


@tool
def explode(query: str) -> str:
    """Always fails."""
    raise ToolException(f"explode refused {query!r}")


async def call_tool(state: State) -> dict[str, str]:
    return {"answer": await explode.ainvoke({"query": state["query"]})}


graph = StateGraph(State)
graph.add_node("call_tool", call_tool)
graph.add_edge(START, "call_tool")
graph.add_edge("call_tool", END)
