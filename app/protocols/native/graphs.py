"""`GET /graphs`, `GET /graphs/{graph}`: what can be run, with its schemas and shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.protocols.deps import RegistryDep
from app.protocols.doc import errors

router = APIRouter()


@router.get("/graphs", responses=errors())
async def list_graphs(registry: RegistryDep, request: Request) -> dict[str, Any]:
    return {
        "model": request.app.state.model_info,
        "graphs": [entry.summary() for entry in registry.values()],
    }


@router.get("/graphs/{graph}", responses=errors(404))
async def get_graph(graph: str, registry: RegistryDep, request: Request) -> dict[str, Any]:
    entry = registry.require(graph)
    return {
        **entry.summary(),
        "model": request.app.state.model_info,
        "nodes": entry.nodes,
        "all_nodes": sorted(entry.all_nodes),
        "mermaid": entry.mermaid,
    }
