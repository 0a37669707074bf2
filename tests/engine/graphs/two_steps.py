"""`two_steps`: `first` appends to the state (a checkpoint is written after it), `second` waits
until the test releases it, then appends too. Cancelling while `second` waits leaves a thread
with a checkpoint this run wrote: what a rollback must remove."""

from __future__ import annotations

import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from tests.engine.graphs._controls import Controls


class State(TypedDict, total=False):
    steps: Annotated[list[str], operator.add]


async def first(state: State) -> State:
    return {"steps": ["first"]}


async def second(state: State, runtime: Runtime[Controls]) -> State:
    runtime.context.entered.set()
    await runtime.context.release.wait()
    return {"steps": ["second"]}


graph = StateGraph(State, context_schema=Controls)
graph.add_node("first", first)
graph.add_node("second", second)
graph.add_edge(START, "first")
graph.add_edge("first", "second")
graph.add_edge("second", END)
