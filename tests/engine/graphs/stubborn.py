"""`stubborn`: a node that ignores cancellation on purpose, until the test releases it.

It catches every `CancelledError` and waits again, as a badly written node (or a library that
swallows the cancel) would, so a cancel has to be given up on after `cancel_confirm_s`.
"""

from __future__ import annotations

import asyncio

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from tests.engine.graphs._controls import Controls


class State(TypedDict, total=False):
    query: str
    answer: str


async def hold(state: State, runtime: Runtime[Controls]) -> dict[str, str]:
    controls = runtime.context
    controls.entered.set()
    while not controls.release.is_set():
        try:
            await controls.release.wait()
        except asyncio.CancelledError:
            controls.cancels_ignored += 1  # ignored on purpose: the behaviour under test
    controls.finished.set()
    return {"answer": "released"}


graph = StateGraph(State, context_schema=Controls)
graph.add_node("hold", hold)
graph.add_edge(START, "hold")
graph.add_edge("hold", END)
