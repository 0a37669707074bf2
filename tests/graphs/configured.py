"""`configured`: reads the `greeting` key of its config's `configurable` (declared in
`configurable_keys`, so a client may set it) and returns what its config carried."""

from __future__ import annotations

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

configurable_keys = ("greeting",)


class State(TypedDict, total=False):
    query: str
    answer: str
    tags: list[str]
    run_name: str
    metadata_note: str


def echo(state: State, config: RunnableConfig) -> State:
    configurable = config.get("configurable") or {}
    metadata = config.get("metadata") or {}
    return {
        "answer": str(configurable.get("greeting", "none")),
        "tags": [t for t in config.get("tags") or [] if not t.startswith("graph:")],
        "run_name": str(metadata.get("run_name_seen", config.get("run_name", ""))),
        "metadata_note": str(metadata.get("note", "")),
    }


graph = StateGraph(State)
graph.add_node("echo", echo)
graph.add_edge(START, "echo")
graph.add_edge("echo", END)
