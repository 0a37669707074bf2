"""The LangGraph API's objects (Assistant, Thread, Run, ThreadState) from ours, and the one
mapping of our run statuses to LangGraph's (LANGGRAPH_API.md).

    our run                                  LangGraph run     its thread, when it was the last
    queued behind the thread's run           pending           busy
    running                                  running           busy
    completed                                success           idle
    paused (interrupt)                       interrupted       interrupted
    cancelled (a cancel, a disconnect, ...)  interrupted       interrupted (the reference's)
    cancelled with a rollback                interrupted       idle (the thread is as before)
    failed, reason timeout                   timeout           error
    failed (any other reason)                error             error
"""

from __future__ import annotations

import uuid
from typing import Any

from app.engine.jsonable import to_jsonable
from app.engine.record import RunRecord, RunStatus, ThreadRecord
from app.engine.registry import GraphEntry

NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
"""The reference server's namespace for a graph's assistant id: the same graph has the same
assistant id here and there."""
EPOCH = "1970-01-01T00:00:00+00:00"
ROLLED_BACK = "rollback"  # the reason of a run cancelled with a rollback


def assistant_id(graph: str) -> str:
    return str(uuid.uuid5(NAMESPACE_GRAPH, graph))


def run_status(record: RunRecord) -> str:
    status = record.status
    if status is RunStatus.RUNNING:
        return "running"
    if status is RunStatus.COMPLETED:
        return "success"
    if status in (RunStatus.PAUSED, RunStatus.CANCELLED):
        return "interrupted"
    return "timeout" if record.reason == "timeout" else "error"


def thread_status(last: RunRecord | None, busy: bool) -> str:
    """A thread's status from its newest run (None: it never ran) and whether one is live."""
    if busy:
        return "busy"
    if last is None:
        return "idle"
    status = last.status
    if status is RunStatus.FAILED:
        return "error"
    if status is RunStatus.PAUSED:
        return "interrupted"
    if status is RunStatus.CANCELLED and last.reason != ROLLED_BACK:
        return "interrupted"
    return "idle"


def assistant(entry: GraphEntry, created_at: str = EPOCH) -> dict[str, Any]:
    return {
        "assistant_id": assistant_id(entry.name),
        "graph_id": entry.name,
        "name": entry.name,
        "description": entry.description,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": created_at,
        "updated_at": created_at,
    }


def run(
    record: RunRecord, *, status: str | None = None, strategy: str | None = None
) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "thread_id": record.thread_id,
        "assistant_id": assistant_id(record.graph),
        "status": status or run_status(record),
        "metadata": {},
        "multitask_strategy": strategy,
        "kwargs": {},
        "created_at": record.created_at,
        "updated_at": record.ended_at or record.created_at,
    }


def thread(
    record: ThreadRecord,
    *,
    status: str,
    values: Any = None,
    interrupts: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    return {
        "thread_id": record.thread_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": record.metadata,
        "status": status,
        "values": values,
        "interrupts": interrupts or {},
        "config": {},
    }


def _checkpoint(thread_id: str, config: Any) -> dict[str, Any] | None:
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("checkpoint_id"):
        return None
    return {
        "thread_id": thread_id,
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable["checkpoint_id"],
    }


def interrupts_of(snapshot: Any) -> list[dict[str, Any]]:
    return [{"id": i.id, "value": to_jsonable(i.value)} for i in snapshot.interrupts]


def state(thread_id: str, snapshot: Any) -> dict[str, Any]:
    """A LangGraph `StateSnapshot` as the API's ThreadState; the checkpoints name the client's
    thread id, never the tenant-qualified one the checkpointer keys it by."""
    tasks = [
        {
            "id": task.id,
            "name": task.name,
            "path": to_jsonable(list(task.path)),
            "error": None if task.error is None else str(task.error),
            "interrupts": [{"id": i.id, "value": to_jsonable(i.value)} for i in task.interrupts],
            "checkpoint": None,
            "state": None,
            "result": to_jsonable(task.result),
        }
        for task in snapshot.tasks
    ]
    metadata = dict(snapshot.metadata or {})
    return {
        "values": to_jsonable(snapshot.values),
        "next": list(snapshot.next),
        "tasks": tasks,
        "interrupts": interrupts_of(snapshot),
        "checkpoint": _checkpoint(thread_id, snapshot.config),
        "parent_checkpoint": _checkpoint(thread_id, snapshot.parent_config),
        "metadata": to_jsonable(metadata),
        "created_at": snapshot.created_at,
    }


EMPTY_STATE: dict[str, Any] = {
    "values": {},
    "next": [],
    "tasks": [],
    "interrupts": [],
    "checkpoint": None,
    "parent_checkpoint": None,
    "metadata": {},
    "created_at": None,
}
