"""`GET /threads/{thread_id}`: a thread's current state, read from the checkpointer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.engine.jsonable import to_jsonable
from app.protocols.deps import ManagerDep, TenantDep
from app.protocols.doc import errors

router = APIRouter()


@router.get("/threads/{thread_id}", responses=errors(404))
async def get_thread(thread_id: str, manager: ManagerDep, tenant: TenantDep) -> dict[str, Any]:
    """Values, next nodes and pending interrupts at the thread's newest checkpoint.

    The thread's graph is the graph of its most recent run. A thread whose runs were all rolled
    back is still known: it has no checkpoint, so its values are empty. Thread ids are per
    tenant: another tenant's `thread_id` is another thread.
    """
    graph, state = await manager.thread_state(thread_id, tenant=tenant)
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
        "active_run_id": await manager.active_run_on(thread_id, tenant=tenant),
    }
