"""Thread routes of the LangGraph API: create, get, update metadata, search, delete, state and
history. A thread is the engine's (app/engine/threads.py): a thread the native API ran is found
here too, and the other way round."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from app.engine.manager import RunManager
from app.engine.record import ThreadRecord
from app.protocols.deps import ManagerDep, TenantDep
from app.protocols.doc import errors
from app.protocols.langgraph import shapes
from app.protocols.langgraph.schemas import Body, HistoryBody, ThreadCreate, ThreadSearch

router = APIRouter()


class ThreadPatch(Body):
    metadata: dict[str, Any] = {}


async def _shown(manager: RunManager, record: ThreadRecord) -> dict[str, Any]:
    tenant, thread_id = record.tenant, record.thread_id
    threads = manager.threads
    busy = await threads.busy(tenant, thread_id) is not None
    status = shapes.thread_status(await threads.last_run(tenant, thread_id), busy)
    snapshot = await threads.snapshot(tenant, thread_id)
    values = None
    interrupts: dict[str, list[dict[str, Any]]] = {}
    if snapshot is not None:
        state = shapes.state(thread_id, snapshot)
        values = state["values"]
        for task in state["tasks"]:
            if task["interrupts"]:
                interrupts[task["id"]] = task["interrupts"]
    return shapes.thread(record, status=status, values=values, interrupts=interrupts)


@router.post("/threads", responses=errors(400, 413, 422, 409, 503))
async def create_thread(
    body: ThreadCreate, tenant: TenantDep, manager: ManagerDep
) -> dict[str, Any]:
    record = await manager.threads.create(
        tenant, body.thread_id, body.metadata, if_exists=body.if_exists
    )
    return await _shown(manager, record)


@router.get("/threads/{thread_id}", responses=errors(404, 422, 503))
async def get_thread(thread_id: str, tenant: TenantDep, manager: ManagerDep) -> dict[str, Any]:
    return await _shown(manager, await manager.threads.require(tenant, thread_id))


@router.patch("/threads/{thread_id}", responses=errors(400, 413, 422, 404, 409, 503))
async def update_thread(
    thread_id: str, body: ThreadPatch, tenant: TenantDep, manager: ManagerDep
) -> dict[str, Any]:
    threads = manager.threads
    await threads.require(tenant, thread_id)
    await threads.ensure(tenant, thread_id)  # a thread only the native API ran gets its record
    await threads.touch(tenant, thread_id, body.metadata)
    return await _shown(manager, await threads.require(tenant, thread_id))


@router.delete("/threads/{thread_id}", status_code=204, responses=errors(404, 422, 503))
async def delete_thread(thread_id: str, tenant: TenantDep, manager: ManagerDep) -> Response:
    await manager.threads.delete(tenant, thread_id)
    return Response(status_code=204)


@router.post("/threads/search", responses=errors(400, 413, 422, 503))
async def search_threads(
    body: ThreadSearch, tenant: TenantDep, manager: ManagerDep
) -> list[dict[str, Any]]:
    """Threads with a record (made by `POST /threads` or a run of this API), newest first;
    `status` filters what was found (so a page may hold fewer than `limit`)."""
    records = await manager.threads.search(tenant, body.metadata, body.limit, body.offset)
    shown = [await _shown(manager, record) for record in records]
    if body.status is not None:
        shown = [t for t in shown if t["status"] == body.status]
    return shown


@router.get("/threads/{thread_id}/state", responses=errors(404, 422, 503))
async def get_state(
    thread_id: str,
    tenant: TenantDep,
    manager: ManagerDep,
    subgraphs: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    threads = manager.threads
    await threads.require(tenant, thread_id)
    snapshot = await threads.snapshot(tenant, thread_id)
    if snapshot is None:
        return dict(shapes.EMPTY_STATE)
    return shapes.state(thread_id, snapshot)


async def _history(
    manager: RunManager, tenant: str, thread_id: str, limit: int, before: Any
) -> list[dict[str, Any]]:
    threads = manager.threads
    await threads.require(tenant, thread_id)
    if isinstance(before, dict):
        before = (before.get("configurable") or before).get("checkpoint_id")
    snapshots = await threads.history(tenant, thread_id, limit, before)
    return [shapes.state(thread_id, s) for s in snapshots]


@router.post("/threads/{thread_id}/history", responses=errors(400, 413, 422, 404, 503))
async def post_history(
    thread_id: str, body: HistoryBody, tenant: TenantDep, manager: ManagerDep
) -> list[dict[str, Any]]:
    return await _history(manager, tenant, thread_id, body.limit, body.before)


@router.get("/threads/{thread_id}/history", responses=errors(404, 422, 503))
async def get_history(
    thread_id: str,
    tenant: TenantDep,
    manager: ManagerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    before: Annotated[str | None, Query()] = None,
) -> list[dict[str, Any]]:
    return await _history(manager, tenant, thread_id, limit, before)
