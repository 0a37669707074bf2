"""`sync_chat`: the seed document's node, verbatim in spirit: a *synchronous* `llm.invoke`.

LangGraph runs it in a worker thread; the service must still stream its tokens and stop its
model call on cancel.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    answer: str


def llm(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    response = runtime.context.llm.invoke(state["query"])
    return {"answer": response.text}


graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("llm", llm)
graph.add_edge(START, "llm")
graph.add_edge("llm", END)
