"""`paused_subgraph`: pauses inside a compiled subgraph (`sub`), after its first node ran.

Inside `sub`: `prepare` notes the query, `ask` pauses with `interrupt()`, `write` asks the model
with the resume value as its prompt (so a test steers the resumed run's speed). While paused,
the newest checkpoints are the subgraph's (namespace `sub:<task id>`): the root writes none when
a subgraph pauses. A rollback of the resumed run must keep them, or the next resume would run
`prepare` again.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    prepared: str
    prompt: str
    answer: str


def prepare(state: State) -> State:
    return {"prepared": f"prepared: {state['query']}"}


def ask(state: State) -> State:
    return {"prompt": str(interrupt({"question": "prompt?", "prepared": state["prepared"]}))}


async def write(state: State, runtime: Runtime[ModelContext]) -> State:
    return {"answer": (await runtime.context.llm.ainvoke(state["prompt"])).text}


_sub = StateGraph(State, context_schema=ModelContext)
_sub.add_node("prepare", prepare)
_sub.add_node("ask", ask)
_sub.add_node("write", write)
_sub.add_edge(START, "prepare")
_sub.add_edge("prepare", "ask")
_sub.add_edge("ask", "write")
_sub.add_edge("write", END)

graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("sub", _sub.compile(name="paused_sub"))
graph.add_edge(START, "sub")
graph.add_edge("sub", END)
