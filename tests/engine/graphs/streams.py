"""`streams`: a node that streams a model reply (the offline model's, token by token).

Cancelling the run stops the reply at its next token (the run's `RunGuard` raises `RunStopped`
from the token callback), so the node fails because the run was cancelled.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from tests.engine.graphs._controls import Controls


class State(TypedDict, total=False):
    query: str
    answer: str


async def answer(state: State, runtime: Runtime[Controls]) -> State:
    runtime.context.entered.set()
    return {"answer": (await runtime.context.llm.ainvoke(state["query"])).text}


graph = StateGraph(State, context_schema=Controls)
graph.add_node("answer", answer)
graph.add_edge(START, "answer")
graph.add_edge("answer", END)
