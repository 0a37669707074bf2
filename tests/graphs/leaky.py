"""`leaky`: a node that fails with an error whose text names a URL with a key, or a file path
(`{"kind": "url" | "path"}`): what a client is told must carry neither."""

from __future__ import annotations

import httpx
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

SECRET_URL = "http://10.9.8.7:8443/v1/internal?api_key=sk-leakedsecret123"
SECRET_PATH = "/srv/secrets/service-account.json"


class State(TypedDict, total=False):
    kind: str
    done: bool


def leak(state: State) -> State:
    if state.get("kind") == "path":
        with open(SECRET_PATH) as f:  # FileNotFoundError names the path
            f.read()
    request = httpx.Request("GET", SECRET_URL)
    httpx.Response(502, request=request).raise_for_status()  # HTTPStatusError names the URL
    return {"done": True}


graph = StateGraph(State)
graph.add_node("leak", leak)
graph.add_edge(START, "leak")
graph.add_edge("leak", END)
