"""`subgraph_called`: a node (`caller`) that runs a compiled subgraph with its own `ainvoke`.

The subgraph's node `inner` calls the model. The caller passes its runtime context on
explicitly (`context=runtime.context`), as a node calling another graph should.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    answer: str


async def inner(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    response = await runtime.context.llm.ainvoke(state["query"])
    return {"answer": response.text}


_inner = StateGraph(State, context_schema=ModelContext)
_inner.add_node("inner", inner)
_inner.add_edge(START, "inner")
_inner.add_edge("inner", END)
inner_graph = _inner.compile(name="inner_graph")


async def caller(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    result = await inner_graph.ainvoke({"query": state["query"]}, context=runtime.context)
    return {"answer": result["answer"]}


graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("caller", caller)
graph.add_edge(START, "caller")
graph.add_edge("caller", END)
