"""`ask_twice`: two branches that pause at once; `ask` calls `interrupt()` twice in one node.

From START, in one step: `ask` asks "first?" then "second?"; `write` asks "prompt?" and then
asks the model with that answer as its prompt (so a test steers how long the resumed run
lasts). Resume both with a map of interrupt ids to values: `ask` then reaches "second?", whose
interrupt write replaces the first's under the same key, while `write` still streams. A
rollback of that run must bring "first?" back.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    first: str
    second: str
    answer: str


def ask(state: State) -> State:
    first = str(interrupt("first?"))
    return {"first": first, "second": str(interrupt("second?"))}


async def write(state: State, runtime: Runtime[ModelContext]) -> State:
    prompt = str(interrupt("prompt?"))
    return {"answer": (await runtime.context.llm.ainvoke(prompt)).text}


graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("ask", ask)
graph.add_node("write", write)
graph.add_edge(START, "ask")
graph.add_edge(START, "write")
graph.add_edge("ask", END)
graph.add_edge("write", END)
