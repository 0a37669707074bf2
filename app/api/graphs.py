"""`GET /graphs`, `GET /graphs/{graph}`: what can be run, with its schemas and shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.deps import RegistryDep
from graphs.models import describe_model

router = APIRouter()


@router.get("/graphs")
async def list_graphs(registry: RegistryDep, request: Request) -> dict[str, Any]:
    return {
        "model": describe_model(request.app.state.llm),
        "graphs": [entry.summary() for entry in registry.values()],
    }


@router.get("/graphs/{graph}")
async def get_graph(graph: str, registry: RegistryDep, request: Request) -> dict[str, Any]:
    entry = registry.require(graph)
    return {
        **entry.summary(),
        "model": describe_model(request.app.state.llm),
        "nodes": entry.nodes,
        "mermaid": entry.mermaid,
    }
