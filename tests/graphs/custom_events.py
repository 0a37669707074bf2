"""`custom_events`: the two ways a node reports progress of its own, plus a model call.

- `progress` (async) writes twice to LangGraph's stream writer (`get_stream_writer()`, stream
  mode `custom`) and dispatches a LangChain custom event (`adispatch_custom_event`);
- `tally` (sync, so LangGraph runs it in a worker thread) dispatches one with the sync
  `dispatch_custom_event`.
"""

from __future__ import annotations

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graphs.models import ModelContext


class State(TypedDict, total=False):
    query: str
    answer: str
    words: int


async def progress(state: State, runtime: Runtime[ModelContext]) -> dict[str, str]:
    write = get_stream_writer()
    write({"stage": "thinking", "done": 0})
    await adispatch_custom_event("progress", {"stage": "calling the model", "done": 1})
    response = await runtime.context.llm.ainvoke(state["query"])
    write({"stage": "answered", "done": 2})
    return {"answer": response.text}


def tally(state: State) -> dict[str, int]:
    words = len(state.get("answer", "").split())
    dispatch_custom_event("tally", {"words": words})
    return {"words": words}


graph = StateGraph(State, context_schema=ModelContext)
graph.add_node("progress", progress)
graph.add_node("tally", tally)
graph.add_edge(START, "progress")
graph.add_edge("progress", "tally")
graph.add_edge("tally", END)
