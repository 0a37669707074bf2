"""`GET /threads/{thread_id}`: a thread's current state, read from the checkpointer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from langchain_core.runnables import RunnableConfig

from app.engine.errors import NotFound
from app.engine.jsonable import to_jsonable
from app.protocols.native.deps import ManagerDep, RegistryDep
from app.protocols.native.openapi import errors

router = APIRouter()


@router.get("/threads/{thread_id}", responses=errors(404))
async def get_thread(thread_id: str, registry: RegistryDep, manager: ManagerDep) -> dict[str, Any]:
    """Values, next nodes and pending interrupts at the thread's newest checkpoint.

    The thread's graph is the graph of its most recent run. A thread whose runs were all rolled
    back is still known: it has no checkpoint, so its values are empty.
    """
    graph = await manager.thread_graph(thread_id)
    if graph is None or graph not in registry:
        raise NotFound(f"no thread with id {thread_id!r}", code="thread_not_found")
    config = RunnableConfig(configurable={"thread_id": thread_id})
    state = await registry[graph].compiled.aget_state(config)
    configurable = (state.config or {}).get("configurable", {})
    parent = (state.parent_config or {}).get("configurable", {})
    return {
        "thread_id": thread_id,
        "graph": graph,
        "values": to_jsonable(state.values),
        "next": list(state.next),
        "interrupts": [{"id": i.id, "value": to_jsonable(i.value)} for i in state.interrupts],
        "checkpoint_id": configurable.get("checkpoint_id"),
        "parent_checkpoint_id": parent.get("checkpoint_id"),
        "step": (state.metadata or {}).get("step"),
        "created_at": state.created_at,
        "active_run_id": manager.active_run_on(thread_id),
    }
