"""Assistant routes of the LangGraph API: one assistant per compiled graph, its id the same as
the reference server gives that graph (`uuid5` of its name), so a client configured for one
finds the other's. Plus `GET /info` and `GET /ok`, which agent-chat-ui and Studio ask first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.engine.registry import GraphEntry
from app.protocols.deps import RegistryDep
from app.protocols.doc import errors
from app.protocols.langgraph import shapes
from app.protocols.langgraph.runs import assistant
from app.protocols.langgraph.schemas import AssistantSearch

router = APIRouter()


@router.post("/assistants/search", responses=errors(400, 413, 422))
async def search_assistants(body: AssistantSearch, registry: RegistryDep) -> list[dict[str, Any]]:
    found = [
        shapes.assistant(entry)
        for entry in registry.values()
        if body.graph_id is None or entry.name == body.graph_id
    ]
    wanted = body.metadata
    found = [a for a in found if all(a["metadata"].get(k) == v for k, v in wanted.items())]
    return found[body.offset : body.offset + body.limit]


@router.post("/assistants/count", responses=errors(400, 413, 422))
async def count_assistants(body: AssistantSearch, registry: RegistryDep) -> int:
    return sum(1 for e in registry.values() if body.graph_id in (None, e.name))


@router.get("/assistants/{assistant_id}", responses=errors(422))
async def get_assistant(assistant_id: str, registry: RegistryDep) -> dict[str, Any]:
    return shapes.assistant(_found(registry, assistant_id))


def _found(registry: RegistryDep, assistant_id: str) -> GraphEntry:
    return assistant(registry, assistant_id)


@router.get("/assistants/{assistant_id}/graph", responses=errors(422))
async def get_assistant_graph(
    assistant_id: str,
    registry: RegistryDep,
    xray: Annotated[bool | int, Query()] = False,
) -> dict[str, Any]:
    """The graph's nodes and edges as LangGraph draws them (`Graph.to_json()`)."""
    entry = _found(registry, assistant_id)
    drawn = entry.compiled.get_graph(xray=xray).to_json()
    return {
        "nodes": [
            {"id": n["id"], "type": n.get("type", "runnable"), "data": _node_data(n)}
            for n in drawn["nodes"]
        ],
        "edges": drawn["edges"],
    }


def _node_data(node: dict[str, Any]) -> Any:
    data = node.get("data")
    return data if isinstance(data, dict | str) else str(data)


@router.get("/assistants/{assistant_id}/schemas", responses=errors(422))
async def get_assistant_schemas(assistant_id: str, registry: RegistryDep) -> dict[str, Any]:
    """The graph's input and output schemas (its state's is not described apart from them);
    no config or context schema: the graphs' runtime context is the server's."""
    entry = _found(registry, assistant_id)
    return {
        "graph_id": entry.name,
        "input_schema": entry.input_schema,
        "output_schema": entry.output_schema,
        "state_schema": entry.output_schema,
        "config_schema": {},
        "context_schema": {},
    }


@router.get("/info", responses=errors())
async def info() -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "langgraph_api_compatible": "0.16",
        "flags": {"assistants": True, "crons": False, "langsmith": False},
    }


@router.get("/ok", responses=errors())
async def ok() -> dict[str, bool]:
    return {"ok": True}
