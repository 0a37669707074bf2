"""`subgraph_embedded`: a compiled subgraph added as a node (`outer`) of the outer graph.

Its node `inner` calls the model from `runtime.context.llm`: LangGraph hands the outer run's
context to the subgraph (the subgraph's runtime is merged into its parent's), so nothing has to
pass it on. It also writes one `custom` chunk. Raw events from inside carry the subgraph's
namespace (`outer:<task id>`).
"""

from __future__ import annotations

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    answer: str


async def inner(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    get_stream_writer()({"from": "inner"})  # a `custom` chunk from inside the subgraph
    response = await runtime.context.llm.ainvoke(state["query"])
    return {"answer": response.text}


_inner = StateGraph(State, context_schema=ModelContext)
_inner.add_node("inner", inner)
_inner.add_edge(START, "inner")
_inner.add_edge("inner", END)

graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("outer", _inner.compile(name="inner_graph"))
graph.add_edge(START, "outer")
graph.add_edge("outer", END)
